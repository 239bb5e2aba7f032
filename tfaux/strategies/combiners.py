"""AuxiLearn's loss combiners g(l; phi) (seed 002, Sec. 3.2 "Model variants").

A combiner maps the [B, T] per-example loss matrix l (column 0 the main task) to g(l_i; phi)
for every example, shape [B]; the strategy adds the skip term l_main (tfaux.strategies.auxilearn).
A `pixelwise` combiner ("convnet") maps the [B, H, W, T] loss images instead (Context.loss_maps).
Its variables are created on the owning strategy with `owner.add_weight`, so they are the
strategy's upper variables phi, saved with the model under the strategy's name. `project()`
restores monotonicity after every upper step: negative weights are clipped to 0 (seed 002,
Sec. 3.2 "Monotonicity"), so g is non-decreasing in every loss.

Three variants are stacks of dense layers with non-negative kernels, as in the reference
code (AvivNavon/AuxiLearn, auxilearn/hypernet.py: MonoLinearHyperNet, and
MonoNonlinearHyperNet, whose activation is the identity for the deep linear variant):

    linear       g(l) = sum_j w_j l_j,                      w_j >= 0, init w_j = 1
    deep_linear  g(l) = l W_1 W_2 ... W_L,                  W >= 0, init U(0, init_upper), no biases
    nonlinear    g(l) = softplus(...softplus(l W_1 + b_1)...) W_L + b_L,  W >= 0, init U(0, init_upper), b = 0

and one is a CNN over the per-pixel loss image (Sec. 3.2 "Convolutional loss network"; reference
MonoNoFCCNNHyperNet, as its NYUv2 script experiments/nyuv2/trainer_cnn.py builds it):

    convnet      per example, the spatial mean of
                 conv1x1(pool(softplus(conv3x3(...pool(softplus(conv3x3(L) + b_1))...) + b_n)))
                 over the [H, W, T] loss image L, every kernel >= 0, init U(0, init_upper), b = 0

COMBINERS names them for `AuxiLearn(combiner=...)`; each has the same constructor, `__call__` and
`project`, and its own reference defaults (`default_hidden`, `default_init_upper`).
"""

import keras
import tensorflow as tf

from tfaux.upper import UpperSettings


class MonotoneDense:
    """g(l) = a(...a(l W_1 + b_1)...) W_L + b_L with every W >= 0 after `project` (seed 002, Sec. 3.2).

    Layer i is `kernel_i` (initialised by `kernel_initializer(i)`) and, if `use_bias`, `bias_i`
    (zeros), made by `owner.add_weight`; the activation a acts between layers, not after the last."""

    activation = None
    use_bias = True
    pixelwise = False  # input: the [B, T] loss matrix
    default_hidden, default_init_upper = (10, 10), 1.0  # the reference MLP's widths and U(0, 1) init

    def __init__(self, owner, num_tasks, hidden, kernel_initializer):
        self.kernels, self.biases = [], []
        width = num_tasks
        for i, units in enumerate(tuple(hidden) + (1,)):
            self.kernels.append(owner.add_weight(shape=(width, units), name=f"kernel_{i}",
                                                 initializer=kernel_initializer(i)))
            if self.use_bias:
                self.biases.append(owner.add_weight(shape=(units,), initializer="zeros", name=f"bias_{i}"))
            width = units

    def __call__(self, losses):
        """g(l_i; phi) for every row of the [B, T] loss matrix; shape [B]."""
        h = losses
        for i, k in enumerate(self.kernels):
            h = tf.matmul(h, k)
            if self.use_bias:
                h = h + self.biases[i]
            if self.activation is not None and i < len(self.kernels) - 1:
                h = self.activation(h)
        return h[:, 0]

    def project(self):
        """W <- max(W, 0): the reference code's clamp after every upper step (biases are free)."""
        for k in self.kernels:
            k.assign(tf.maximum(k, 0.0))


def _uniform(init_upper, seed):
    """Layer i's kernel initializer: U(0, init_upper), seeded seed + i (reference: U(0, 1), U(0, 0.2) in Pet)."""
    return lambda i: keras.initializers.RandomUniform(0.0, init_upper, seed=seed + i)


class Linear(MonotoneDense):
    """"Linear": g(l) = sum_j w_j l_j, one non-negative weight per task, every w_j initialised
    to 1 (reference MonoLinearHyperNet, init_value=1, no bias). j runs over the whole loss
    vector, main loss included (Sec. 3.2), so with the skip term L_T = (1 + w_main) l_main +
    sum_k w_k l_k. `hidden`, `init_upper` and `seed` do not apply."""

    use_bias = False

    def __init__(self, owner, num_tasks, hidden=(), init_upper=None, seed=None):
        del hidden, init_upper, seed
        super().__init__(owner, num_tasks, (), lambda i: "ones")

    @property
    def task_weights(self):
        """[T]: w_j of every task."""
        return self.kernels[0][:, 0]


