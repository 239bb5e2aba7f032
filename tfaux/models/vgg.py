"""VGG-16 with batch normalisation, the CIFAR variant of MAXL (Liu et al. 2019) that seed 002 uses
for CIFAR-10 / CIFAR-100 in Sec. 5.4, Table 3 ("VGG-16 based architecture", App. B.3).

The MAXL reference code (lorenmt/maxl, `model_vgg_maxl.py`, class VGG16) builds five blocks of
3x3 convolutions (padding 1, with bias) each followed by BatchNorm and ReLU: two convolutions of
64 and two of 128 channels, then three of 256, 512 and 512, a 2x2 max-pool (stride 2) closing
every block: 13 convolutions and 5 pools, the convolutional part of Simonyan & Zisserman's
configuration D with BN (torchvision's vgg16_bn `features`: 14,714,688 convolution and 8,448
BatchNorm scale/shift parameters). On 32x32 inputs the last map is 1x1x512 and MAXL flattens it;
here it is globally average-pooled, which is the same 512 features at 32x32 and stays 512 on
larger inputs. The classifier (MAXL: Linear 512 -> 512, ReLU, Linear -> classes per task) is not
part of the encoder: it is each task's head (tfaux.Task head_units).
Initialisation: Glorot-uniform kernels, zero biases, BN gamma 1 / beta 0 (MAXL's
xavier_uniform_ / constant_), BN momentum 0.1 in PyTorch's convention (Keras 0.9), epsilon 1e-5.
"""

import keras

# (channels, convolutions) of the five blocks (configuration D).
BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))


def vgg16(input_shape=(None, None, 3), name="vgg16"):
    """VGG-16-BN encoder: 13 [3x3 conv (bias), BN, ReLU] in five blocks, each closed by a 2x2
    max-pool, then global average pooling -> 512 features. Inputs need height and width >= 32."""
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    for b, (channels, convs) in enumerate(BLOCKS, start=1):
        for c in range(1, convs + 1):
            x = keras.layers.Conv2D(channels, 3, padding="same", use_bias=True, kernel_initializer="glorot_uniform",
                                    name=f"block{b}_conv{c}")(x)
            x = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, synchronized=True,
                                                name=f"block{b}_bn{c}")(x)
            x = keras.layers.ReLU(name=f"block{b}_relu{c}")(x)
        x = keras.layers.MaxPooling2D(2, name=f"block{b}_pool")(x)
    outputs = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, outputs, name=name)
