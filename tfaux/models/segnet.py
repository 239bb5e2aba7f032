"""SegNet encoder-decoder (Badrinarayanan et al., 2017), as the shared backbone of seed 002's
NYUv2 experiment (its SegNetSplit, after MTAN): a feature map [B, H, W, filters[0]] that every
dense task head reads.

Level i of the encoder is conv-BN-ReLU blocks at width filters[i] (2 blocks at levels 0 and 1,
3 deeper), then a 2x2 max-pool that remembers where each maximum was; the decoder mirrors it:
max-unpooling to those positions (zeros elsewhere), then as many blocks as encoder level i has,
at width filters[i - 1] (filters[0] at level 0). H and W must be divisible by 2^len(filters).
"""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="tfaux")
class MaxPoolWithMask(keras.layers.Layer):
    """2x2 max-pool, stride 2: y[b, i, j, c] = x[b, 2i + a*, 2j + d*, c] with (a*, d*) the first
    maximum of the window in row-major order (PyTorch's MaxPool2d choice), and the one-hot mask
    of that position, shaped [B, H/2, W/2, C, 4]. y is a masked sum, so its gradient (of any
    order) reaches the chosen pixel only."""

    def call(self, x):
        windows = _windows(x)
        mask = tf.stop_gradient(tf.one_hot(tf.argmax(windows, axis=-1), 4, dtype=x.dtype))
        return tf.reduce_sum(windows * mask, -1), mask


@keras.saving.register_keras_serializable(package="tfaux")
class MaxUnpool(keras.layers.Layer):
    """Inverse of MaxPoolWithMask: u[b, 2i + a, 2j + d, c] = y[b, i, j, c] at the remembered
    position of each window, 0 at the three others."""

    def call(self, y, mask):
        s = tf.shape(y)
        u = tf.reshape(y[..., None] * mask, [s[0], s[1], s[2], s[3], 2, 2])
        u = tf.transpose(u, [0, 1, 4, 2, 5, 3])
        return tf.reshape(u, [s[0], 2 * s[1], 2 * s[2], s[3]])


def _windows(x):
    """[B, H, W, C] -> [B, H/2, W/2, C, 4]: the 2x2 windows, row-major within each."""
    s = tf.shape(x)
    w = tf.reshape(x, [s[0], s[1] // 2, 2, s[2] // 2, 2, s[3]])
    w = tf.transpose(w, [0, 1, 3, 5, 2, 4])
    return tf.reshape(w, [s[0], s[1] // 2, s[2] // 2, s[3], 4])


def _block(width, name):
    """Conv 3x3 (Xavier-normal, as the reference) - BatchNorm (PyTorch momentum 0.1, i.e. Keras
    0.9, synchronised across replicas) - ReLU."""
    return keras.Sequential([
        keras.layers.Conv2D(width, 3, padding="same", use_bias=False, kernel_initializer="glorot_normal"),
        keras.layers.BatchNormalization(momentum=0.9, synchronized=True),
        keras.layers.ReLU()], name=name)


def _depth(level):
    """Blocks per level (the reference: 2 at levels 0-1, 3 deeper)."""
    return 2 if level < 2 else 3


def segnet(input_shape=(288, 384, 3), filters=(64, 128, 256, 512, 1024), name="segnet"):
    """The SegNet backbone of seed 002's NYUv2 code: a keras Model from images [B, H, W, 3] to
    features [B, H, W, filters[0]]. Default widths are the reference's (its last level is 1024;
    MTAN's SegNet uses 512); a small CPU version: filters=(8, 16)."""
    filters = tuple(int(f) for f in filters)
    if not filters or min(filters) < 1:
        raise ValueError(f"segnet needs positive filter widths, got {filters}.")
    h, w = input_shape[0], input_shape[1]
    scale = 2 ** len(filters)
    if h % scale or w % scale:
        raise ValueError(f"segnet with {len(filters)} levels needs H and W divisible by {scale}, got {h}x{w}.")
    x = inputs = keras.Input(shape=tuple(input_shape))
    masks = []
    for i, width in enumerate(filters):
        for j in range(_depth(i)):
            x = _block(width, f"enc{i}_{j}")(x)
        x, mask = MaxPoolWithMask(name=f"pool{i}")(x)
        masks.append(mask)
    for i in reversed(range(len(filters))):
        x = MaxUnpool(name=f"unpool{i}")(x, masks[i])
        for j in range(_depth(i)):
            x = _block(filters[max(i - 1, 0)], f"dec{i}_{j}")(x)
    return keras.Model(inputs, x, name=name)
