"""ResNet-18 (He et al. 2016, "Deep Residual Learning for Image Recognition", Sec. 4.1, Table 1)."""

import os

import keras

# torchvision's ResNet initialisation: Kaiming-normal, fan-out, ReLU gain.
_CONV_INIT = keras.initializers.VarianceScaling(2.0, mode="fan_out", distribution="untruncated_normal")
STEMS = ("cifar", "imagenet")


def _conv(x, filters, kernel, stride, name):
    """Conv without bias, padded like PyTorch (kernel // 2 on every side) so strided
    convolutions sample the same pixels as the reference implementations."""
    if kernel > 1:
        x = keras.layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
    return keras.layers.Conv2D(filters, kernel, strides=stride, padding="valid", use_bias=False,
                               kernel_initializer=_CONV_INIT, name=name)(x)


def _bn(x, name):
    """BatchNorm with PyTorch's defaults (momentum 0.1, i.e. Keras 0.9; epsilon 1e-5),
    synchronised across replicas so MirroredStrategy normalises with global batch statistics."""
    return keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, synchronized=True, name=name)(x)


def _basic_block(x, filters, stride, name):
    """BasicBlock: [3x3 conv, BN, ReLU, 3x3 conv, BN] + shortcut, ReLU. The shortcut is a
    1x1 conv + BN when the shape changes (option B of the paper)."""
    shortcut = x
    h = keras.layers.ReLU(name=f"{name}_relu1")(_bn(_conv(x, filters, 3, stride, f"{name}_conv1"), f"{name}_bn1"))
    h = _bn(_conv(h, filters, 3, 1, f"{name}_conv2"), f"{name}_bn2")
    if stride != 1 or x.shape[-1] != filters:
        shortcut = _bn(_conv(x, filters, 1, stride, f"{name}_down_conv"), f"{name}_down_bn")
    return keras.layers.ReLU(name=f"{name}_out")(keras.layers.Add(name=f"{name}_add")([h, shortcut]))


def resnet18(stem="cifar", weights=None, input_shape=(None, None, 3), name="resnet18"):
    """ResNet-18 encoder: stem, four stages of two BasicBlocks (64, 128, 256, 512 channels;
    stages 2-4 start with stride 2), global average pool -> 512 features (no fc layer).

    stem:    "cifar": 3x3 conv, stride 1, no max-pool (the CIFAR ResNet-18 of the JTDS /
             AuxiLearn code); "imagenet": 7x7 conv, stride 2, then 3x3 max-pool, stride 2.
    weights: None (random initialisation) or the path of a Keras `.weights.h5` file saved
             from a resnet18 of the same stem; nothing is ever downloaded.
    """
    if stem not in STEMS:
        raise ValueError(f"resnet18 stem must be one of {STEMS}, got '{stem}'.")
    if weights is not None:
        weights = os.fspath(weights)
        if not os.path.isfile(weights):
            raise ValueError(f"resnet18 weights file '{weights}' does not exist.")
        if not weights.endswith(".weights.h5"):
            raise ValueError(f"resnet18 weights file '{weights}' must be a Keras '.weights.h5' file.")
    inputs = keras.Input(shape=input_shape, name="image")
    if stem == "cifar":
        x = _conv(inputs, 64, 3, 1, "stem_conv")
    else:
        x = _conv(inputs, 64, 7, 2, "stem_conv")
    x = keras.layers.ReLU(name="stem_relu")(_bn(x, "stem_bn"))
    if stem == "imagenet":
        # Zero padding equals PyTorch's -inf padding here: the input is post-ReLU (>= 0).
        x = keras.layers.ZeroPadding2D(1, name="stem_pool_pad")(x)
        x = keras.layers.MaxPooling2D(3, strides=2, name="stem_pool")(x)
    for stage, filters in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            stride = 2 if stage > 1 and block == 0 else 1
            x = _basic_block(x, filters, stride, f"layer{stage}_{block}")
    features = keras.layers.GlobalAveragePooling2D(name="avgpool")(x)
    model = keras.Model(inputs, features, name=name)
    if weights is not None:
        try:
            model.load_weights(weights)
        except Exception as e:  # h5py / keras: truncated, not HDF5, or another architecture
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ValueError(f"resnet18 weights file '{weights}' cannot be loaded into a {stem}-stem "
                             f"ResNet-18 ({reason}).") from None
    return model
