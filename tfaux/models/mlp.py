"""A plain MLP encoder for vector inputs."""

import keras


def mlp_encoder(units=(64, 64), name="mlp"):
    """Flatten, then Dense+ReLU layers of the given widths."""
    layers = [keras.layers.Flatten()] + [keras.layers.Dense(u, activation="relu") for u in units]
    return keras.Sequential(layers, name=name)
