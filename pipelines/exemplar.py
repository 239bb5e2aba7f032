"""The self-supervised Exemplar-MT auxiliary task of S4L (Zhai et al. 2019) as ARML uses it
(seed 003, Sec. 3.1): "each image is randomly augmented, and then features of original image
and augmented image are encouraged to be close".

The augmented copy (task_x["exemplar"]) is a random horizontal flip, additive Gaussian noise
(std 0.1 on pixels in [0, 1]) and Cutout (DeVries & Taylor 2017: one square of half the image
side, at a uniformly drawn centre, set to 0, clipped at the border), drawn from a stateless
seed: fresh every training epoch, fixed by the example id elsewhere. The copy is served in the
image's raw pixel scale, like x, so the model's preprocessing normalises both alike. The task (kind
"consistency", tfaux.tasks) pulls the encoder's features of the two copies together; the seed
leaves the distance open, so tfaux uses 1 - cos (scale-free, so shrinking the features cannot
satisfy it) — our choice.
"""

import tensorflow as tf

from tfaux.tasks import Task

NAME = "exemplar"
NOISE_STD = 0.1


def exemplar_task():
    return Task(NAME, role="auxiliary", kind="consistency", input_key=NAME)


def augmented(x, seed):
    """Flip, Gaussian noise and Cutout of one image x [H, W, C] in [0, 1]; seed: int64 [2]."""
    flip_seed, noise_seed, cut_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    x = tf.image.stateless_random_flip_left_right(x, seed=flip_seed)
    x = x + NOISE_STD * tf.random.stateless_normal(tf.shape(x), seed=noise_seed, dtype=x.dtype)
    h, w = tf.shape(x)[0], tf.shape(x)[1]
    centre = tf.random.stateless_uniform([2], seed=cut_seed, minval=0, maxval=tf.int32.max, dtype=tf.int32)
    cy, cx = centre[0] % h, centre[1] % w
    half = tf.maximum(tf.minimum(h, w) // 4, 1)  # a square of side h / 2
    rows, cols = tf.range(h)[:, None], tf.range(w)[None, :]
    inside = (tf.abs(rows - cy) < half) & (tf.abs(cols - cx) < half)
    return tf.where(inside[:, :, None], tf.zeros_like(x), x)


def add_exemplar(element, seed, scale):
    """Add the augmented copy of the image element["x"] (raw pixels, full intensity `scale`;
    augmented in [0, 1], then scaled back), a placeholder label and a mask of 1 (self-supervised)."""
    element = dict(element)
    x = element["x"]
    copy = tf.ensure_shape(augmented(x / scale, seed) * scale, x.shape)
    element["task_x"] = {**element.get("task_x", {}), NAME: copy}
    element["labels"] = {**element["labels"], NAME: tf.constant(0.0)}
    element["mask"] = {**element["mask"], NAME: tf.constant(1.0)}
    return element
