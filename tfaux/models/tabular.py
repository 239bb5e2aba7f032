"""Encoder for tabular / recommendation inputs: a dict of features."""

import keras
import numpy as np
import tensorflow as tf


def as_specs(input_spec):
    """{name: tf.TensorSpec} of a dict of tf.TensorSpec, tensors, or `spec_config` entries."""
    return {n: tf.TensorSpec(s["shape"], s["dtype"]) if isinstance(s, dict) else tf.TensorSpec(s.shape, s.dtype)
            for n, s in input_spec.items()}


def spec_config(input_spec):
    """A dict of tf.TensorSpec as JSON: {name: {"shape": [...], "dtype": "int32"}}."""
    return {n: {"shape": s.shape.as_list(), "dtype": s.dtype.name} for n, s in input_spec.items()}


@keras.saving.register_keras_serializable(package="tfaux")
class FeatureEmbedding(keras.layers.Layer):
    """Embeds a dict of features and concatenates them.

    Integer features (ids, categories) go through an embedding table of `num_bins`
    rows, indexed by id mod num_bins (ids are contiguous indices in tfaux's
    pipelines, so there is no collision below num_bins distinct values); float
    features (e.g. multi-hot genres) through a linear projection. Output: [B, F * dim].
    """

    def __init__(self, integer_features, float_features, dim=16, num_bins=1 << 16, **kwargs):
        super().__init__(**kwargs)
        self.integer_features, self.float_features = list(integer_features), list(float_features)
        self.dim, self.num_bins = dim, num_bins
        self.embeddings = {n: keras.layers.Embedding(num_bins, dim, name=f"embed_{n}") for n in integer_features}
        self.projections = {n: keras.layers.Dense(dim, name=f"project_{n}") for n in float_features}

    def build(self, input_shape):
        """Build the tables and projections from {name: shape} (in `call`'s order, so the initial
        weights are those a first call would draw)."""
        for name in sorted(input_shape):
            if name in self.embeddings:
                self.embeddings[name].build((None,))
            else:
                shape = tuple(input_shape[name])[1:]
                width = None if None in shape else int(np.prod(shape))
                self.projections[name].build((None, width))
        self.built = True

    def call(self, inputs):
        parts = []
        for name in sorted(inputs):
            x = inputs[name]
            if name in self.embeddings:
                parts.append(self.embeddings[name](tf.math.floormod(tf.reshape(x, [-1]), self.num_bins)))
            else:
                width = x.shape[1:].num_elements()  # static when known, so the projection builds symbolically
                x = tf.reshape(tf.cast(x, tf.float32), [tf.shape(x)[0], -1 if width is None else width])
                parts.append(self.projections[name](x))
        return tf.concat(parts, axis=-1)

    def get_config(self):
        return {**super().get_config(), "integer_features": self.integer_features,
                "float_features": self.float_features, "dim": self.dim, "num_bins": self.num_bins}


@keras.saving.register_keras_serializable(package="tfaux")
class TabularEncoder(keras.layers.Layer):
    """FeatureEmbedding, then Dense+ReLU layers. input_spec: a dict of tf.TensorSpec (or tensors)."""

    def __init__(self, input_spec, dim=16, units=(64,), **kwargs):
        super().__init__(**kwargs)
        self.input_spec_dict, self.dim, self.units = as_specs(input_spec), dim, tuple(units)
        integer = sorted(n for n, s in self.input_spec_dict.items() if s.dtype.is_integer)
        floats = sorted(n for n, s in self.input_spec_dict.items() if not s.dtype.is_integer)
        self.features = FeatureEmbedding(integer, floats, dim)
        self.dense = [keras.layers.Dense(u, activation="relu") for u in units]

    def build(self, input_shape):
        self.features.build(input_shape)
        width = len(input_shape) * self.dim
        for layer in self.dense:
            layer.build((None, width))
            width = layer.units
        self.built = True

    def call(self, inputs, training=False):
        h = self.features(inputs)
        for layer in self.dense:
            h = layer(h)
        return h

    def get_config(self):
        return {**super().get_config(), "input_spec": spec_config(self.input_spec_dict), "dim": self.dim,
                "units": self.units}


def tabular_encoder(input_spec, dim=16, units=(64,)):
    """Encoder for a dict of scalar int / float-vector features (see FeatureEmbedding)."""
    if not isinstance(input_spec, dict):
        raise ValueError("tabular_encoder needs dict inputs (a feature name -> tensor mapping).")
    return TabularEncoder(input_spec, dim=dim, units=units, name="tabular")
