"""Primary-task SavedModel for serving: raw input batch in, primary prediction out."""

import keras
import tensorflow as tf


def export_primary(model, path):
    """Write a SavedModel whose `serve` signature maps a batch of raw inputs x to
    {"scores": primary head output, "prediction": probabilities / value}.
    Auxiliary heads and the scheduler are not part of it."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    spec = model.input_spec_nest
    if isinstance(spec, dict):
        signature = {k: tf.TensorSpec((None,) + tuple(s.shape), s.dtype, name=k) for k, s in spec.items()}
    else:
        signature = tf.TensorSpec((None,) + tuple(spec.shape), spec.dtype, name="x")
    archive.add_endpoint("serve", model.primary_prediction, input_signature=[signature])
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
