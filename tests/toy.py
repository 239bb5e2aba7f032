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
