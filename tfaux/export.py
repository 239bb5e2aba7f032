"""Primary-task SavedModel for serving: a batch of inputs in, primary prediction out.

The `serve` signature checks every call before the model runs (TensorFlow Serving and
`signatures["serving_default"]` do not check shapes themselves: a batch without its batch
dimension reached the convolution and aborted the process). A bad call is answered with an
InvalidArgumentError whose message names the input and what was expected. The signature
declares each input with an unknown shape (its dtype fixed): a declared shape would let
TensorFlow fold the rank and size checks away as always true.
"""

import keras
import numpy as np
import tensorflow as tf


def _shape_text(shape):
    return "[batch, " + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _checked(name, x, spec):
    """x after asserting rank, inner size and (floats) finiteness against the example spec."""
    dims = list(spec.shape)
    rank_ok = tf.equal(tf.size(tf.shape(x)), len(dims) + 1)
    known = [i for i, d in enumerate(dims) if d is not None]

    def size_ok():
        inner = tf.gather(tf.shape(x)[1:], known)
        return tf.reduce_all(tf.equal(inner, tf.constant([dims[i] for i in known], tf.int32)))

    ok = tf.cond(rank_ok, size_ok, lambda: tf.constant(False)) if known else rank_ok
    check = tf.debugging.Assert(ok, [f"serve: input {name} must have shape {_shape_text(dims)} (batch "
                                     "dimension first); got shape", tf.shape(x)])
    with tf.control_dependencies([check]):
        x = tf.ensure_shape(tf.identity(x), [None] + dims)
    if x.dtype.is_floating:
        x = tf.debugging.assert_all_finite(x, f"serve: input {name} holds NaN or infinite values")
    return x


def _is_text(vocabulary):
    return np.asarray(vocabulary).dtype.kind in "USO"


def _lookup(vocabulary):
    """A Keras lookup layer mapping raw ids to 1 + their position in `vocabulary` (0: unknown)."""
    vocabulary = np.asarray(vocabulary)
    if _is_text(vocabulary):
        words = [v.decode() if isinstance(v, bytes) else str(v) for v in vocabulary.tolist()]
        return keras.layers.StringLookup(vocabulary=words, num_oov_indices=1)
    return keras.layers.IntegerLookup(vocabulary=vocabulary.astype(np.int64), num_oov_indices=1,
                                      vocabulary_dtype="int64")


def _indices(name, raw, lookup, dtype):
    """Training-time indices of raw ids, asserting that every id is known."""
    index = lookup(raw)
    known = index > 0
    check = tf.debugging.Assert(tf.reduce_all(known), [
        f"serve: input {name} holds ids that the training data does not have, e.g.",
        tf.boolean_mask(raw, tf.logical_not(known))[:3]])
    with tf.control_dependencies([check]):
        return tf.cast(index - 1, dtype)


def export_primary(model, path, vocabularies=None):
    """Write a SavedModel whose `serve` signature maps a batch of inputs x to
    {"scores": primary head output, "prediction": probabilities / value}.
    Auxiliary heads and the scheduler are not part of it.

    vocabularies: {input key: 1-D array, the dataset's raw id of index 0, 1, ...} for dict
    inputs whose values are indices (pipelines' `data.vocabularies`, e.g. MovieLens user and
    item ids): that key is then served as raw ids (int64, or string), mapped to indices in
    the graph by a Keras IntegerLookup / StringLookup; an id unknown to training is an error."""
    vocabularies = dict(vocabularies or {})
    spec = model.input_spec_nest
    unknown = sorted(set(vocabularies) - set(spec if isinstance(spec, dict) else ()))
    if unknown:
        raise ValueError(f"vocabularies name inputs the model does not have: {unknown}.")
    lookups = {k: _lookup(v) for k, v in vocabularies.items()}
    archive = keras.export.ExportArchive()
    archive.track(model)
    for layer in lookups.values():
        layer(np.asarray(layer.get_vocabulary()[1:2]))  # built (by a call), then tracked with its table
        archive.track(layer)

    def prepared(name, x, s):
        if name in lookups:
            return _indices(name, _checked(name, x, tf.TensorSpec(s.shape, x.dtype)), lookups[name], s.dtype)
        return _checked(name, x, s)

    if isinstance(spec, dict):
        def raw_spec(k, s):
            if k not in lookups:
                return tf.TensorSpec(None, s.dtype, name=k)
            return tf.TensorSpec(None, tf.string if _is_text(vocabularies[k]) else tf.int64, name=k)

        signature = {k: raw_spec(k, s) for k, s in spec.items()}

        def serve(inputs):
            return model.primary_prediction({k: prepared(k, inputs[k], s) for k, s in spec.items()})
    else:
        signature = tf.TensorSpec(None, spec.dtype, name="x")

        def serve(x):
            return model.primary_prediction(prepared("x", x, spec))
    archive.add_endpoint("serve", serve, input_signature=[signature])
    archive.write_out(str(path), verbose=False)
    return str(path)


def load_serving(path):
    """The exported `serve` function, ready to call on a batch (it keeps the
    loaded SavedModel alive)."""
    loaded = tf.saved_model.load(str(path))

    def serve(x):
        return loaded.serve(x)

    serve.saved_model = loaded
    return serve
