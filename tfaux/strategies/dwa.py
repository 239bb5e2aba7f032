"""Dynamic Weight Average (Liu, Johns & Davison 2019, "End-to-End Multi-Task Learning
with Attention" (MTAN), Eq. 7).

    w_k(t) = K exp(r_k(t-1) / T) / sum_i exp(r_i(t-1) / T),   r_k(t-1) = L_k(t-1) / L_k(t-2)

with L_k(t) the average training loss of task k over epoch t (over its labelled examples
of the epoch), T the temperature (default 2, the paper's), and w_k = 1 in the first two
epochs. The lower objective is sum_k w_k L_k, L_k = (1/B) sum_i m_ik l_ik.

State: the running loss sums and label counts of the current epoch (from all-replica
sums, after every lower step) and the last two epochs' average losses, shifted at the
end of every epoch.
"""

import keras
import tensorflow as tf

from tfaux import distribute
from tfaux.strategies.base import Strategy


@keras.saving.register_keras_serializable(package="tfaux")
class DWA(Strategy):
    logs_weights = True

    def __init__(self, temperature=2.0, **kwargs):
        super().__init__(**kwargs)
        if not temperature > 0:
            raise ValueError(f"DWA temperature must be > 0, got {temperature}.")
        self.temperature = float(temperature)

    def setup(self, tasks, feature_dim, num_examples):
        super().setup(tasks, feature_dim, num_examples)
        k = self.num_tasks
        self.loss_sums = self.add_state((k,), name="epoch_loss_sums")
        self.label_counts = self.add_state((k,), name="epoch_label_counts")
        self.history = self.add_state((2, k), name="loss_history")  # rows: L(t-1), L(t-2)
        self.epochs_seen = self.add_state((), name="epochs_seen")

    def task_weights(self):
        """[T] weights of the current epoch."""
        last, before = self.history[0], self.history[1]
        ratios = tf.math.divide_no_nan(last, before)
        weights = float(self.num_tasks) * tf.nn.softmax(ratios / self.temperature)
        return tf.where(self.epochs_seen >= 2.0, weights, tf.ones_like(weights))

    def example_weights(self, context):
        return tf.ones_like(context.losses) * self.task_weights()[None, :]

    def after_lower_step(self, context):
        sums, counts = distribute.replica_sum(
            (tf.reduce_sum(context.losses * context.masks, 0), tf.reduce_sum(context.masks, 0)))
        self.loss_sums.assign_add(sums)
        self.label_counts.assign_add(counts)

    def on_epoch_end(self, epoch):
        del epoch
        sums, counts = tf.convert_to_tensor(self.loss_sums), tf.convert_to_tensor(self.label_counts)
        average = tf.where(counts > 0, tf.math.divide_no_nan(sums, counts),
                           self.history[0])  # a task with no labels this epoch keeps its last value
        self.history.assign(tf.stack([average, self.history[0]]))
        self.epochs_seen.assign_add(1.0)
        self.loss_sums.assign(tf.zeros_like(self.loss_sums))
        self.label_counts.assign(tf.zeros_like(self.label_counts))

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}
