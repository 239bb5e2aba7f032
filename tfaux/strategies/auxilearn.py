"""AuxiLearn: a learned monotone loss combiner (seed 002, Sec. 3.2).

    L_T = (1/B) sum_i [ l_main,i + g(l_i; phi) ],   l_i = (l_main,i, l_1,i, ..., l_K,i)

g is one of tfaux.strategies.combiners.COMBINERS ("nonlinear" by default: an MLP with Softplus
activations; "linear": sum_j w_j l_j; "deep_linear": a product of linear layers), whose weights
are clamped to >= 0 after every upper step (monotone in every loss); the skip term l_main keeps
the main task's gradient whatever g does. Reference init: weights U(0, 1) (linear: 1), biases 0,
hidden [10, 10]. Upper update (reference NYUv2 combiner runs): SGD(1e-3, momentum 0.9),
weight decay 1e-4, clip 25, in the reference scale of tfaux.upper. g acts on the live
losses (they depend on theta), so its hypergradient flows through the loss values themselves.

"convnet" (Sec. 3.2 "Convolutional loss network", Sec. 5.3) acts on the loss images instead,
L[i] = Context.loss_maps[i] ([H, W, T], every task dense), and its skip term is the main task's
loss image averaged over all H x W pixels, as the reference (MonoNoFCCNNHyperNet, reduction
'mean'; unlabelled pixels count as 0):

    L_T = (1/B) sum_i [ (1/HW) sum_hw L[i, h, w, main] + g(L[i]; phi) ]

Its reference defaults: hidden (8, 16), kernels U(0, 0.1); upper SGD(1e-4, momentum 0.9), weight
decay 1e-5, clip 100 (experiments/nyuv2/trainer_cnn.py).
"""

import keras
import tensorflow as tf

from tfaux.strategies import combiners
from tfaux.strategies.base import Strategy
from tfaux.upper import UpperSettings


@keras.saving.register_keras_serializable(package="tfaux")
class AuxiLearn(Strategy):
    """combiner: a name in COMBINERS; hidden, init_upper, seed: its layer widths, U(0, init_upper)
    kernel init and seed (nonlinear, deep_linear and convnet; None: the combiner's reference
    defaults); skip: add l_main to g."""

    bilevel = True
    upper_defaults = UpperSettings(learning_rate=1e-3, weight_decay=1e-4, clipnorm=25.0)

    def __init__(self, combiner="nonlinear", hidden=None, init_upper=None, skip=True, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.combiner_name = combiners.check(combiner)
        kind = combiners.COMBINERS[self.combiner_name]
        self.hidden = tuple(kind.default_hidden if hidden is None else hidden)
        self.init_upper = kind.default_init_upper if init_upper is None else init_upper
        self.skip, self.seed = skip, seed
        self.pixelwise = kind.pixelwise
        if getattr(kind, "upper_defaults", None) is not None:
            self.upper_defaults = kind.upper_defaults  # the combiner's own reference upper update

    def setup(self, tasks, feature_dim, num_examples):
        super().setup(tasks, feature_dim, num_examples)
        flat = [t.name for t in self.tasks if not t.is_dense]
        if self.pixelwise and flat:
            raise ValueError(f"combiner='{self.combiner_name}' needs every task per-pixel (dense); "
                             f"tasks {flat} are not.")
        self.combiner = combiners.COMBINERS[self.combiner_name](
            self, self.num_tasks, hidden=self.hidden, init_upper=self.init_upper, seed=self.seed)

    @property
    def kernels(self):
        """The combiner's kernels (weight matrices or convolution kernels), the ones kept >= 0."""
        return self.combiner.kernels

    def combine(self, losses):
        """g(l; phi) for every row of the [B, T] loss matrix (convnet: every [H, W, T] loss image of
        [B, H, W, T]); shape [B]."""
        return self.combiner(losses)

    def lower_loss(self, losses, context):
        """L_T = (1/B) sum_i [l_main,i + g(l_i; phi)] over the masked losses (seed 002, Sec. 3.2);
        convnet: over the loss images, with the pixel-mean main loss as skip term."""
        if self.pixelwise:
            return self._pixelwise_loss(context)
        masked = losses * context.masks
        total = self.combine(masked)
        if self.skip:
            total += masked[:, 0]
        return tf.reduce_sum(total) / context.global_batch

    def _pixelwise_loss(self, context):
        """L_T = (1/B) sum_i [(1/HW) sum_hw L[i, h, w, 0] + g(L[i]; phi)] (Sec. 3.2, loss images)."""
        maps = context.loss_maps
        if maps is None:
            raise ValueError(f"combiner='{self.combiner_name}' needs one loss image per example, so every task "
                             "must run and be dense with the same height and width.")
        total = self.combine(maps)
        if self.skip:
            total += tf.reduce_mean(maps[..., 0], axis=[1, 2])
        return tf.reduce_sum(total) / context.global_batch

    def after_upper_step(self):
        self.combiner.project()

    def get_config(self):
        return {**super().get_config(), "combiner": self.combiner_name, "hidden": self.hidden,
                "init_upper": self.init_upper, "skip": self.skip, "seed": self.seed}
