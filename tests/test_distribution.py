"""A bi-level run under MirroredStrategy on two logical CPUs equals one device."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfaux

N = 64


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, 6)).astype("float32")
    labels = {"main": (x[:, 0] + 0.3 * rng.normal(size=N) > 0).astype("int32"),
              "aux": (x[:, 1] > 0).astype("float32")}
    mask = {"main": (rng.random(N) < 0.8).astype("float32"), "aux": np.ones(N, "float32")}
    examples = {"x": x, "labels": labels, "mask": mask, "id": np.arange(N, dtype="int64")}
    train = tf.data.Dataset.from_tensor_slices(examples).batch(16, drop_remainder=True)
    dev = tf.data.Dataset.from_tensor_slices(examples).take(32).repeat().batch(8, drop_remainder=True)
    return tf.data.Dataset.zip(train, dev).map(lambda t, d: {"train": t, "dev": d})


def _train(strategy, method, initial=None):
    tasks = [tfaux.Task("main", role="primary", num_classes=2), tfaux.Task("aux", kind="binary")]
    method, _, chunks = method.partition("/")  # jtds/2: Hessian-vector products over 2 sub-batches
    with strategy.scope():
        batch_norm = [keras.layers.BatchNormalization(synchronized=True)] if chunks else []
        encoder = keras.Sequential([keras.layers.Dense(12, activation="tanh"), *batch_norm,
                                    keras.layers.Dense(8, activation="tanh")])
        args = dict(pair_group=4) if method.startswith("dtg") else {}  # partners: the same rows on 1 and 2 replicas
        model = tfaux.AuxiliaryModel(encoder, tasks, tfaux.strategies.get(method, **args), tf.TensorSpec((6,), tf.float32),
                                     num_examples=N, upper_interval=2, hvp_chunks=int(chunks or 1))
        model.compile(optimizer=keras.optimizers.SGD(0.1),
                      upper_optimizer=keras.optimizers.SGD(1.0) if model.method.bilevel else None)
        if initial is not None:
            model.set_weights(initial)
    start = model.get_weights()
    model.fit(_data(), epochs=2, verbose=0)
    return start, model


@pytest.mark.parametrize("method", ["jtds", "jtds_normalized", "njtds", "gcs", "mgda", "ptl", "adaloss", "dtg_auxl",
                                    "jtds/2", "dtg_auxl/2"])
def test_mirrored_two_devices_equals_one_device(method, two_devices):
    """jtds/2 and dtg_auxl/2 (sub-batched Hessian-vector products, synchronised BatchNorm) run their one device
    without a strategy, i.e. through the while loop, and their mirrored runs unrolled."""
    one = tf.distribute.get_strategy() if "/" in method else tf.distribute.OneDeviceStrategy("/cpu:0")
    start, single = _train(one, method)
    _, mirrored = _train(two_devices, method, initial=start)
    names = [v.path for v in single.weights]
    moved = False
    for name, a, b, s in zip(names, single.get_weights(), mirrored.get_weights(), start):
        np.testing.assert_allclose(b, a, atol=2e-5, rtol=1e-4, err_msg=name)
        moved |= not np.allclose(a, s)
    assert moved
    if single.method.bilevel:
        phi_moved = any(not np.allclose(w.numpy(), s) for w, s in zip(
            single.method.weights, [start[names.index(w.path)] for w in single.method.weights]))
        assert phi_moved, "the upper step never changed phi"
