"""OL_AUX: online learning of auxiliary task weights (Lin, Baweja, Kantor & Held, NeurIPS
2019, "Adaptive auxiliary task weighting for reinforcement learning").

theta is trained on
    L(theta) = L_main + sum_k w_k L_k                (every target task weighted 1)
and every N lower steps the auxiliary weights take one gradient step on the main loss
N steps ahead, d L_main(theta_{t+N}) / d w_k ~ -sum_{j<N} alpha_j g_main(theta_j)^T g_k(theta_j):

    w_k <- max(0, w_k + beta * sum_{j=t}^{t+N-1} alpha_j g_main(theta_j)^T g_k(theta_j))

with g the full-batch (all-replica) gradients on the shared parameters, alpha_j the lower
learning rate of step j, g_main the gradient of the mean of the target tasks' losses,
and w_k >= 0 as in the authors' code (baselines/common/mpi_aux_update.py). With a single
target, L_main is its loss.

Defaults, those of the authors' code (olaux/main.py, olaux/ddpg.py): horizon N = 5,
weight_lr beta = 5, w_k = 1 at the start. (Their code also offers log-losses and a
moving average of the gradients; both are off here.)

Weights and the accumulated sum are state (saved, exact on resume); the update runs in
`after_lower_step`. The dot products need the lower tape, so `lower_gradients` computes
them and hands them to `after_lower_step` of the same step through `context.scratch`
(one Context per replica and step), which writes them into the state.
"""

import keras
import tensorflow as tf

from tfaux import task_gradients as tg
from tfaux.strategies.base import Strategy


@keras.saving.register_keras_serializable(package="tfaux")
class OLAux(Strategy):
    """Auxiliary task weights w_k, moved every `horizon` steps by `weight_lr` times the
    accumulated alpha * g_main . g_k."""

    persistent_tape = True
    logs_weights = True

    def __init__(self, horizon=5, weight_lr=5.0, **kwargs):
        super().__init__(**kwargs)
        if int(horizon) != horizon or horizon < 1:
            raise ValueError(f"OL_AUX horizon must be a whole number of steps >= 1, got {horizon!r}.")
        if not weight_lr >= 0:
            raise ValueError(f"OL_AUX weight_lr must be >= 0, got {weight_lr!r}.")
        self.horizon = int(horizon)
        self.weight_lr = float(weight_lr)

    def setup(self, tasks, feature_dim, num_examples):
        super().setup(tasks, feature_dim, num_examples)
        num_aux = self.num_tasks - self.num_targets
        self.aux_weights = self.add_state(shape=(num_aux,), name="aux_weights", initializer="ones")
        self.accumulated = self.add_state(shape=(num_aux,), name="accumulated_similarity")

    def example_weights(self, context):
        task_weights = tf.concat([tf.ones([self.num_targets]), tf.convert_to_tensor(self.aux_weights)], 0)
        return tf.ones_like(context.losses) * task_weights[None, :]

    def lower_gradients(self, tape, loss, losses, context, variables):
        grads = tape.gradient(loss, variables.trained)
        objectives = tg.task_objectives(tape, context)
        flat = tg.replica_flat(tg.shared_gradients(tape, objectives, variables, range(self.num_tasks)))
        main = tf.reduce_mean(flat[:self.num_targets], 0)
        context.scratch["ol_aux_dots"] = context.learning_rate * tf.linalg.matvec(flat[self.num_targets:], main)
        return grads

    def after_lower_step(self, context):
        accumulated = self.accumulated + context.scratch["ol_aux_dots"]
        due = tf.equal((context.step + 1) % self.horizon, 0)  # context.step: steps taken before this one
        self.aux_weights.assign(tf.where(due, tf.maximum(self.aux_weights + self.weight_lr * accumulated, 0.0),
                                         self.aux_weights))
        self.accumulated.assign(tf.where(due, tf.zeros_like(accumulated), accumulated))

    def get_config(self):
        return {**super().get_config(), "horizon": self.horizon, "weight_lr": self.weight_lr}
