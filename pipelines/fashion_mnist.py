"""Fashion-MNIST (Xiao et al., 2017) from its idx files in --data_dir (each optionally .gz), or from TFDS.

The files have MNIST's names and format (train-images-idx3-ubyte, train-labels-idx1-ubyte,
t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte) and are read by pipelines.mnist's reader: with
both the train and t10k pairs the official train/test split is kept (val is carved from
train); with only one pair its examples are the whole pool. Without --data_dir: the TFDS
builder `fashion_mnist` from a prepared TFDS copy (never downloaded).
"""

from pathlib import Path

import numpy as np

from pipelines import images, mnist
from pipelines.contract import Source, register
from pipelines.errors import DataError
from tfaux.tasks import Task

PAIRS = mnist.PAIRS
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
FILES = ", ".join(PAIRS["train"] + PAIRS["test"])


def _from_dir(data_dir):
    """(images [N, 28, 28, 1] uint8, labels [N] int32, official split or None) from the idx files."""
    data_dir = Path(data_dir)
    if data_dir.is_dir() and not any(mnist._find(data_dir, stem) for stem in PAIRS["train"] + PAIRS["test"]):
        raise DataError(f"--data_dir {data_dir} holds no Fashion-MNIST idx files (expected {FILES}, each "
                        f"optionally .gz, as Fashion-MNIST publishes them).")
    return mnist._from_dir(data_dir)  # existence, pairs, headers, sizes and labels checked there


def _from_tfds():
    """The same arrays from a prepared TFDS `fashion_mnist` (never downloaded; a DataError naming
    --data_dir otherwise). Read through pipelines.images.tfds_source, which streams the splits in
    batches (tfds.load(batch_size=-1), as pipelines.mnist uses, aborts the process on mocked data)."""
    cols, split, _ = images.tfds_source("fashion_mnist", None, raw_hint=f"the Fashion-MNIST idx files ({FILES}, "
                                        f"each optionally .gz)")
    return cols["image"].astype(np.uint8), cols["label"].astype(np.int32), split


@register("fashion_mnist")
def load_fashion_mnist(data_dir=None):
    """Fashion-MNIST as uint8 [N, 28, 28, 1] images with one primary task "label" (10 classes, CLASSES)."""
    x, labels, split = _from_dir(data_dir) if data_dir is not None else _from_tfds()
    return Source(name="fashion_mnist",
                  tasks=[Task("label", role="primary", kind="classification", num_classes=10)],
                  features=np.ascontiguousarray(x), labels={"label": labels}, official_split=split,
                  is_image=True, image_shape=tuple(x.shape[1:]))
