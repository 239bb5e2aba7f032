"""STL: single-task learning, the target task(s) alone."""

import keras
import tensorflow as tf

from tfaux.strategies.base import Strategy


@keras.saving.register_keras_serializable(package="tfaux")
class STL(Strategy):
    """w[i, k] = 1 for the target tasks k < n, 0 for the auxiliaries, whose heads are not even run."""

    def active_tasks(self):
        return [True] * self.num_targets + [False] * (self.num_tasks - self.num_targets)

    def example_weights(self, context):
        targets = tf.ones_like(context.losses[:, :self.num_targets])
        return tf.concat([targets, tf.zeros_like(context.losses[:, self.num_targets:])], axis=1)