class DeepLinear(MonotoneDense):
    """"Deep linear": dense layers of widths `hidden` with identity activations and no
    biases (reference MonoNonlinearHyperNet with Identity, which drops the biases),
    kernels U(0, init_upper). Equivalent to Linear with w = W_1 ... W_L >= 0, but
    over-parameterised (seed 002, Sec. 5, "Model variants")."""

    use_bias = False

    def __init__(self, owner, num_tasks, hidden=(10, 10), init_upper=1.0, seed=0):
        super().__init__(owner, num_tasks, hidden, _uniform(init_upper, seed))

    @property
    def task_weights(self):
        """[T]: the product W_1 ... W_L, the equivalent linear weights."""
        product = self.kernels[0]
        for k in self.kernels[1:]:
            product = tf.matmul(product, k)
        return product[:, 0]


class Nonlinear(MonotoneDense):
    """"Nonlinear": dense layers of widths `hidden`, Softplus between them, biases 0 at
    init, kernels U(0, init_upper) (reference MonoNonlinearHyperNet)."""

    activation = staticmethod(tf.nn.softplus)

    def __init__(self, owner, num_tasks, hidden=(10, 10), init_upper=1.0, seed=0):
        super().__init__(owner, num_tasks, hidden, _uniform(init_upper, seed))


class ConvNet:
    """"ConvNet" (Sec. 3.2 "Convolutional loss network", Sec. 5.3): a CNN over the loss image, each
    task a channel. Reference MonoNoFCCNNHyperNet (NYUv2, trainer_cnn.py): for every width of
    `hidden` ((8, 16) there) a 3x3 convolution (zero 'same' padding, stride 1, bias), Softplus and a
    2x2 average pooling (stride 2, odd edges dropped); then a 1x1 convolution to one channel without
    bias. Kernels U(0, init_upper) (0.1 there), biases 0. g_i is the mean of the final map over its
    positions (the reference's reduction 'mean'), so g is monotone non-decreasing in every pixel loss
    once every kernel is >= 0. Reference upper update: SGD(1e-4, momentum 0.9), weight decay 1e-5,
    clip 100 (with Neumann alpha 1e-4 = the lower learning rate, a step every 50 lower steps)."""

    pixelwise = True  # input: the [B, H, W, T] loss images
    default_hidden, default_init_upper = (8, 16), 0.1
    upper_defaults = UpperSettings(learning_rate=1e-4, weight_decay=1e-5, clipnorm=100.0)

    def __init__(self, owner, num_tasks, hidden=(8, 16), init_upper=0.1, seed=0):
        init = _uniform(init_upper, seed)
        self.kernels, self.biases = [], []
        width = num_tasks
        for i, units in enumerate(tuple(hidden)):
            self.kernels.append(owner.add_weight(shape=(3, 3, width, units), name=f"kernel_{i}", initializer=init(i)))
            self.biases.append(owner.add_weight(shape=(units,), initializer="zeros", name=f"bias_{i}"))
            width = units
        self.kernels.append(owner.add_weight(shape=(1, 1, width, 1), name=f"kernel_{len(hidden)}",
                                             initializer=init(len(hidden))))

    def __call__(self, maps):
        """g_i = mean over positions of the CNN's one-channel map of loss image i; maps [B, H, W, T], shape [B]."""
        shrink = 2 ** len(self.biases)
        height, width = maps.shape[1], maps.shape[2]
        if (height is not None and height < shrink) or (width is not None and width < shrink):
            raise ValueError(f"combiner='convnet' pools {len(self.biases)} times by 2, so it needs loss images "
                             f"of at least {shrink}x{shrink} pixels, got {height}x{width}.")
        h = maps
        for k, b in zip(self.kernels[:-1], self.biases):
            h = tf.nn.softplus(tf.nn.conv2d(h, k, strides=1, padding="SAME") + b)
            h = tf.nn.avg_pool2d(h, ksize=2, strides=2, padding="VALID")
        h = tf.nn.conv2d(h, self.kernels[-1], strides=1, padding="VALID")
        return tf.reduce_mean(h, axis=[1, 2, 3])

    def project(self):
        """Every kernel <- max(kernel, 0) (reference `clamp`, biases free)."""
        for k in self.kernels:
            k.assign(tf.maximum(k, 0.0))


COMBINERS = {"linear": Linear, "deep_linear": DeepLinear, "nonlinear": Nonlinear, "convnet": ConvNet}


def check(name):
    """`name` if it is a combiner, else a one-sentence ValueError listing the choices."""
    if name not in COMBINERS:
        raise ValueError(f"AuxiLearn has no combiner '{name}'; choose one of: {', '.join(sorted(COMBINERS))}.")
    return name
