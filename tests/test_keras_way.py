"""A user's own Keras model and data, the Keras way: fit forms, compile honoured, saving, export.

The references are Keras itself (the same network trained by keras.Model.fit from the same
weights and batches), numpy recomputations of the logged values, and sklearn's stratified split.
"""

import numpy as np
import pytest
import keras
import tensorflow as tf

import tfaux
from tfaux import keras_data

N, DIM = 160, 6


def arrays(n=N, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, DIM)).astype("float32")
    main = (x[:, 0] + 0.5 * x[:, 1] > 0).astype("int64") + (x[:, 2] > 1).astype("int64")  # 3 classes
    side = (x[:, 0] > 0).astype("float32")
    return x, {"main": main, "side": side}


def network(seed=0):
    """A functional two-output model: softmax classes and a sigmoid side task on one trunk."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((DIM,), name="features")
    trunk = keras.layers.Dense(8, activation="tanh", name="trunk")(inp)
    main = keras.layers.Dense(3, activation="softmax", name="main")(trunk)
    side = keras.layers.Dense(1, activation="sigmoid", name="side")(trunk)
    return keras.Model(inp, {"main": main, "side": side})


def twin(net):
    """A copy of `net` with the same weights (from_keras shares the layers it is given)."""
    copy = keras.models.clone_model(net)
    copy.set_weights(net.get_weights())
    return copy


def tfaux_model(method="equal", seed=0, **kwargs):
    net = network(seed)
    return net, tfaux.AuxiliaryModel.from_keras(twin(net), primary="main", method=method, **kwargs)


def assert_same_weights(a, b, atol=1e-5):
    for u, v in zip(a, b):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), atol=atol)


# ---------------------------------------------------------------- from_keras
def test_from_keras_splits_trunk_and_heads_and_infers_kinds():
    net, model = tfaux_model()
    kinds = {t.name: (t.role, t.kind, t.from_logits) for t in model.tasks}
    assert kinds == {"main": ("primary", "classification", False), "side": ("auxiliary", "binary", False)}
    x, _ = arrays(8)
    out = model.predict(x, verbose=0)
    ref = net(x)
    np.testing.assert_allclose(out["main"], ref["main"], atol=1e-6)
    np.testing.assert_allclose(out["side"], ref["side"], atol=1e-6)
    trunk = keras.Model(net.input, net.get_layer("trunk").output)(x)
    np.testing.assert_allclose(model.encoder(x), trunk, atol=1e-6)


def test_from_keras_refuses_a_model_without_shared_trunk():
    inp = keras.Input((DIM,))
    net = keras.Model(inp, {"a": keras.layers.Dense(2, activation="softmax")(inp),
                            "b": keras.layers.Dense(1)(inp)})
    with pytest.raises(ValueError, match="share no layer"):
        tfaux.AuxiliaryModel.from_keras(net, primary="a")


# ---------------------------------------------------------------- fit forms against Keras
def test_stl_on_arrays_with_class_weight_trains_as_keras_does():
    """STL on (x, {task: y}) with class_weight = the single-output Keras model trained by Keras."""
    x, y = arrays()
    net, model = tfaux_model("stl")
    reference = twin(net)
    single = keras.Model(reference.input, reference.output["main"])
    single.compile(optimizer=keras.optimizers.SGD(0.2), loss="sparse_categorical_crossentropy")
    model.compile(optimizer=keras.optimizers.SGD(0.2))
    weights = {0: 3.0, 2: 0.5}
    single.fit(x, y["main"], batch_size=32, epochs=2, shuffle=False, class_weight=weights, verbose=0)
    model.fit(x, y, batch_size=32, epochs=2, shuffle=False, class_weight=weights, verbose=0)
    assert_same_weights(model.encoder.weights + model.heads[0].weights, single.weights)
    unweighted = tfaux_model("stl")[1]
    unweighted.compile(optimizer=keras.optimizers.SGD(0.2))
    unweighted.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0)
    assert not np.allclose(unweighted.encoder.weights[0], model.encoder.weights[0], atol=1e-4)


def test_equal_with_loss_weights_trains_as_keras_multi_output():
    x, y = arrays()
    net, model = tfaux_model("equal")
    reference = twin(net)
    loss_weights = {"main": 1.0, "side": 0.3}
    reference.compile(optimizer=keras.optimizers.SGD(0.2), loss_weights=loss_weights,
                      loss={"main": "sparse_categorical_crossentropy", "side": "binary_crossentropy"})
    model.compile(optimizer=keras.optimizers.SGD(0.2), loss_weights=loss_weights)
    reference.fit(x, {"main": y["main"], "side": y["side"][:, None]}, batch_size=32, epochs=2, shuffle=False,
                  verbose=0)
    model.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0)
    assert_same_weights(model.encoder.weights + model.heads[0].weights + model.heads[1].weights,
                        reference.weights)


def test_methods_that_learn_task_weights_refuse_loss_weights():
    _, model = tfaux_model("gradnorm")
    with pytest.raises(ValueError, match="loss_weights"):
        model.compile(optimizer="sgd", loss_weights={"main": 1.0, "side": 2.0})


def test_tf_data_tuples_train_like_arrays():
    """A stream of (x, y) and of (x, y, sample_weight) batches = the same rows as arrays."""
    x, y = arrays()
    w = np.linspace(0.5, 1.5, N).astype("float32")
    runs = []
    for form in ("arrays", "pairs", "triples"):
        model = tfaux_model("equal")[1]
        model.compile(optimizer=keras.optimizers.SGD(0.2))
        if form == "arrays":
            model.fit(x, y, sample_weight=w, batch_size=32, shuffle=False, verbose=0)
        elif form == "pairs":
            model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(32), verbose=0)
        else:
            model.fit(tf.data.Dataset.from_tensor_slices((x, y, w)).batch(32), verbose=0)
        runs.append(model.encoder.get_weights() + model.heads[0].get_weights())
    assert_same_weights(runs[0], runs[2])
    assert not np.allclose(runs[0][0], runs[1][0], atol=1e-5)  # the sample weights mattered


def test_validation_split_takes_the_last_rows_as_keras_does():
    x, y = arrays()
    model = tfaux_model("equal")[1]
    model.compile(optimizer="sgd", metrics={"main": ["accuracy"]})
    history = model.fit(x, y, validation_split=0.25, epochs=1, verbose=0)
    last = slice(int(N * 0.75), None)
    expected = model.evaluate(x[last], {k: v[last] for k, v in y.items()}, verbose=0, return_dict=True)
    assert history.history["val_main_accuracy"][-1] == pytest.approx(expected["main_accuracy"], abs=1e-6)
    predicted = np.argmax(model.predict(x[last], verbose=0)["main"], 1)
    assert expected["main_accuracy"] == pytest.approx(np.mean(predicted == y["main"][last]), abs=1e-6)


# ---------------------------------------------------------------- missing labels, weights
def test_missing_labels_become_masks_and_sample_weights_weight_the_loss():
    x, y = arrays(40)
    main = y["main"].copy()
    main[::4] = -1
    side = y["side"].copy()
    side[1::3] = np.nan
    w = np.linspace(0.5, 2.0, 40).astype("float32")
    model = tfaux_model("equal")[1]
    model.compile(optimizer="sgd", metrics={"side": ["accuracy"]})
    logs = model.evaluate(x, {"main": main, "side": side}, sample_weight={"main": w}, verbose=0, return_dict=True)
    out = model.predict(x, verbose=0)
    seen = main >= 0
    ce = -np.log(np.clip(out["main"][np.arange(40), np.maximum(main, 0)], 1e-7, 1))
    assert logs["main_loss"] == pytest.approx(np.sum((w * ce)[seen]) / seen.sum(), rel=1e-5)
    has = np.isfinite(side)
    p = np.clip(out["side"][:, 0], 1e-7, 1 - 1e-7)
    bce = -(np.nan_to_num(side) * np.log(p) + (1 - np.nan_to_num(side)) * np.log(1 - p))
    assert logs["side_loss"] == pytest.approx(bce[has].mean(), rel=1e-5)
    assert logs["side_accuracy"] == pytest.approx(np.mean((p[has] > 0.5) == side[has]), abs=1e-6)


# ---------------------------------------------------------------- bi-level methods
def test_dev_split_is_stratified_and_ids_are_positions():
    x, y = arrays(400)
    data = keras_data.InMemory(tfaux_model()[1].user_tasks, x, y)
    dev = data.carve_dev()
    assert len(dev["id"]) == keras_data.default_dev_size(400) == 40
    assert data.num_rows == 360 and list(data.rows["id"]) == list(range(360))
    for c in np.unique(y["main"]):
        expected = 40 * np.mean(y["main"] == c)
        assert abs(np.sum(dev["y"]["main"] == c) - expected) <= 1
    assert keras_data.default_dev_size(10_000) == 200  # seed 000, A.1


def test_jtds_fits_on_arrays_with_a_carved_or_given_dev_split():
    x, y = arrays()
    for kwargs in ({}, {"dev_data": arrays(30, seed=1)}):
        model = tfaux_model("jtds", upper_interval=2)[1]
        model.compile(optimizer=keras.optimizers.SGD(0.1))
        before = [np.array(v) for v in model.method.upper_variables]
        history = model.fit(x, y, batch_size=32, epochs=1, verbose=0, **kwargs)
        assert history.history["hypergrad_norm"][-1] > 0
        assert any(not np.allclose(b, v) for b, v in zip(before, model.method.upper_variables))


def test_per_example_method_needs_ids():
    x, y = arrays()
    model = tfaux_model("njtds", num_examples=N)[1]
    model.compile(optimizer="sgd")
    with pytest.raises(keras_data.DataFormError, match="example ids"):
        model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(32), dev_data=arrays(20, seed=1), verbose=0)
    model.fit(x, y, batch_size=32, verbose=0)  # arrays: ids are row positions


@pytest.mark.parametrize("y, match", [
    (lambda y: [y["main"]], "list of 1"),
    (lambda y: y["main"], "one array"),
    (lambda y: {**y, "other": y["main"]}, "does not have"),
    (lambda y: {"main": y["main"]}, "no labels for task 'side'"),
])
def test_bad_label_forms_get_one_sentence(y, match):
    x, labels = arrays(40)
    model = tfaux_model("equal")[1]
    model.compile(optimizer="sgd")
    with pytest.raises(keras_data.DataFormError, match=match):
        model.fit(x, y(labels), verbose=0)


# ---------------------------------------------------------------- compile
def test_compile_loss_replaces_the_default_and_metrics_are_logged():
    x, y = arrays(64)
    model = tfaux_model("equal")[1]
    model.compile(optimizer="sgd", loss={"side": "mse"}, metrics={"main": ["accuracy"], "side": [keras.metrics.AUC()]})
    history = model.fit(x, y, epochs=1, verbose=0)
    assert {"main_accuracy", "side_auc"} <= set(history.history)
    logs = model.evaluate(x, y, verbose=0, return_dict=True)
    p = model.predict(x, verbose=0)["side"][:, 0]
    assert logs["side_loss"] == pytest.approx(np.mean((p - y["side"]) ** 2), rel=1e-5)
    from sklearn.metrics import roc_auc_score
    assert logs["side_auc"] == pytest.approx(roc_auc_score(y["side"], p), abs=2e-3)


# ---------------------------------------------------------------- saving and serving
@pytest.mark.parametrize("method", ["equal", "gradnorm", "dwa", "pcgrad", "jtds", "auxilearn"])
def test_keras_file_round_trip_continues_training_identically(method, tmp_path):
    """save("m.keras") -> load_model: same predictions, and one more epoch of both gives the same
    weights (theta, phi, both optimizers and the method's state came back)."""
    x, y = arrays()
    dev = arrays(30, seed=1) if method in ("jtds", "auxilearn") else None
    model = tfaux_model(method, upper_interval=2)[1]
    model.compile(optimizer=keras.optimizers.Adam(1e-2), metrics={"main": ["accuracy"]})
    fit = dict(batch_size=32, shuffle=False, verbose=0, dev_data=dev) if dev else dict(batch_size=32, shuffle=False,
                                                                                        verbose=0)
    model.fit(x, y, epochs=1, **fit)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert type(loaded.method) is type(model.method)
    np.testing.assert_array_equal(model.predict(x, verbose=0)["main"], loaded.predict(x, verbose=0)["main"])
    model.fit(x, y, epochs=2, initial_epoch=1, **fit)
    loaded.fit(x, y, epochs=2, initial_epoch=1, **fit)
    assert_same_weights(model.weights, loaded.weights, atol=1e-6)


def test_model_checkpoint_writes_a_loadable_keras_file(tmp_path):
    x, y = arrays()
    model = tfaux_model("equal")[1]
    model.compile(optimizer="adam")
    path = tmp_path / "best.keras"
    monitor, mode = model.selection_metric
    model.fit(x, y, validation_split=0.2, epochs=2, verbose=0, callbacks=[
        keras.callbacks.ModelCheckpoint(path, monitor=monitor, mode=mode, save_best_only=True)])
    loaded = keras.models.load_model(path)
    assert loaded.get_config()["tasks"] == model.get_config()["tasks"]


def test_export_serves_raw_inputs_as_evaluate_scores_them(tmp_path):
    x, y = arrays()
    raw = (x * 40 + 100).astype("float32")  # the model scales inputs itself
    keras.utils.set_random_seed(0)
    inp = keras.Input((DIM,))
    trunk = keras.layers.Dense(8, activation="tanh")(keras.layers.Rescaling(1 / 40, offset=-2.5)(inp))
    net = keras.Model(inp, {"main": keras.layers.Dense(3, activation="softmax", name="main")(trunk),
                            "side": keras.layers.Dense(1, activation="sigmoid", name="side")(trunk)})
    model = tfaux.AuxiliaryModel.from_keras(net, primary="main", method="equal")
    model.compile(optimizer="adam", metrics={"main": ["accuracy"]})
    model.fit(raw, y, epochs=2, verbose=0)
    accuracy = model.evaluate(raw, y, verbose=0, return_dict=True)["main_accuracy"]
    model.export(tmp_path / "served")
    served = tfaux.load_serving(tmp_path / "served")(tf.constant(raw))["prediction"]
    assert np.mean(np.argmax(served, 1) == y["main"]) == pytest.approx(accuracy, abs=1e-6)


# ---------------------------------------------------------------- trainable
def test_example_file_trains_saves_loads_and_serves(tmp_path):
    """examples/own_model.py (JTDS, GradNorm, PCGrad on a user's functional model and numpy data)."""
    import pathlib
    import runpy

    example = runpy.run_path(str(pathlib.Path(__file__).resolve().parents[1] / "examples" / "own_model.py"))
    results = example["main"](epochs=1, output_dir=str(tmp_path))
    assert set(results) == {"jtds", "gradnorm", "pcgrad"}
    for run in results.values():
        assert run["same_after_loading"]
        assert run["served_accuracy"] == pytest.approx(run["accuracy"], abs=1e-6)
        assert run["accuracy"] > 0.5  # one epoch on digits: far above chance (0.1)


def test_frozen_layers_stay_put_in_lower_and_upper_steps():
    x, y = arrays()
    net, model = tfaux_model("jtds", upper_interval=2)
    model.encoder.get_layer("trunk").trainable = False
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    kernel = np.array(model.encoder.get_layer("trunk").kernel)
    head = np.array(model.heads[0].weights[0])
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    np.testing.assert_array_equal(kernel, model.encoder.get_layer("trunk").kernel)
    assert not np.allclose(head, model.heads[0].weights[0])
    assert all(v.trainable for v in model.hessian_variables())


def test_readme_quick_start_runs(tmp_path, monkeypatch):
    """The README's first Python block, one epoch: fit on numpy, save, export."""
    import pathlib
    import re

    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = re.search(r"## Quick start.*?```python\n(.*?)```", readme, re.S).group(1)
    assert "from_keras" in code and "model.fit(x, y" in code
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(code.replace("epochs=10", "epochs=1"), "README.md", "exec"), namespace)
    loaded = keras.models.load_model(tmp_path / "digits.keras")
    x = namespace["x"][:50]
    np.testing.assert_array_equal(loaded.predict(x, verbose=0)["digit"], namespace["model"].predict(x, verbose=0)["digit"])
    served = tfaux.load_serving(tmp_path / "served")(tf.constant(x))["prediction"]
    np.testing.assert_allclose(served, namespace["model"].predict(x, verbose=0)["digit"], atol=1e-6)


