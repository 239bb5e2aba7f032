"""GradNorm (Chen, Badrinarayanan, Lee & Rabinovich 2018, "GradNorm: Gradient
Normalization for Adaptive Loss Balancing in Deep Multitask Networks", Eqs. 1-2).

theta follows sum_k w_k L_k (L_k = (1/B) sum_i m_ik l_ik); the task weights w_k (lower
variables, initialised to 1, trained by the lower optimizer) follow instead the gradient of

    L_grad = sum_k | G_k - mean_j(G_j) r_k^alpha |,    G_k = || grad_W w_k L_k ||,
    r_k = (L_k(t) / L_k(0)) / mean_j (L_j(t) / L_j(0)),

with the target mean_j(G_j) r_k^alpha held constant, W the last shared layer (the last
shared variable of rank >= 2, e.g. the encoder's last kernel), L_k(0) the task's first-step
loss (kept in state) and alpha = 1.5 (the paper's typical value; alpha = 0 asks for equal
gradient norms). After every step w is renormalised to sum to K (and kept >= min_weight).
Norms are of the all-replica gradients; the ratios r_k use each task's mean loss over its
labelled examples (all replicas).
"""

import keras
import tensorflow as tf

from tfaux import distribute
from tfaux import task_gradients as tg
from tfaux.strategies.base import Strategy


def last_shared_kernel(shared):
    """W: the last shared variable of rank >= 2 (else the last shared variable)."""
    if not shared:
        raise ValueError("GradNorm needs a shared encoder with trainable variables.")
    kernels = [v for v in shared if len(v.shape) >= 2]
    return (kernels or shared)[-1]


def gradnorm_weight_gradient(weights, norms, ratios, alpha):
    """dL_grad/dw for G_k = w_k n_k (n_k = ||grad_W L_k||) with the target held constant."""
    g = weights * norms
    target = tf.reduce_mean(g) * tf.pow(ratios, alpha)
    return tf.sign(g - target) * norms


@keras.saving.register_keras_serializable(package="tfaux")
class GradNorm(Strategy):
    persistent_tape = True
    logs_weights = True

    def __init__(self, alpha=1.5, min_weight=1e-3, **kwargs):
        super().__init__(**kwargs)
        if not alpha >= 0:
            raise ValueError(f"GradNorm alpha must be >= 0, got {alpha}.")
        if not min_weight > 0:
            raise ValueError(f"GradNorm min_weight must be > 0, got {min_weight}.")
        self.alpha, self.min_weight = float(alpha), float(min_weight)

    def setup(self, tasks, feature_dim, num_examples):
        super().setup(tasks, feature_dim, num_examples)
        k = self.num_tasks
        # Written once per step from values every replica agrees on: keep the first replica's.
        self.task_weight = self.add_lower_weight(shape=(k,), initializer="ones", name="task_weights",
                                                 aggregation="only_first_replica")
        self.initial_losses = self.add_state((k,), name="initial_losses")
        self.initialized = self.add_state((k,), name="initialized")

    def example_weights(self, context):
        return tf.ones_like(context.losses) * tf.convert_to_tensor(self.task_weight)[None, :]

    def _mean_losses(self, context):
        """All-replica mean loss of every task over its labelled examples, and label counts."""
        sums, counts = distribute.replica_sum(
            (tf.reduce_sum(context.losses * context.masks, 0), tf.reduce_sum(context.masks, 0)))
        return tf.math.divide_no_nan(sums, counts), counts

    def loss_ratios(self, context):
        """r_k = (L_k(t)/L_k(0)) / mean_j (L_j(t)/L_j(0)); L(0) = L(t) at the first step."""
        current, _ = self._mean_losses(context)
        initial = tf.where(self.initialized > 0.0, tf.convert_to_tensor(self.initial_losses), current)
        relative = tf.math.divide_no_nan(current, initial)
        return tf.math.divide_no_nan(relative, tf.reduce_mean(relative))

    def lower_gradients(self, tape, loss, losses, context, variables):
        del losses
        theta = tape.gradient(loss, variables.all)
        kernel = last_shared_kernel(variables.shared)
        objectives = tg.task_objectives(tape, context)
        per_task = [tg.gradients(tape, objectives[k], [kernel]) for k in range(self.num_tasks)]
        norms = tf.norm(tg.replica_flat(per_task), axis=1)  # ||grad_W L_k||, all replicas
        weights = tf.convert_to_tensor(self.task_weight)
        grad = gradnorm_weight_gradient(weights, norms, self.loss_ratios(context), self.alpha)
        return theta + [grad / float(distribute.num_replicas())]

    def after_lower_step(self, context):
        weights = tf.maximum(tf.convert_to_tensor(self.task_weight), self.min_weight)
        self.task_weight.assign(float(self.num_tasks) * weights / tf.reduce_sum(weights))
        current, counts = self._mean_losses(context)
        first = tf.logical_and(self.initialized <= 0.0, counts > 0)
        self.initial_losses.assign(tf.where(first, current, self.initial_losses))
        self.initialized.assign(tf.where(counts > 0, tf.ones_like(counts), self.initialized))

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "min_weight": self.min_weight}
