"""AdaLoss: adaptive loss balancing (Hu, Dey, Hebert & Bagnell 2019, "Learning Anytime
Predictions in Neural Networks via Adaptive Loss Balancing", AAAI).

The weight of task k is inversely proportional to a running average of its loss, so that
sum_k w_k L_k follows the gradient of sum_k log L_k (the geometric mean of the losses):

    a_k(t) = m a_k(t-1) + (1 - m) L_k(t)        (a_k = L_k at the task's first step)
    u_k    = (1 - gamma) [1/(a_k + eps)] / max_j [1/(a_j + eps)] + gamma
    w_k    = K u_k / sum_j u_j

L_k(t) is step t's mean loss of task k over its labelled examples (all replicas). As in
the authors' code (AdaptiveLossWeight, anytime_models/models/online_learn.py), the weights
are max-normalised and mixed with a constant gamma (so that no weight vanishes), and
the weights of step t use the average up to step t-1 (w = 1 at the first step); here they
are then scaled to sum to K. Defaults: the authors' code's momentum m = 0.9 and
gamma = 0.07 (its anytime-network-specific `final_extra` is not used). The lower
objective is sum_k w_k L_k with L_k = (1/B) sum_i m_ik l_ik.
"""

import keras
import tensorflow as tf

from tfaux import distribute
from tfaux.strategies.base import Strategy


@keras.saving.register_keras_serializable(package="tfaux")
class AdaLoss(Strategy):
    logs_weights = True

    def __init__(self, momentum=0.9, gamma=0.07, epsilon=1e-8, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"AdaLoss momentum must be in [0, 1), got {momentum}.")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"AdaLoss gamma must be in [0, 1], got {gamma}.")
        if not epsilon > 0:
            raise ValueError(f"AdaLoss epsilon must be > 0, got {epsilon}.")
        self.momentum, self.gamma, self.epsilon = float(momentum), float(gamma), float(epsilon)

    def setup(self, tasks, feature_dim, num_examples):
        super().setup(tasks, feature_dim, num_examples)
        self.average = self.add_state((self.num_tasks,), name="loss_average")
        self.seen = self.add_state((self.num_tasks,), name="seen")  # 1 once a task had labels

    def task_weights(self):
        """[T] weights of the current step."""
        seen = self.seen > 0.0
        inverse = 1.0 / (tf.convert_to_tensor(self.average) + self.epsilon)
        inverse = tf.where(seen, inverse, tf.zeros_like(inverse))
        top = tf.reduce_max(inverse)
        u = tf.where(seen, tf.math.divide_no_nan(inverse, top), tf.ones_like(inverse))  # unseen: the top weight
        u = (1.0 - self.gamma) * u + self.gamma
        return float(self.num_tasks) * u / tf.reduce_sum(u)

    def example_weights(self, context):
        return tf.ones_like(context.losses) * self.task_weights()[None, :]

    def after_lower_step(self, context):
        sums, counts = distribute.replica_sum(
            (tf.reduce_sum(context.losses * context.masks, 0), tf.reduce_sum(context.masks, 0)))
        current = tf.math.divide_no_nan(sums, counts)
        moved = self.momentum * self.average + (1.0 - self.momentum) * current
        labelled = counts > 0
        self.average.assign(tf.where(labelled, tf.where(self.seen > 0.0, moved, current), self.average))
        self.seen.assign(tf.where(labelled, tf.ones_like(current), self.seen))

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "gamma": self.gamma, "epsilon": self.epsilon}
