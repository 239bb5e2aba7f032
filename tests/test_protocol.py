"""Protocol v2: several targets, strategy variables and hooks, the upper objective, BatchNorm."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfaux
from tfaux import strategies
from tfaux.backup import EpochBackup
from tfaux.strategies.base import Strategy

N, DIM = 64, 6


def _examples(n=N, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, DIM)).astype("float32")
    labels = {"main": (x[:, 0] + 0.5 * x[:, 1] > 0).astype("int32"), "second": (x[:, 2] > 0).astype("int32"),
              "aux": (x[:, 0] > 0).astype("float32")}
    return {"x": x, "labels": labels, "mask": {k: np.ones(n, "float32") for k in labels},
            "id": np.arange(n, dtype="int64")}


def _two_target_tasks():
    return [tfaux.Task("main", role="primary", num_classes=2), tfaux.Task("second", role="primary", num_classes=2),
            tfaux.Task("aux", kind="binary")]


def _streams(batch=16):
    train = tf.data.Dataset.from_tensor_slices(_examples()).batch(batch, drop_remainder=True)
    dev = tf.data.Dataset.from_tensor_slices(_examples(32, 1)).repeat().batch(8, drop_remainder=True)
    return train, tf.data.Dataset.zip(train, dev).map(lambda t, d: {"train": t, "dev": d})


def _model(strategy, tasks=None, encoder=None, lr=0.1):
    encoder = encoder or keras.Sequential([keras.layers.Dense(8, activation="tanh")])
    model = tfaux.AuxiliaryModel(encoder, tasks or _two_target_tasks(), strategy, tf.TensorSpec((DIM,), tf.float32),
                                 num_examples=N, upper_interval=2)
    model.compile(optimizer=keras.optimizers.SGD(lr))
    return model


@pytest.mark.parametrize("name", list(strategies.METHODS))
def test_every_method_trains_with_two_targets_and_reports_both(name):
    keras.utils.set_random_seed(0)
    model = _model(strategies.get(name))
    train, with_dev = _streams()
    history = model.fit(with_dev if model.method.bilevel else train, validation_data=train, epochs=1, verbose=0)
    logs = {k: v[-1] for k, v in history.history.items()}
    for key in ("main_accuracy", "second_accuracy", "val_main_accuracy", "val_second_accuracy"):
        assert np.isfinite(logs[key]), key
    assert logs["val_primary_accuracy"] == pytest.approx((logs["val_main_accuracy"] + logs["val_second_accuracy"]) / 2)
    assert model.selection_metric == ("val_primary_accuracy", "max")


def test_target_metrics_are_keras_metric_classes_on_masked_examples():
    model = _model(strategies.STL())
    batch = _examples(16)
    batch["mask"]["second"][:8] = 0.0
    batch = tf.nest.map_structure(tf.constant, batch)
    logs = model.test_step(batch)
    out = model(batch["x"])
    expected = []
    for name, rows in (("main", slice(0, 16)), ("second", slice(8, 16))):
        hit = np.argmax(out[name].numpy(), -1)[rows] == batch["labels"][name].numpy()[rows]
        expected.append(hit.mean())
        assert float(logs[f"{name}_accuracy"]) == pytest.approx(hit.mean())
    assert float(logs["primary_accuracy"]) == pytest.approx(np.mean(expected))
    batch["mask"]["second"] = tf.zeros_like(batch["mask"]["second"])  # no labelled example of one target:
    model.reset_metrics()                                                # the mean leaves it out (not a 0)
    assert float(model.test_step(batch)["primary_accuracy"]) == pytest.approx(expected[0])


def test_mixed_target_metrics_and_primary_soft_tasks_are_clear_errors():
    with pytest.raises(ValueError, match="mix accuracy and RMSE"):
        tfaux.ordered([tfaux.Task("a", role="primary"), tfaux.Task("b", role="primary", kind="regression")])
    with pytest.raises(ValueError, match="primary"):
        tfaux.Task("s", role="primary", kind="soft", num_classes=3)


def test_dev_objective_is_the_mean_of_the_targets_dev_losses():
    model = _model(strategies.STL())
    batch = tf.nest.map_structure(tf.constant, _examples(8))
    out = model(batch["x"], training=True)
    expected = np.mean([tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=batch["labels"][n], logits=out[n])).numpy() for n in ("main", "second")])
    assert float(model.dev_objective(batch)) == pytest.approx(expected, rel=1e-6)


class _Counting(Strategy):
    """A lower variable scaling the auxiliary loss, and counters of every hook."""

    def setup(self, tasks, feature_dim, num_examples):
        super().setup(tasks, feature_dim, num_examples)
        self.aux_scale = self.add_lower_weight(shape=(), initializer="ones", name="aux_scale")
        self.steps = self.add_state(name="steps")
        self.epochs = self.add_state(name="epochs")
        self.seen = self.add_state(name="seen")

    def lower_loss(self, losses, context):
        scale = tf.concat([tf.ones([self.num_targets]), tf.fill([self.num_tasks - self.num_targets],
                                                                 self.aux_scale)], 0)
        return tf.reduce_sum(losses * context.masks * scale) / context.global_batch

    def after_lower_step(self, context):
        from tfaux import distribute
        self.steps.assign_add(1.0)
        self.seen.assign_add(distribute.replica_sum(tf.reduce_sum(context.masks[:, 0])))

    def on_epoch_end(self, epoch):
        self.epochs.assign_add(1.0)


def test_a_lower_strategy_variable_is_trained_with_theta():
    model = _model(_Counting())
    assert model.method.lower_variables == [model.method.aux_scale]
    assert model.method.upper_variables == []
    train, _ = _streams()
    batch = next(iter(train))
    with tf.GradientTape() as tape:
        objective = model.lower_objective(batch)
    expected = tape.gradient(objective, model.method.aux_scale)
    model.train_step(batch)
    assert float(model.method.aux_scale) == pytest.approx(1.0 - 0.1 * float(expected), rel=1e-5)
    assert float(model.method.aux_scale) != 1.0


def test_hooks_run_exactly_once_per_step_and_epoch_under_mirrored_strategy(two_devices):
    with two_devices.scope():
        model = _model(_Counting())
    train, _ = _streams()
    model.fit(train, epochs=3, verbose=0)
    assert float(model.method.steps.numpy()) == 3 * 4
    assert float(model.method.epochs.numpy()) == 3
    assert float(model.method.seen.numpy()) == 3 * N


class _DirectTerm(Strategy):
    """A bi-level strategy whose upper objective has a direct term c * ||phi||^2."""

    bilevel = True

    def __init__(self, c=0.0, **kwargs):
        super().__init__(**kwargs)
        self.c = c

    def setup(self, tasks, feature_dim, num_examples):
        super().setup(tasks, feature_dim, num_examples)
        self.phi = self.add_weight(shape=(self.num_tasks,), initializer="ones", name="phi")

    def example_weights(self, context):
        return tf.ones_like(context.losses) * tf.nn.softplus(self.phi)[None, :]

    def upper_objective(self, model, batch):
        return model.dev_objective(batch) + self.c * tf.reduce_sum(tf.square(self.phi))


def test_the_upper_objective_adds_its_direct_gradient():
    train, with_dev = _streams()
    pair = next(iter(with_dev))
    hypers = []
    for c in (0.0, 0.3):
        keras.utils.set_random_seed(1)
        model = _model(_DirectTerm(c=c))
        model.method.phi.assign([0.5, -1.0, 2.0])
        hyper, _ = model.hypergradient(pair["train"], pair["dev"])
        hypers.append(hyper[0].numpy())
    np.testing.assert_allclose(hypers[1] - hypers[0], 2 * 0.3 * np.array([0.5, -1.0, 2.0]), rtol=1e-4, atol=1e-6)


def test_an_upper_objective_on_the_training_set_asks_for_the_reordered_stream():
    class OnTrain(_DirectTerm):
        upper_data = "train"

    model = _model(OnTrain())
    train, _ = _streams()
    with pytest.raises(ValueError, match="train_with_reordered"):
        model.fit(train, epochs=1, verbose=0)

    class Nowhere(_DirectTerm):
        upper_data = "test"

    with pytest.raises(ValueError, match="upper_data"):
        _model(Nowhere())


def test_the_upper_step_leaves_batchnorm_statistics_unchanged():
    keras.utils.set_random_seed(0)
    encoder = keras.Sequential([keras.layers.Dense(8), keras.layers.BatchNormalization(), keras.layers.Activation("tanh")])
    model = _model(strategies.JTDS(), tasks=[tfaux.Task("main", role="primary"), tfaux.Task("aux", kind="binary")],
                   encoder=encoder)
    train, with_dev = _streams()
    pair = next(iter(with_dev))
    bn = encoder.layers[1]
    before = [v.numpy().copy() for v in (bn.moving_mean, bn.moving_variance)]
    model.upper_step(pair["train"], pair["dev"])
    for b, v in zip(before, (bn.moving_mean, bn.moving_variance)):
        np.testing.assert_array_equal(v.numpy(), b)
    assert float(model.hypergrad_norm) > 0
    model.train_step(pair)  # the lower step does move them
    assert not np.allclose(bn.moving_mean.numpy(), before[0])


def test_a_fused_due_step_moves_batchnorm_statistics_with_the_training_batch_only():
    """fused_step (a due step as one pass) moves the moving mean once, by Keras' rule
    0.99 m + 0.01 mean(input), with the training batch's input; not with the dev batch's."""
    keras.utils.set_random_seed(0)
    encoder = keras.Sequential([keras.layers.Dense(8), keras.layers.BatchNormalization(), keras.layers.Activation("tanh")])
    model = _model(strategies.JTDS(), tasks=[tfaux.Task("main", role="primary"), tfaux.Task("aux", kind="binary")],
                   encoder=encoder)
    assert model.fuses_lower_step
    pair = next(iter(_streams()[1]))
    bn = encoder.layers[1]
    inputs = encoder.layers[0](pair["train"]["x"]).numpy()
    expected = 0.99 * bn.moving_mean.numpy() + 0.01 * inputs.mean(0)
    model.fused_step(pair)
    np.testing.assert_allclose(bn.moving_mean.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert float(tf.linalg.global_norm(model.fused_step(pair)[0])) > 0


def test_every_method_compiles_alike_without_xla_by_default():
    for name in ("stl", "jtds"):
        model = _model(strategies.get(name))
        assert model.jit_compile is False
    with pytest.raises(ValueError, match="jit_compile"):
        _model(strategies.STL()).compile(optimizer="sgd", jit_compile="auto")


class _SoftLabels(Strategy):
    """Adds a 3-class soft-label auxiliary task whose labels a tiny generator phi makes from x."""

    bilevel = True

    def extra_tasks(self, tasks):
        return [tfaux.Task("generated", kind="soft", num_classes=3)]

    def setup(self, tasks, feature_dim, num_examples):
        super().setup(tasks, feature_dim, num_examples)
        self.generator = self.add_weight(shape=(DIM, 3), initializer="glorot_uniform", name="generator")

    def generated_labels(self, batch, training, step):
        return {"generated": tf.nn.softmax(tf.matmul(batch["x"], self.generator))}


def test_a_strategy_can_add_a_task_with_generated_soft_labels():
    keras.utils.set_random_seed(0)
    model = _model(_SoftLabels(), tasks=[tfaux.Task("main", role="primary")])
    assert [t.name for t in model.tasks] == ["main", "generated"]
    train, with_dev = _streams()
    pair = next(iter(with_dev))
    forward = model.forward(pair["train"], training=False)
    soft = tf.nn.softmax(tf.matmul(pair["train"]["x"], model.method.generator)).numpy()
    logits = forward.outputs[1].numpy()
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    np.testing.assert_allclose(forward.losses[:, 1].numpy(), -(soft * log_p).sum(-1), rtol=1e-5)
    hyper, _ = model.hypergradient(pair["train"], pair["dev"])
    assert np.abs(hyper[0].numpy()).max() > 0  # the generator gets a hypergradient through the labels
    history = model.fit(with_dev, epochs=1, verbose=0)
    assert np.isfinite(history.history["generated_loss"][-1])


def test_method_args_are_checked_against_the_constructor():
    assert strategies.method_args("gcs", "weighted=True") == {"weighted": True}
    assert strategies.method_args("auxilearn", "hidden=(5,5),init_upper=0.2") == {"hidden": (5, 5), "init_upper": 0.2}
    with pytest.raises(strategies.MethodError, match="no argument 'temperature'"):
        strategies.method_args("gcs", "temperature=2")
    with pytest.raises(strategies.MethodError, match="no argument 'use_loss'"):
        strategies.method_args("jtds_no_loss", "use_loss=True")  # fixed by the variant
    with pytest.raises(strategies.MethodError, match="must look like"):
        strategies.method_args("jtds", "seed")
    for name in strategies.METHODS:
        assert f"{name}:" in strategies.help_text()


class _Interrupt(Exception):
    pass


class _StopAfterEpoch(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epoch:
            raise _Interrupt


def _trained(name, backup, stop=None):
    keras.utils.set_random_seed(0)
    model = _model(strategies.get(name), lr=0.05)
    train, _ = _streams()
    callbacks = [EpochBackup(str(backup))] + ([_StopAfterEpoch(stop)] if stop else [])
    model.fit(train, epochs=3, verbose=0, callbacks=callbacks)
    return model


@pytest.mark.parametrize("name", [n for n, m in strategies.METHODS.items()
                                  if not m.cls.bilevel and n not in ("stl", "equal", "gcs")])
def test_single_level_methods_resume_exactly_with_their_state(name, tmp_path):
    """Killed after epoch 1 and restarted, a run ends where the uninterrupted one does
    (strategy state and lower variables come back from the backup)."""
    whole = _trained(name, tmp_path / "whole")
    with pytest.raises(_Interrupt):
        _trained(name, tmp_path / "cut", stop=1)
    resumed = _trained(name, tmp_path / "cut")
    for v, a, b in zip(whole.weights, whole.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6, err_msg=v.path)


def test_a_strategy_listing_generated_inputs_must_make_them():
    class _Lists(Strategy):
        generated_input_keys = ("made",)

    with pytest.raises(ValueError, match="does not override generated_input"):
        _model(_Lists())
