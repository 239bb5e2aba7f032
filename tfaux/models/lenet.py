"""LeNet shared encoder for Multi-MNIST (seed 004, "Network Architecture" of its Multi-MNIST
experiment; the MultiLeNet of Sener & Koltun 2018, "Multi-Task Learning as Multi-Objective
Optimization", Sec. 6.1 and their code's `MultiLeNetR`)."""

import keras


def lenet(input_shape=(28, 28, 1), dropout=0.5, name="lenet"):
    """Conv(10, 5x5) -> MaxPool 2 -> ReLU -> Conv(20, 5x5) -> SpatialDropout2D(0.5) ->
    MaxPool 2 -> ReLU -> Flatten -> Dense(50) + ReLU: 50 features (320 flattened on 28x28x1).

    Sener & Koltun drop whole channels (Dropout2d) with one mask shared by the batch and
    by both tasks; SpatialDropout2D draws a channel mask per example.
    """
    return keras.Sequential([
        keras.Input(shape=input_shape, name="image"),
        keras.layers.Conv2D(10, 5, name="conv1"),
        keras.layers.MaxPooling2D(2, name="pool1"),
        keras.layers.ReLU(name="relu1"),
        keras.layers.Conv2D(20, 5, name="conv2"),
        keras.layers.SpatialDropout2D(dropout, name="conv2_drop"),
        keras.layers.MaxPooling2D(2, name="pool2"),
        keras.layers.ReLU(name="relu2"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(50, activation="relu", name="fc"),
    ], name=name)
