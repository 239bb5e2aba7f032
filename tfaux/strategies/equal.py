"""Equal / NAL: fixed linear task weights (seed 000's "Equal" and "NAL" baselines)."""

import keras
import tensorflow as tf

from tfaux.strategies.base import Strategy


@keras.saving.register_keras_serializable(package="tfaux")
class Equal(Strategy):
    """L_t = (1/B) sum_i sum_k lambda_k l_ik with fixed lambda (default all 1).

    task_weights:    {task name: lambda_k}; unnamed tasks keep 1.0.
    labelled_stream: take the targets' loss from a second stream of labelled target examples
                     (`main_data = "labelled"`): L = mean target loss on that batch + (1/B) sum_i
                     sum_k lambda_k l_ik over the auxiliaries, S4L's "Uniform" when every lambda is
                     1 (seed 003, Table 1); the target weights do not apply then.
    """

    def __init__(self, task_weights=None, labelled_stream=False, **kwargs):
        super().__init__(**kwargs)
        self.task_weights = dict(task_weights or {})
        self.labelled_stream = bool(labelled_stream)
        self.main_data = "labelled" if self.labelled_stream else None

    def setup(self, tasks, feature_dim, num_examples):
        super().setup(tasks, feature_dim, num_examples)
        names = [t.name for t in self.tasks]
        unknown = sorted(set(self.task_weights) - set(names))
        if unknown:
            raise ValueError(f"Equal task_weights name unknown tasks {unknown}; tasks are {names}.")
        self.lambdas = tf.constant([float(self.task_weights.get(n, 1.0)) for n in names])

    def set_loss_weights(self, weights):
        """compile(loss_weights=...): these task weights replace task_weights (unnamed tasks: 1)."""
        self.task_weights = dict(weights)
        self.setup(self.tasks, None, None)

    def example_weights(self, context):
        return tf.ones_like(context.losses) * self.lambdas[None, :]

    def get_config(self):
        return {**super().get_config(), "task_weights": self.task_weights, "labelled_stream": self.labelled_stream}
