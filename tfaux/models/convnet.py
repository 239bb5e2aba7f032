"""ConvNet-4 (seed 000, Appendix A.4)."""

import keras


def convnet4(channels=32, name="convnet4"):
    """Four [Conv 3x3 (channels), BatchNorm, ReLU] blocks, 2x2 max-pool after the
    2nd and the 4th, then flatten. BatchNorm uses PyTorch's default momentum (0.1, i.e. Keras 0.9) as the reference code does, and is synchronised across replicas, so a
    MirroredStrategy run normalises with the same (global) batch statistics as one device."""
    layers = []
    for i in range(4):
        layers += [keras.layers.Conv2D(channels, 3, padding="same", use_bias=False),
                   keras.layers.BatchNormalization(momentum=0.9, synchronized=True),
                   keras.layers.ReLU()]
        if i in (1, 3):
            layers.append(keras.layers.MaxPooling2D(2))
    layers.append(keras.layers.Flatten())
    return keras.Sequential(layers, name=name)
