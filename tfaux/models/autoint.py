"""AutoInt (Song et al. 2019, "AutoInt: Automatic Feature Interaction Learning via
Self-Attentive Neural Networks", Sec. 4): field embeddings, then interacting layers of
multi-head self-attention with residual connections."""

import keras
import tensorflow as tf

from tfaux.models.tabular import FeatureEmbedding, as_specs, spec_config


@keras.saving.register_keras_serializable(package="tfaux")
class InteractingLayer(keras.layers.Layer):
    """One interacting layer (Sec. 4.3, Eqs. 5-8) on fields [B, F, d_in] -> [B, F, heads * head_dim]:

        alpha^h_mk = softmax_k(<W_Q^h e_m, W_K^h e_k>)            (Eqs. 5-6)
        e~^h_m     = sum_k alpha^h_mk W_V^h e_k                    (Eq. 6)
        e^Res_m    = ReLU(concat_h e~^h_m + W_Res e_m)             (Eqs. 7-8)

    Projections have no bias, as in the paper.
    """

    def __init__(self, heads, head_dim, **kwargs):
        super().__init__(**kwargs)
        self.heads, self.head_dim = int(heads), int(head_dim)

    def build(self, input_shape):
        d_in, d_out = int(input_shape[-1]), self.heads * self.head_dim
        w = lambda n: self.add_weight(shape=(d_in, d_out), initializer="glorot_uniform", name=n)  # noqa: E731
        self.w_query, self.w_key, self.w_value, self.w_res = w("query"), w("key"), w("value"), w("residual")

    def _split(self, x):  # [B, F, H*d'] -> [B, H, F, d']
        x = tf.reshape(x, [tf.shape(x)[0], tf.shape(x)[1], self.heads, self.head_dim])
        return tf.transpose(x, [0, 2, 1, 3])

    def call(self, fields):
        q, k, v = (self._split(tf.matmul(fields, w)) for w in (self.w_query, self.w_key, self.w_value))
        attention = tf.nn.softmax(tf.matmul(q, k, transpose_b=True), axis=-1)  # [B, H, F, F]
        heads = tf.transpose(tf.matmul(attention, v), [0, 2, 1, 3])  # [B, F, H, d']
        heads = tf.reshape(heads, [tf.shape(fields)[0], tf.shape(fields)[1], self.heads * self.head_dim])
        return tf.nn.relu(heads + tf.matmul(fields, self.w_res))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.heads * self.head_dim,)

    def get_config(self):
        return {**super().get_config(), "heads": self.heads, "head_dim": self.head_dim}


@keras.saving.register_keras_serializable(package="tfaux")
class AutoInt(keras.layers.Layer):
    """FeatureEmbedding (one e-dim embedding per field, fields in sorted name order) ->
    [B, F, e] -> `blocks` InteractingLayers -> flatten: [B, F * heads * head_dim].
    input_spec: a dict of tf.TensorSpec (or tensors)."""

    def __init__(self, input_spec, embedding_dim=16, blocks=4, heads=4, head_dim=None, num_bins=1 << 16,
                 **kwargs):
        super().__init__(**kwargs)
        input_spec = self.input_spec_dict = as_specs(input_spec)
        self.blocks, self.heads, self.head_dim, self.num_bins = blocks, heads, head_dim, num_bins
        integer = sorted(n for n, s in input_spec.items() if s.dtype.is_integer)
        floats = sorted(n for n, s in input_spec.items() if not s.dtype.is_integer)
        for n in integer:
            if input_spec[n].shape.num_elements() != 1:
                raise ValueError(f"autoint: integer feature '{n}' must be a scalar id, "
                                 f"got shape {input_spec[n].shape}.")
        self.num_fields, self.embedding_dim = len(input_spec), int(embedding_dim)
        head_dim = head_dim or max(1, self.embedding_dim // int(heads))
        self.features = FeatureEmbedding(integer, floats, self.embedding_dim, num_bins=num_bins)
        self.interacting = [InteractingLayer(heads, head_dim, name=f"interacting_{i}") for i in range(int(blocks))]

    def build(self, input_shape):
        self.features.build(input_shape)
        width = self.embedding_dim
        for layer in self.interacting:
            layer.build((None, self.num_fields, width))
            width = layer.heads * layer.head_dim
        self.built = True

    def call(self, inputs, training=False):
        h = tf.reshape(self.features(inputs), [-1, self.num_fields, self.embedding_dim])
        for layer in self.interacting:
            h = layer(h)
        return tf.reshape(h, [-1, self.num_fields * int(h.shape[-1])])

    def get_config(self):
        return {**super().get_config(), "input_spec": spec_config(self.input_spec_dict),
                "embedding_dim": self.embedding_dim, "blocks": self.blocks, "heads": self.heads,
                "head_dim": self.head_dim, "num_bins": self.num_bins}


def autoint(input_spec, embedding_dim=16, blocks=4, heads=4, head_dim=None, num_bins=1 << 16, name="autoint"):
    """AutoInt encoder for a dict of features (e.g. MovieLens: user, item, age, gender,
    occupation int32 ids; genres float32 multi-hot).

    Integer fields: an embedding table of `num_bins` rows indexed by id mod num_bins; float
    fields (scalar or vector): a linear projection to one embedding (FeatureEmbedding, Sec. 4.2).
    blocks interacting layers of `heads` heads of `head_dim` (default embedding_dim // heads,
    so each layer keeps width embedding_dim). Features: [B, fields * heads * head_dim].
    """
    if not isinstance(input_spec, dict):
        raise ValueError("autoint needs dict inputs (a feature name -> tf.TensorSpec mapping).")
    return AutoInt(input_spec, embedding_dim=embedding_dim, blocks=blocks, heads=heads, head_dim=head_dim,
                   num_bins=num_bins, name=name)
