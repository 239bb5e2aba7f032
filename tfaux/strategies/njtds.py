"""N-JTDS (seed 000, Appendix A.5): one learnable weight per (example, task).

    w_ik = softplus(W[id_i, k]),   W in R^{m x T}, initialised so that w = 1.

Needs a stable example id in every training batch (the data contract's "id").
Trained by the same implicit hypergradient as JTDS, with its upper settings but no
weight decay: decay would move every example's weight at every upper step, seen or
not, so an example's weight changes only when it is in an upper step's batch (and then
by momentum). O(m * T) parameters.
"""

import math

import keras
import tensorflow as tf

from tfaux.strategies.base import Strategy
from tfaux.upper import UpperSettings


@keras.saving.register_keras_serializable(package="tfaux")
class NJTDS(Strategy):
    bilevel = True
    needs_ids = True
    logs_weights = True
    upper_defaults = UpperSettings(weight_decay=0.0)

    def setup(self, tasks, feature_dim, num_examples):
        super().setup(tasks, feature_dim, num_examples)
        if not num_examples or num_examples < 1:
            raise ValueError("N-JTDS needs the training-set size (num_examples) to create one weight per example.")
        self.num_examples = int(num_examples)
        self.table = self.add_weight(
            shape=(self.num_examples, self.num_tasks), name="example_task_logits",
            initializer=keras.initializers.Constant(math.log(math.e - 1.0)))

    def example_weights(self, context):
        ids = tf.cast(context.ids, tf.int32)
        return tf.nn.softplus(tf.gather(self.table, ids))
