"""The exported primary model takes the dataset's raw inputs (normalisation is part of the model),
declares real input shapes and dtypes, answers bad calls with a clear error and keeps running;
recommendation models take the dataset's raw ids."""

import gzip
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import pipelines
import tfaux

# Each case calls the SavedModel both ways a server does: the `serve` function and the
# `serving_default` signature (which TensorFlow does not check against the declared shapes: a
# rank-3 batch used to abort the process in the convolution). The script prints one JSON line
# per call and exits 0.
CALLER = textwrap.dedent("""
    import json, sys
    import numpy as np, tensorflow as tf
    loaded = tf.saved_model.load(sys.argv[1])
    for name, inputs in json.loads(sys.argv[2]).items():
        args = {k: tf.constant(np.array(v["value"], dtype=v["dtype"])) for k, v in inputs.items()}
        for way in ("serve", "signature"):
            try:
                if way == "signature":
                    loaded.signatures["serving_default"](**args)
                else:
                    loaded.serve(args if len(args) > 1 else args["x"])
                outcome = "ok"
            except Exception as e:
                outcome = type(e).__name__ + ": " + " | ".join(str(e).splitlines())
            print(json.dumps({"case": name, "way": way, "outcome": outcome}), flush=True)
    print("SURVIVED")
""")


