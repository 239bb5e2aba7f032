"""What a strategy makes of every training example: the effective weight
w_ik = B * dL_t/dl_ik of example i on task k (for JTDS and N-JTDS this is exactly
Eq. 4's / A.5's w_ik; for AuxiLearn it is the combiner's local slope)."""

import numpy as np
import tensorflow as tf


def example_weights(model, dataset, num_examples):
    """[num_examples, T] effective weights, row = example id, from batches of the
    data contract (use an unshuffled, unaugmented pass over the training split)."""
    out = np.zeros((num_examples, len(model.tasks)), np.float32)

    @tf.function(reduce_retracing=True)
    def weights_of(batch):
        forward, context = model.context(batch)
        losses = forward.losses
        with tf.GradientTape() as tape:
            tape.watch(losses)
            objective = model.scheduler.lower_loss(losses, context)
        grads = tape.gradient(objective, losses)
        grads = tf.zeros_like(losses) if grads is None else grads
        return grads * context.global_batch

    for batch in dataset:
        ids = batch["id"].numpy()
        out[ids] = weights_of(batch).numpy()
    return out
