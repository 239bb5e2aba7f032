"""PCGrad: projecting conflicting gradients (Yu et al. 2020, "Gradient surgery for
multi-task learning", Algorithm 1), a gradient-space method.

With g_k the full-batch (all-replica) gradient of task k's loss on the shared parameters,
every task i is projected, over the other tasks j in a random order, onto the normal
plane of each ORIGINAL g_j it conflicts with:

    g_i^pc <- g_i^pc - min(0, g_i^pc . g_j) / ||g_j||^2 * g_j        (g_i^pc starts at g_i)

and the shared parameters are updated with sum_i g_i^pc (reduction="sum", the paper's;
"mean": (1/K) sum_i g_i^pc). Every task head gets its own task's gradient unchanged;
the regularization's gradient is added once (tfaux.task_gradients.combined).

The order is a stateless draw seeded by the lower step (`orders`), so every replica, and a
resumed run, project in the same order. The projection is nonlinear in the gradients, so
it is done once on the all-replica gradients; each replica returns 1/R of the result
(R = replicas in sync), which the optimizer's sum over replicas maps back to it
(tfaux.distribute.for_optimizer).

Defaults: reduction="sum" (the paper's update).
"""

import keras
import tensorflow as tf

from tfaux import distribute
from tfaux import task_gradients as tg
from tfaux.strategies.base import Strategy

REDUCTIONS = ("sum", "mean")
ORDER_SALT = 0x5C6  # second word of the stateless seed of the order draw


def orders(step, num_tasks):
    """[K, K-1] int32: row i lists the tasks j != i in the order task i is projected
    against them at lower step `step` (a stateless draw: equal on every replica)."""
    seed = tf.stack([tf.cast(step, tf.int64), tf.constant(ORDER_SALT, tf.int64)])
    keys = tf.random.stateless_uniform([num_tasks, num_tasks], seed=seed)
    keys = tf.linalg.set_diag(keys, tf.fill([num_tasks], 2.0))  # keys are < 1: task i sorts last
    return tf.argsort(keys, axis=1)[:, :num_tasks - 1]


def project_conflicting(flat, order):
    """[K, P] projected gradients g_i^pc of the [K, P] task gradients, task i projected
    against the original g_j for j = order[i, 0], order[i, 1], ... (Algorithm 1)."""
    projected = flat
    sq_norms = tf.reduce_sum(flat * flat, axis=1)
    for p in range(order.shape[1]):
        j = order[:, p]
        other = tf.gather(flat, j)  # [K, P]: row i is g_{order[i, p]}
        dots = tf.reduce_sum(projected * other, axis=1)
        coef = tf.math.divide_no_nan(tf.minimum(dots, 0.0), tf.gather(sq_norms, j))
        projected = projected - coef[:, None] * other
    return projected


@keras.saving.register_keras_serializable(package="tfaux")
class PCGrad(Strategy):
    """Shared update sum_i g_i^pc (or their mean) of the projected task gradients."""

    persistent_tape = True

    def __init__(self, reduction="sum", **kwargs):
        super().__init__(**kwargs)
        if reduction not in REDUCTIONS:
            raise ValueError(f"PCGrad reduction must be one of {REDUCTIONS}, got {reduction!r}.")
        self.reduction = reduction

    def lower_gradients(self, tape, loss, losses, context, variables):
        del loss, losses
        objectives = tg.task_objectives(tape, context)
        tasks = range(self.num_tasks)
        flat = tg.replica_flat(tg.shared_gradients(tape, objectives, variables, tasks))  # all-replica
        projected = project_conflicting(flat, orders(context.step, self.num_tasks))
        update = tf.reduce_sum(projected, 0) if self.reduction == "sum" else tf.reduce_mean(projected, 0)
        shared = distribute.for_optimizer(tg.unflat(update, variables.shared))  # this replica's share
        return tg.combined(tape, objectives, context, variables, shared)

    def get_config(self):
        return {**super().get_config(), "reduction": self.reduction}