def _call(path, cases):
    run = subprocess.run([sys.executable, "-c", CALLER, str(path), json.dumps(cases)], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0 and "SURVIVED" in run.stdout, run.stderr[-3000:]
    out = {}
    for line in run.stdout.splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            out.setdefault(r["case"], {})[r["way"]] = r["outcome"]
    return out


def _image(shape, dtype="float32", fill=0.0):
    return {"x": {"value": np.full(shape, fill).tolist(), "dtype": dtype}}


def _trained_export(data, path, steps=20, dtype=None):
    """A small ConvNet-4 behind the dataset's preprocessing, trained a few steps, exported with
    `dtype` (default: the dataset's raw dtype): (model, loaded SavedModel)."""
    keras.utils.set_random_seed(0)
    encoder = keras.Sequential([data.preprocessing(), tfaux.models.convnet4(channels=8)])
    model = tfaux.AuxiliaryModel(encoder, data.tasks, tfaux.strategies.STL(), input_spec=data.input_spec,
                                 num_examples=data.num_train)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    model.fit(data.train(32, epochs=1), steps_per_epoch=steps, verbose=0)
    tfaux.export_primary(model, path, dtype=dtype or data.raw_dtype)
    return model, tf.saved_model.load(str(path))


def _served_accuracy(loaded, raw_x, labels):
    """Accuracy of the SavedModel on raw inputs, through `serve` and the serving signature alike."""
    by_serve = loaded.serve(tf.constant(raw_x))["prediction"].numpy()
    by_signature = loaded.signatures["serving_default"](x=tf.constant(raw_x))["prediction"].numpy()
    np.testing.assert_array_equal(by_serve, by_signature)
    return float(np.mean(by_serve.argmax(1) == labels))


@pytest.fixture(scope="module")
def digits_export(tmp_path_factory):
    data = pipelines.load("digits", setting=pipelines.Setting(dev_size=60, rotation=False))
    path = tmp_path_factory.mktemp("digits") / "sm"
    return (data, path, *_trained_export(data, path, dtype=tf.float32))  # served as float pixel values 0-255


@pytest.fixture(scope="module")
def mnist_export(tmp_path_factory):
    from conftest import SHARED_DATA

    mnist = SHARED_DATA / "mnist"
    if not (mnist / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"the real MNIST t10k files are absent from {mnist} (../shared/data beside the repository)")
    data = pipelines.load("mnist", data_dir=str(mnist), setting=pipelines.Setting(dev_size=100, rotation=False))
    path = tmp_path_factory.mktemp("mnist") / "sm"
    return (data, path, mnist, *_trained_export(data, path))


def test_the_digits_model_scores_raw_sklearn_digits_as_it_evaluates(digits_export):
    from sklearn.datasets import load_digits

    data, _, model, loaded = digits_export
    bunch = load_digits()  # read without the pipeline: sklearn's 0..16, stored by the loader as uint8 0..255
    rows = data.indices["test"]
    raw = np.round(bunch.images[rows] * (255.0 / 16.0)).astype(np.float32)[..., None]
    served = _served_accuracy(loaded, raw, bunch.target[rows])
    evaluated = model.evaluate(data.test(256), return_dict=True, verbose=0)["primary_accuracy"]
    assert served == pytest.approx(evaluated, abs=1e-6) and served > 0.5, (served, evaluated)


def test_the_mnist_model_scores_the_raw_idx_images_as_it_evaluates(mnist_export):
    data, _, mnist, model, loaded = mnist_export
    with gzip.open(mnist / "t10k-images-idx3-ubyte.gz") as f:  # the IDX file itself: 16-byte header, uint8 pixels
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28, 1)
    with gzip.open(mnist / "t10k-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    rows = data.indices["test"]  # only t10k is present: source rows are the file's rows
    served = _served_accuracy(loaded, images[rows], labels[rows])
    evaluated = model.evaluate(data.test(500), return_dict=True, verbose=0)["primary_accuracy"]
    assert served == pytest.approx(evaluated, abs=1e-6) and served > 0.5, (served, evaluated)


def test_the_signature_declares_real_shapes_and_dtypes(digits_export, mnist_export):
    assert digits_export[0].raw_dtype == mnist_export[0].raw_dtype == tf.uint8  # the loaders' pixels
    for (data, path, *_, loaded), dtype in ((digits_export, tf.float32), (mnist_export, tf.uint8)):
        shape = (None, *data.input_spec.shape)  # digits: exported for float pixel values (dtype=tf.float32)
        assert loaded.signatures["serving_default"].structured_input_signature == (
            (), {"x": tf.TensorSpec(shape, dtype, name="x")})
    shown = subprocess.run([str(Path(sys.executable).parent / "saved_model_cli"), "show", "--dir", str(mnist_export[1]),
                            "--tag_set", "serve", "--signature_def", "serving_default"],
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "dtype: DT_UINT8" in shown.stdout and "shape: (-1, 28, 28, 1)" in shown.stdout, shown.stdout


def _refused_naming(outcome, *names):
    return outcome != "ok" and all(n in outcome for n in names)


def test_the_image_model_refuses_bad_batches_clearly_and_survives(digits_export):
    _, path, _, _ = digits_export
    outcomes = _call(path, {
        "good": _image((2, 8, 8, 1)),
        "no batch dimension": _image((8, 8, 1)),
        "wrong size": _image((2, 9, 9, 1)),
        "wrong channels": _image((2, 8, 8, 3)),
        "wrong dtype": _image((2, 8, 8, 1), "int32", 0),
        "not finite": _image((2, 8, 8, 1), fill=float("nan")),
    })
    assert outcomes["good"] == {"serve": "ok", "signature": "ok"}
    for case in ("no batch dimension", "wrong size", "wrong channels"):
        serve, signature = outcomes[case]["serve"], outcomes[case]["signature"]
        # `serve`: TensorFlow binds the call to the declared TensorSpec named x; the signature
        # (unchecked by TensorFlow): the model's own EnsureShape on tensor x.
        assert _refused_naming(serve, "name='x'", "shape=(None, 8, 8, 1)"), (case, serve)
        assert _refused_naming(signature, "Shape of tensor x", "expected shape [?,8,8,1]"), (case, signature)
    serve, signature = outcomes["wrong dtype"]["serve"], outcomes["wrong dtype"]["signature"]
    assert _refused_naming(serve, "name='x'", "dtype=tf.int32", "dtype=tf.float32"), serve
    # The signature refuses a dtype before the graph runs, by position: "input #0(zero-based)".
    assert _refused_naming(signature, "input #0", "expected to be a float tensor but is a int32 tensor"), signature
    for way, outcome in outcomes["not finite"].items():
        assert _refused_naming(outcome, "serve: input x holds NaN or infinite values"), (way, outcome)


def test_the_uint8_model_refuses_other_dtypes_and_shapes_and_survives(mnist_export):
    _, path, *_ = mnist_export
    outcomes = _call(path, {
        "good": _image((2, 28, 28, 1), "uint8", 255),
        "no batch dimension": _image((28, 28, 1), "uint8", 0),
        "wrong size": _image((2, 27, 28, 1), "uint8", 0),
        "float pixels": _image((2, 28, 28, 1), "float32", 0.5),
    })
    assert outcomes["good"] == {"serve": "ok", "signature": "ok"}
    for case in ("no batch dimension", "wrong size"):
        assert _refused_naming(outcomes[case]["serve"], "name='x'", "shape=(None, 28, 28, 1)"), outcomes[case]
        assert _refused_naming(outcomes[case]["signature"], "Shape of tensor x", "[?,28,28,1]"), outcomes[case]
    assert _refused_naming(outcomes["float pixels"]["serve"], "name='x'", "dtype=tf.uint8"), outcomes["float pixels"]
    assert _refused_naming(outcomes["float pixels"]["signature"], "input #0", "uint8"), outcomes["float pixels"]


def test_the_recommendation_model_serves_raw_movielens_ids(tmp_path, shared_data):
    data = pipelines.load("movielens_100k", data_dir=str(shared_data / "ml-100k"))
    assert data.vocabularies["user"][0] == 1 and data.vocabularies["item"][-1] == 1682  # u.data's own ids
    model = tfaux.AuxiliaryModel(tfaux.models.tabular_encoder(data.input_spec), data.tasks, tfaux.strategies.STL(),
                                 input_spec=data.input_spec, num_examples=data.num_train)
    tfaux.export_primary(model, tmp_path / "sm", vocabularies=data.vocabularies)
    x = {k: v.numpy() for k, v in next(iter(data.test(4)))["x"].items()}
    raw = {**x, "user": data.vocabularies["user"][x["user"]], "item": data.vocabularies["item"][x["item"]]}
    served = tfaux.load_serving(tmp_path / "sm")(raw)["prediction"].numpy()
    np.testing.assert_allclose(served, model.primary_prediction(x)["prediction"].numpy(), atol=1e-5)

    def case(**changes):
        inputs = {**raw, **changes}
        return {k: {"value": np.asarray(v).tolist(), "dtype": "int64" if k in ("user", "item") else str(v.dtype)}
                for k, v in inputs.items()}

    outcomes = _call(tmp_path / "sm", {
        "good": case(),
        "unknown user": case(user=np.array([1, 2, 99999, 4])),
        "unknown item": case(item=np.array([0, 1, 2, 3])),
        "no batch dimension": case(genres=raw["genres"][0]),
    })
    assert outcomes["good"] == {"serve": "ok", "signature": "ok"}
    for way, outcome in outcomes["unknown user"].items():
        assert "input user holds ids that the training data does not have" in outcome and "99999" in outcome
    for way, outcome in outcomes["unknown item"].items():
        assert "input item holds ids" in outcome and "[0]" in outcome, outcome
    for way, outcome in outcomes["no batch dimension"].items():
        assert outcome != "ok" and "genres" in outcome, outcome


def test_vocabularies_must_name_model_inputs(tmp_path):
    data = pipelines.load("digits", setting=pipelines.Setting(dev_size=60))
    model = tfaux.AuxiliaryModel(tfaux.models.convnet4(), data.tasks, tfaux.strategies.STL(),
                                 input_spec=data.input_spec, num_examples=data.num_train)
    with pytest.raises(ValueError, match="user"):
        tfaux.export_primary(model, tmp_path / "sm", vocabularies={"user": [1, 2]})
    with pytest.raises(ValueError, match="float64 cannot be served"):  # only integer pixels are cast
        tfaux.export_primary(model, tmp_path / "sm", dtype=tf.float64)
