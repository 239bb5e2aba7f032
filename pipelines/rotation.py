"""The self-supervised 4-way rotation auxiliary task (Gidaris et al., 2018)."""

import tensorflow as tf

from tfaux.tasks import Task

NAME = "rotation"


def rotation_task():
    """Predict k from rot90(x, k), k in {0, 1, 2, 3}; the head reads `task_x["rotation"]`."""
    return Task(NAME, role="auxiliary", kind="classification", num_classes=4, input_key=NAME)


def eval_k(example_id):
    """Deterministic rotation of a non-training example: k = id % 4."""
    return tf.cast(tf.math.floormod(example_id, 4), tf.int32)


def random_k(random_int64):
    """Training rotation from one draw of a seeded random stream (fresh every epoch)."""
    return tf.cast(tf.math.floormod(random_int64, 4), tf.int32)


def add_rotation(element, k):
    """Add the rotated copy of element["x"], its label k and a mask of 1 (self-supervised)."""
    x = element["x"]
    element = dict(element)
    element["task_x"] = {**element.get("task_x", {}), NAME: tf.ensure_shape(tf.image.rot90(x, k), x.shape)}
    element["labels"] = {**element["labels"], NAME: k}
    element["mask"] = {**element["mask"], NAME: tf.constant(1.0)}
    return element
