"""GCS: gradient cosine similarity (Du et al. 2018), a gradient-space method.

On the shared (encoder) parameters the update is
    g = g_main + sum_k [cos(g_main, g_k) > 0] * g_k          (unweighted)
    g = g_main + sum_k max(0, cos(g_main, g_k)) * g_k        (weighted=True)
with cosines of the full-batch (all-replica) gradients over all shared
parameters; every task head gets its own task's gradient unchanged.
"""

import tensorflow as tf

from tfaux import distribute, hypergrad
from tfaux.strategies.base import Strategy


def _flat(grads):
    return tf.concat([tf.reshape(g, [-1]) for g in grads], 0)


class GCS(Strategy):
    persistent_tape = True

    def __init__(self, weighted=False, **kwargs):
        super().__init__(**kwargs)
        self.weighted = weighted

    def lower_gradients(self, tape, loss, losses, context, variables):
        del loss
        with tape:  # persistent tape: keep recording, so per-task losses are differentiable
            totals = tf.reduce_sum(losses * context.masks, 0) / context.global_batch
            per_task = [totals[k] for k in range(self.num_tasks)]
        task_grads = []
        for k in range(self.num_tasks):
            g = tape.gradient(per_task[k], variables.shared)
            task_grads.append(hypergrad.zeros_for_none(g, variables.shared))
        flat = distribute.replica_sum([_flat(g) for g in task_grads])
        main = flat[0]
        shared = list(task_grads[0])
        for k in range(1, self.num_tasks):
            cos = tf.reduce_sum(main * flat[k]) / (tf.norm(main) * tf.norm(flat[k]) + 1e-12)
            gate = tf.maximum(cos, 0.0) if self.weighted else tf.cast(cos > 0.0, tf.float32)
            shared = [s + gate * g for s, g in zip(shared, task_grads[k])]
        head_grads = []
        for k, head in enumerate(variables.heads):
            g = tape.gradient(per_task[k], head) if head else []
            head_grads += list(g)
        return shared + head_grads

    def get_config(self):
        return {**super().get_config(), "weighted": self.weighted}
