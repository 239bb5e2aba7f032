"""Uncertainty weighting (Kendall, Gal & Cipolla 2018, "Multi-Task Learning Using
Uncertainty to Weigh Losses for Scene Geometry and Semantics", Eqs. 7 and 10).

Each task k has a learned homoscedastic log-variance s_k = log sigma_k^2 (a lower
variable, initialised to 0 and trained with theta by the lower optimizer):

    regression form:      L = sum_k [ 1/2 exp(-s_k) L_k + 1/2 s_k ]
    classification form:  L = sum_k [     exp(-s_k) L_k + 1/2 s_k ]

with L_k = (1/B) sum_i m_ik l_ik the batch loss of task k. At the optimum in s_k,
sigma_k^2 = L_k (regression form) or 2 L_k (classification form).

form: "regression" (default, as most implementations do for every task),
      "classification", or "by_kind" (the classification form for classification,
      binary and soft-label tasks, the regression form for regression tasks).
The 1/2 s_k term is added once over all replicas (each replica adds its 1/R share).
"""

import keras
import tensorflow as tf

from tfaux import distribute
from tfaux.strategies.base import Strategy

FORMS = ("regression", "classification", "by_kind")


@keras.saving.register_keras_serializable(package="tfaux")
class Uncertainty(Strategy):
    logs_weights = True  # the logged weight of task k is its factor c_k exp(-s_k)

    def __init__(self, form="regression", **kwargs):
        super().__init__(**kwargs)
        if form not in FORMS:
            raise ValueError(f"Uncertainty form must be one of {FORMS}, got '{form}'.")
        self.form = form

    def setup(self, tasks, feature_dim, num_examples):
        super().setup(tasks, feature_dim, num_examples)
        self.log_variance = self.add_lower_weight(shape=(self.num_tasks,), initializer="zeros",
                                                  name="log_variance")
        if self.form == "by_kind":
            scales = [0.5 if t.kind == "regression" else 1.0 for t in self.tasks]
        else:
            scales = [0.5 if self.form == "regression" else 1.0] * self.num_tasks
        self.scales = tf.constant(scales, tf.float32)  # c_k: 1/2 (regression) or 1 (classification)

    def task_factors(self):
        """c_k exp(-s_k): the factor of each task's loss, [T]."""
        return self.scales * tf.exp(-tf.convert_to_tensor(self.log_variance))

    def example_weights(self, context):
        return tf.ones_like(context.losses) * self.task_factors()[None, :]

    def lower_loss(self, losses, context):
        penalty = 0.5 * tf.reduce_sum(self.log_variance) / float(distribute.num_replicas())
        return super().lower_loss(losses, context) + penalty

    def get_config(self):
        return {**super().get_config(), "form": self.form}
