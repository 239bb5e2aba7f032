"""STL: single-task learning, the primary task alone."""

import tensorflow as tf

from tfaux.strategies.base import Strategy


class STL(Strategy):
    """w[i, 0] = 1, w[i, k>0] = 0; auxiliary heads are not even run."""

    def active_tasks(self):
        return [True] + [False] * (self.num_tasks - 1)

    def example_weights(self, context):
        primary = tf.ones_like(context.losses[:, :1])
        return tf.concat([primary, tf.zeros_like(context.losses[:, 1:])], axis=1)
