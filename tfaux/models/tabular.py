"""Encoder for tabular / recommendation inputs: a dict of features."""

import keras
import tensorflow as tf


class FeatureEmbedding(keras.layers.Layer):
    """Embeds a dict of features and concatenates them.

    Integer features (ids, categories) go through an embedding table of `num_bins`
    rows, indexed by id mod num_bins (ids are contiguous indices in tfaux's
    pipelines, so there is no collision below num_bins distinct values); float
    features (e.g. multi-hot genres) through a linear projection. Output: [B, F * dim].
    """

    def __init__(self, integer_features, float_features, dim=16, num_bins=1 << 16, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.num_bins = dim, num_bins
        self.embeddings = {n: keras.layers.Embedding(num_bins, dim, name=f"embed_{n}") for n in integer_features}
        self.projections = {n: keras.layers.Dense(dim, name=f"project_{n}") for n in float_features}

    def call(self, inputs):
        parts = []
        for name in sorted(inputs):
            x = inputs[name]
            if name in self.embeddings:
                parts.append(self.embeddings[name](tf.math.floormod(tf.reshape(x, [-1]), self.num_bins)))
            else:
                x = tf.reshape(tf.cast(x, tf.float32), [tf.shape(x)[0], -1])
                parts.append(self.projections[name](x))
        return tf.concat(parts, axis=-1)



class TabularEncoder(keras.layers.Layer):
    """FeatureEmbedding, then Dense+ReLU layers."""

    def __init__(self, input_spec, dim=16, units=(64,), **kwargs):
        super().__init__(**kwargs)
        integer = sorted(n for n, s in input_spec.items() if s.dtype.is_integer)
        floats = sorted(n for n, s in input_spec.items() if not s.dtype.is_integer)
        self.features = FeatureEmbedding(integer, floats, dim)
        self.dense = [keras.layers.Dense(u, activation="relu") for u in units]

    def call(self, inputs, training=False):
        h = self.features(inputs)
        for layer in self.dense:
            h = layer(h)
        return h


def tabular_encoder(input_spec, dim=16, units=(64,)):
    """Encoder for a dict of scalar int / float-vector features (see FeatureEmbedding)."""
    if not isinstance(input_spec, dict):
        raise ValueError("tabular_encoder needs dict inputs (a feature name -> tensor mapping).")
    return TabularEncoder(input_spec, dim=dim, units=units, name="tabular")
