"""Primary-task SavedModel for serving: a batch of raw inputs in, primary prediction out.

The `serve` endpoint (and its `serving_default` signature) declares every input with its real
shape, [batch] + the example's shape, and dtype, so `saved_model_cli show` tells a caller what
to send. Any normalisation is part of the model (e.g. the dataset's `preprocessing()` layer in
front of the encoder), so raw inputs go in: images as the dataset stores them (uint8 0-255 for
MNIST when exported with dtype=data.raw_dtype; an integer dtype is cast to the model's float
dtype in the graph), recommendation ids as the dataset's own ids (mapped by Keras lookups).

Bad calls are answered with a Python exception naming the input (a dtype refused by the
signature: by position), and the process keeps running. `loaded.serve` (a restored tf.function)
is bound to the declared TensorSpec by TensorFlow, which refuses a wrong rank, size or dtype
with a TypeError quoting the expected `TensorSpec(shape=(None, ...), dtype=..., name='x')`. The
`serving_default` signature does not check shapes (a batch without its batch dimension used to
reach the convolution and abort the process): there an EnsureShape op on every input answers
"Shape of tensor x [8,8,1] is not compatible with expected shape [?,8,8,1]" (rank and size
asserts would be folded away as always true once the shape is declared; EnsureShape is not),
and a wrong dtype is refused before the graph runs, by position ("input #0(zero-based) was
expected to be a float tensor but is a int32 tensor"). NaN or infinite float inputs: "serve:
input x holds NaN or infinite values".
"""

import keras
import numpy as np
import tensorflow as tf


def _checked(name, x, shape):
    """x, its shape checked at run time against [None] + shape (an EnsureShape op: unlike an
    assert on the declared shape, not folded away; it catches calls that skip TensorFlow's own
    check, e.g. `signatures["serving_default"]`) and, for floats, every value finite."""
    x = tf.ensure_shape(x, [None, *shape])
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


def export_primary(model, path, vocabularies=None, dtype=None, verbose=False):
    """Write a SavedModel whose `serve` signature maps a batch of raw inputs x to
    {"scores": primary head output, "prediction": probabilities / value}.
    Auxiliary heads and the method are not part of it.

    Every input is declared with shape [None] + its example shape (model.input_spec_nest).
    dtype: the dtype served for a single (non-dict) input, default the model's input dtype;
    an integer dtype for a float model (e.g. tf.uint8, a dataset's `raw_dtype`, for 0-255
    pixels) is cast to the model's dtype in the graph.
    vocabularies: {input key: 1-D array, the dataset's raw id of index 0, 1, ...} for dict
    inputs whose values are indices (pipelines' `data.vocabularies`, e.g. MovieLens user and
    item ids): that key is then served as raw ids (int64, or string), mapped to indices in
    the graph by a Keras IntegerLookup / StringLookup; an id unknown to training is an error.
    verbose: print the summary of the written endpoint (keras.export.ExportArchive)."""
    vocabularies = dict(vocabularies or {})
    spec = model.input_spec_nest
    unknown = sorted(set(vocabularies) - set(spec if isinstance(spec, dict) else ()))
    if unknown:
        raise ValueError(f"vocabularies name inputs the model does not have: {unknown}.")
    if dtype is not None and isinstance(spec, dict):
        raise ValueError("dtype is for a model with one input x; dict inputs are served with their own dtypes.")
    lookups = {k: _lookup(v) for k, v in vocabularies.items()}
    archive = keras.export.ExportArchive()
    archive.track(model)
    for layer in lookups.values():
        layer(np.asarray(layer.get_vocabulary()[1:2]))  # built (by a call), then tracked with its table
        archive.track(layer)

    def served_dtype(name, s):
        if name in lookups:
            return tf.string if _is_text(vocabularies[name]) else tf.int64
        served = tf.as_dtype(s.dtype if dtype is None else dtype)
        if served != s.dtype and not (served.is_integer and s.dtype.is_floating):
            raise ValueError(f"dtype {served.name} cannot be served to a model whose input {name} is {s.dtype.name} "
                             "(only an integer dtype may be cast to a float input).")
        return served

    def prepared(name, x, s):
        x = _checked(name, x, s.shape)
        return _indices(name, x, lookups[name], s.dtype) if name in lookups else tf.cast(x, s.dtype)

    def declared(name, s):
        return tf.TensorSpec([None, *s.shape], served_dtype(name, s), name=name)

    if isinstance(spec, dict):
        signature = {k: declared(k, s) for k, s in spec.items()}

        def serve(inputs):
            return model.primary_prediction({k: prepared(k, inputs[k], s) for k, s in spec.items()})
    else:
        signature = declared("x", spec)

        def serve(x):
            return model.primary_prediction(prepared("x", x, spec))
    archive.add_endpoint("serve", serve, input_signature=[signature])
    archive.write_out(str(path), verbose=verbose)
    return str(path)


def load_serving(path):
    """The exported `serve` function, ready to call on a batch (it keeps the
    loaded SavedModel alive)."""
    loaded = tf.saved_model.load(str(path))

    def serve(x):
        return loaded.serve(x)

    serve.saved_model = loaded
    return serve
