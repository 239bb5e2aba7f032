"""GCS / CosineSim: gradient cosine similarity (Du et al. 2018), a gradient-space method.

On the shared (encoder) parameters the update is
    g = g_main + sum_k [cos(g_main, g_k) > 0] * g_k          (unweighted: CosineSim)
    g = g_main + sum_k max(0, cos(g_main, g_k)) * g_k        (weighted=True)
with cosines of the full-batch (all-replica) gradients over all shared parameters and
g_main the gradient of the target task (with several targets: of their summed losses, each
target kept with gate 1); every task head gets its own task's
gradient unchanged; the regularization's gradient is added once (tfaux.task_gradients).
"""

import keras
import tensorflow as tf

from tfaux import task_gradients as tg
from tfaux.strategies.base import Strategy


def cosine_gates(flat, weighted=False, num_targets=1):
    """[K] gate of every task: 1 for the targets (rows 0..n-1), [cos > 0] (or max(0, cos))
    for the others, cos taken between row k of the [K, P] gradient matrix and g_main, the
    sum of the target rows."""
    main = tf.reduce_sum(flat[:num_targets], 0)
    cos = tf.linalg.matvec(flat, main) / (tf.norm(flat, axis=1) * tf.norm(main) + 1e-12)
    gates = tf.maximum(cos, 0.0) if weighted else tf.cast(cos > 0.0, tf.float32)
    return tf.concat([tf.ones([num_targets]), gates[num_targets:]], 0)


@keras.saving.register_keras_serializable(package="tfaux")
class GCS(Strategy):
    persistent_tape = True

    def __init__(self, weighted=False, **kwargs):
        super().__init__(**kwargs)
        self.weighted = weighted

    def lower_gradients(self, tape, loss, losses, context, variables):
        del loss, losses
        objectives = tg.task_objectives(tape, context)
        tasks = range(self.num_tasks)
        per_task = tg.shared_gradients(tape, objectives, variables, tasks)
        gates = cosine_gates(tg.replica_flat(per_task), self.weighted, self.num_targets)
        shared = [tf.add_n([gates[k] * per_task[k][j] for k in tasks]) for j in range(len(variables.shared))]
        return tg.combined(tape, objectives, context, variables, shared)

    def get_config(self):
        return {**super().get_config(), "weighted": self.weighted}
