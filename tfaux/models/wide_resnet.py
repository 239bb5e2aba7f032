"""Wide ResNet WRN-d-k (Zagoruyko & Komodakis 2016), in the semi-supervised variant of Oliver
et al. (2018, "Realistic Evaluation of Deep Semi-Supervised Learning Algorithms") that seed 003
uses for S4L on CIFAR-10 and SVHN: pre-activation blocks with batch normalisation and leaky ReLU
(slope 0.1), WRN-28-2 by default."""

import keras

_CONV_INIT = keras.initializers.VarianceScaling(2.0, mode="fan_out", distribution="untruncated_normal")
LEAKY_SLOPE = 0.1


def _bn_act(x, name):
    """BatchNorm (synchronised across replicas; Oliver et al.'s momentum 0.999) then leaky ReLU."""
    x = keras.layers.BatchNormalization(momentum=0.999, epsilon=1e-3, synchronized=True, name=f"{name}_bn")(x)
    return keras.layers.LeakyReLU(negative_slope=LEAKY_SLOPE, name=f"{name}_act")(x)


def _conv(x, filters, kernel, stride, name):
    return keras.layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                               kernel_initializer=_CONV_INIT, name=name)(x)


def _block(x, filters, stride, name):
    """Pre-activation residual block: BN-LReLU-conv3x3-BN-LReLU-conv3x3 + shortcut (a 1x1 conv of
    the activated input when the shape changes)."""
    a = _bn_act(x, f"{name}_pre")
    h = _conv(a, filters, 3, stride, f"{name}_conv1")
    h = _conv(_bn_act(h, f"{name}_mid"), filters, 3, 1, f"{name}_conv2")
    shortcut = x if (stride == 1 and x.shape[-1] == filters) else _conv(a, filters, 1, stride, f"{name}_short")
    return keras.layers.Add(name=f"{name}_add")([h, shortcut])


def wide_resnet(depth=28, width=2, input_shape=(None, None, 3), name=None):
    """WRN-depth-width encoder: a 3x3 conv of 16 channels, three stages of (depth - 4) / 6 blocks
    with 16k, 32k, 64k channels (stages 2 and 3 start with stride 2), BN-LReLU, global average
    pool -> 64k features (128 for WRN-28-2; no classifier)."""
    if depth < 10 or (depth - 4) % 6:
        raise ValueError(f"wide_resnet depth must be 6n + 4 with n >= 1 (e.g. 28), got {depth}.")
    if int(width) != width or width < 1:
        raise ValueError(f"wide_resnet width must be a whole number >= 1, got {width}.")
    blocks, width = (depth - 4) // 6, int(width)
    inputs = keras.Input(shape=input_shape, name="image")
    x = _conv(inputs, 16, 3, 1, "stem_conv")
    for stage, filters in enumerate((16 * width, 32 * width, 64 * width)):
        for b in range(blocks):
            x = _block(x, filters, 2 if (stage > 0 and b == 0) else 1, f"stage{stage + 1}_block{b + 1}")
    x = _bn_act(x, "final")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, x, name=name or f"wrn{depth}_{width}")
