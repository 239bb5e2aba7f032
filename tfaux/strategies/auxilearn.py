"""AuxiLearn: a learned monotone loss combiner (seed 002, Sec. 3.2).

    L_T = (1/B) sum_i [ l_main,i + g(l_i; phi) ],   l_i = (l_main,i, l_1,i, ..., l_K,i)

g is one of tfaux.strategies.combiners.COMBINERS ("nonlinear" by default: an MLP with Softplus
activations; "linear": sum_j w_j l_j; "deep_linear": a product of linear layers), whose weights
are clamped to >= 0 after every upper step (monotone in every loss); the skip term l_main keeps
the main task's gradient whatever g does. Reference init: weights U(0, 1) (linear: 1), biases 0,
hidden [10, 10]. Upper update (reference NYUv2 combiner runs): SGD(1e-3, momentum 0.9),
weight decay 1e-4, clip 25, in the reference scale of tfaux.upper. g acts on the live
losses (they depend on theta), so its hypergradient flows through the loss values themselves.
"""

import tensorflow as tf

from tfaux.strategies import combiners
from tfaux.strategies.base import Strategy
from tfaux.upper import UpperSettings


class AuxiLearn(Strategy):
    """combiner: a name in COMBINERS; hidden, init_upper, seed: its layer widths, U(0, init_upper)
    kernel init and seed (nonlinear and deep_linear); skip: add l_main to g."""

    bilevel = True
    upper_defaults = UpperSettings(learning_rate=1e-3, weight_decay=1e-4, clipnorm=25.0)

    def __init__(self, combiner="nonlinear", hidden=(10, 10), init_upper=1.0, skip=True, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.combiner_name = combiners.check(combiner)
        self.hidden, self.init_upper, self.skip, self.seed = tuple(hidden), init_upper, skip, seed

    def setup(self, tasks, feature_dim, num_examples):
        super().setup(tasks, feature_dim, num_examples)
        self.combiner = combiners.COMBINERS[self.combiner_name](
            self, self.num_tasks, hidden=self.hidden, init_upper=self.init_upper, seed=self.seed)

    @property
    def kernels(self):
        """The combiner's weight matrices, the ones kept >= 0."""
        return self.combiner.kernels

    def combine(self, losses):
        """g(l; phi) for every row of the [B, T] loss matrix; shape [B]."""
        return self.combiner(losses)

    def lower_loss(self, losses, context):
        """L_T = (1/B) sum_i [l_main,i + g(l_i; phi)] over the masked losses (seed 002, Sec. 3.2)."""
        masked = losses * context.masks
        total = self.combine(masked)
        if self.skip:
            total += masked[:, 0]
        return tf.reduce_sum(total) / context.global_batch

    def after_upper_step(self):
        self.combiner.project()

    def get_config(self):
        return {**super().get_config(), "combiner": self.combiner_name, "hidden": self.hidden,
                "init_upper": self.init_upper, "skip": self.skip, "seed": self.seed}