def test_dataframes_train_like_arrays():
    """x as a pandas DataFrame and y as Series = the same rows as numpy arrays."""
    pd = pytest.importorskip("pandas")
    x, y = arrays()
    runs = []
    for form in ("arrays", "frames"):
        model = tfaux_model("equal")[1]
        model.compile(optimizer=keras.optimizers.SGD(0.2))
        if form == "arrays":
            model.fit(x, y, batch_size=32, shuffle=False, verbose=0)
        else:
            model.fit(pd.DataFrame(x), {k: pd.Series(v) for k, v in y.items()}, batch_size=32, shuffle=False,
                      verbose=0)
        runs.append(model.encoder.get_weights())
    assert_same_weights(runs[0], runs[1], atol=0)
    frame = pd.DataFrame(x)
    np.testing.assert_array_equal(model.predict(frame, verbose=0)["main"], model.predict(x, verbose=0)["main"])


def test_dev_arguments_are_refused_where_they_would_be_ignored():
    x, y = arrays(40)
    model = tfaux_model("equal")[1]
    model.compile(optimizer="sgd")
    with pytest.raises(keras_data.DataFormError, match="reads none"):
        model.fit(x, y, dev_batch_size=8, verbose=0)
    bilevel = tfaux_model("jtds")[1]
    bilevel.compile(optimizer="sgd")
    with pytest.raises(keras_data.DataFormError, match="not both"):
        bilevel.fit(x, y, dev_data=arrays(20, seed=1), dev_split=0.2, verbose=0)
