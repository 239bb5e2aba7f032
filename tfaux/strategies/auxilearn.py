"""AuxiLearn non-linear monotone loss combiner (seed 002, Sec. 3.2).

    L_T = (1/B) sum_i [ l_main,i + g(l_i; phi) ],   l_i = (l_main,i, l_1,i, ..., l_K,i)

g is an MLP with Softplus activations whose weights are clamped to >= 0 after
every upper step (monotone in every loss); the skip term l_main keeps the main
task's gradient whatever g does. Reference init: weights U(0, 1), biases 0,
hidden [10, 10]. Upper update (reference NYUv2 combiner runs): SGD(1e-3, momentum 0.9),
weight decay 1e-4, clip 25, in the reference scale of tfaux.upper. g acts on the live
losses (they depend on theta), so its hypergradient flows through the loss values themselves.
"""

import keras
import tensorflow as tf

from tfaux.strategies.base import Strategy
from tfaux.upper import UpperSettings


class AuxiLearn(Strategy):
    bilevel = True
    upper_defaults = UpperSettings(learning_rate=1e-3, weight_decay=1e-4, clipnorm=25.0)

    def __init__(self, hidden=(10, 10), init_upper=1.0, skip=True, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.hidden, self.init_upper, self.skip, self.seed = tuple(hidden), init_upper, skip, seed

    def setup(self, tasks, feature_dim, num_examples):
        super().setup(tasks, feature_dim, num_examples)
        self.kernels, self.biases = [], []
        width = self.num_tasks
        for i, units in enumerate(self.hidden + (1,)):
            self.kernels.append(self.add_weight(
                shape=(width, units), name=f"kernel_{i}",
                initializer=keras.initializers.RandomUniform(0.0, self.init_upper, seed=self.seed + i)))
            self.biases.append(self.add_weight(shape=(units,), initializer="zeros", name=f"bias_{i}"))
            width = units

    def combine(self, losses):
        """g(l; phi) for every row of the [B, T] loss matrix; shape [B]."""
        h = losses
        for i, (k, b) in enumerate(zip(self.kernels, self.biases)):
            h = tf.matmul(h, k) + b
            if i < len(self.kernels) - 1:
                h = tf.nn.softplus(h)
        return h[:, 0]

    def lower_loss(self, losses, context):
        masked = losses * context.masks
        total = self.combine(masked)
        if self.skip:
            total += masked[:, 0]
        return tf.reduce_sum(total) / context.global_batch

    def after_upper_step(self):
        for k in self.kernels:
            k.assign(tf.maximum(k, 0.0))

    def get_config(self):
        return {**super().get_config(), "hidden": self.hidden, "init_upper": self.init_upper,
                "skip": self.skip, "seed": self.seed}
