"""A small two-task problem in the data contract's format, for strategy tests."""

import keras
import numpy as np
import tensorflow as tf

import tfaux

N, DIM = 128, 6


def examples(n=N, seed=0, label_noise=0.0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, DIM)).astype("float32")
    main = (x[:, 0] + 0.5 * x[:, 1] > 0).astype("int32")
    flip = rng.random(n) < label_noise
    main = np.where(flip, 1 - main, main).astype("int32")
    labels = {"main": main, "aux": (x[:, 0] > 0).astype("float32")}
    mask = {"main": np.ones(n, "float32"), "aux": np.ones(n, "float32")}
    return {"x": x, "labels": labels, "mask": mask, "id": np.arange(n, dtype="int64")}


def tasks():
    return [tfaux.Task("main", role="primary", num_classes=2), tfaux.Task("aux", kind="binary")]


def streams(batch=32, dev_batch=16, seed=0):
    data = examples(seed=seed)
    train = tf.data.Dataset.from_tensor_slices(data).batch(batch, drop_remainder=True)
    dev = tf.data.Dataset.from_tensor_slices(examples(64, seed + 1)).repeat().batch(dev_batch, drop_remainder=True)
    return train, tf.data.Dataset.zip(train, dev).map(lambda t, d: {"train": t, "dev": d})


def model(strategy, upper_interval=2, lr=0.1, upper=None, encoder=None):
    encoder = encoder or keras.Sequential([keras.layers.Dense(16, activation="tanh")])
    m = tfaux.AuxiliaryModel(encoder, tasks(), strategy, tf.TensorSpec((DIM,), tf.float32), num_examples=N,
                             upper_interval=upper_interval)
    m.compile(optimizer=keras.optimizers.SGD(lr), upper_optimizer=upper)
    return m


def inner_solver(inner, size):
    """(grad, optimum) of a float64 inner objective inner(theta, phi) over flat [size] theta:
    optimum(phi, theta=None) is a local minimum theta*(phi), by gradient descent from a fixed
    start (or from `theta`), then Newton to machine precision (asserting a positive definite
    Hessian there) - the reference point of the finite-difference hypergradient checks."""
    vector = tf.TensorSpec([None], tf.float64)

    @tf.function(input_signature=[vector, vector])
    def grad(theta, phi):
        with tf.GradientTape() as tape:
            tape.watch(theta)
            value = inner(theta, phi)
        return tape.gradient(value, theta)

    @tf.function(input_signature=[vector, vector])
    def hessian(theta, phi):
        with tf.GradientTape() as outer:
            outer.watch(theta)
            g = grad(theta, phi)
        return g, outer.jacobian(g, theta)

    def optimum(phi, theta=None):
        if theta is None:
            theta = tf.constant(np.random.default_rng(1).normal(size=size) * 0.5)
            for _ in range(300):
                theta = theta - 0.5 * grad(theta, phi)
        for _ in range(8):
            g, h = hessian(theta, phi)
            assert np.linalg.eigvalsh(h.numpy()).min() > 1e-3
            theta = theta - tf.linalg.solve(h, g[:, None])[:, 0]
        assert np.abs(grad(theta, phi).numpy()).max() < 1e-10, "Newton did not converge: is the inner problem smooth?"
        return theta

    return grad, optimum
