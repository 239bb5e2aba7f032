"""What a strategy makes of every training example: the effective weight
w_ik = B * dL_t/dl_ik of example i on task k (for JTDS and N-JTDS this is exactly
Eq. 4's / A.5's w_ik; for AuxiLearn it is the combiner's local slope)."""

import weakref

import numpy as np
import tensorflow as tf

_FUNCTIONS = weakref.WeakKeyDictionary()  # model -> its traced weight function


def example_weights(model, dataset, num_examples):
    """[num_examples, T] effective weights, row = example id, from batches of the
    data contract (use an unshuffled, unaugmented pass over the training split)."""
    out = np.zeros((num_examples, len(model.tasks)), np.float32)
    weights_of = _weights_function(model)
    for batch in dataset:
        ids = batch["id"].numpy()
        out[ids] = weights_of(batch).numpy()
    return out


def _weights_function(model):
    """The traced per-batch weight function, built once per model (not once per call, which
    retraced it every epoch)."""
    if model in _FUNCTIONS:
        return _FUNCTIONS[model]

    @tf.function(reduce_retracing=True)
    def weights_of(batch):
        forward, context = model.context(batch)
        losses = forward.losses
        with tf.GradientTape() as tape:
            tape.watch(losses)
            objective = model.method.lower_loss(losses, context)
        grads = tape.gradient(objective, losses)
        grads = tf.zeros_like(losses) if grads is None else grads
        return grads * context.global_batch

    _FUNCTIONS[model] = weights_of
    return weights_of
