"""Multi-MNIST (Sener & Koltun, 2018): two MNIST digits per image; "top_left" primary, "bottom_right" auxiliary.

Built as their reference loader does: digit i at rows/cols 0:28 of a 36x36 canvas, a randomly
drawn digit j at 6:34 (overlapping pixels take the maximum), then a nearest-neighbour resize to
28x28. Pairs are drawn per split with numpy's default_rng(seed), so a seed gives the same data.
Source: MNIST idx files in --data_dir (train-*/t10k-* images/labels, optionally .gz), or TFDS `mnist`.
"""

import os
from pathlib import Path

import numpy as np

from pipelines import images
from pipelines.contract import Source
from pipelines.errors import DataError
from pipelines.mnist import PAIRS, read_pair
from tfaux.tasks import Task

HINT = "the MNIST idx files (train-images-idx3-ubyte.gz, t10k-images-idx3-ubyte.gz, ... labels)"


def _raw(data_dir):
    """{split: (images [N, 28, 28], labels [N])} from idx files (pipelines.mnist's reader); None if none."""
    parts = {s: read_pair(Path(data_dir), s) for s in PAIRS}
    return {s: (p[0], p[1].astype(np.int64)) for s, p in parts.items() if p is not None} or None


def combine(x, y, rng):
    """The Multi-MNIST images of one split: x [N, 28, 28] uint8 -> [N, 28, 28] uint8, labels (left, right)."""
    right = rng.integers(0, len(x), size=len(x))
    canvas = np.zeros((len(x), 36, 36), np.uint8)
    canvas[:, 0:28, 0:28] = x
    canvas[:, 6:34, 6:34] = np.maximum(canvas[:, 6:34, 6:34], x[right])
    idx = ((np.arange(28) + 0.5) * 36 / 28).astype(int)  # nearest-neighbour sampling, as PIL does
    return canvas[:, idx][:, :, idx], y, y[right]


def load_multi_mnist(data_dir=None, seed=0):
    """Multi-MNIST: tasks "top_left" (primary) and "bottom_right" (auxiliary), 10 classes each."""
    parts = None
    if data_dir is not None:
        images.check_dir(data_dir, "multi_mnist")
        parts = _raw(data_dir) or _raw(os.path.join(data_dir, "mnist"))
    if parts is None:
        cols, split, _ = images.tfds_source("mnist", data_dir, raw_hint=HINT,
                                            select=lambda ex: {"image": ex["image"], "label": ex["label"]})
        parts = {s: (cols["image"][split == s][..., 0], cols["label"][split == s].astype(np.int64))
                 for s in ("train", "test") if np.any(split == s)}
    rng = np.random.default_rng(seed)
    xs, left, right, split = [], [], [], []
    for s, (x, y) in parts.items():
        images.check_classes(y, 10, f"multi_mnist {s} labels")
        if x.shape[1:] != (28, 28):
            raise DataError(f"multi_mnist needs 28x28 MNIST digits, the {s} images are {x.shape[1:]}.")
        cx, cl, cr = combine(x, y, rng)
        xs.append(cx), left.append(cl), right.append(cr), split.append(np.full(len(cx), s))
    split = np.concatenate(split)
    if "train" not in parts:  # e.g. only the t10k files: no official split to follow
        split = None
    tasks = [Task("top_left", role="primary", num_classes=10), Task("bottom_right", role="auxiliary", num_classes=10)]
    return Source(name="multi_mnist", tasks=tasks, features=np.concatenate(xs)[..., None],
                  labels={"top_left": np.concatenate(left), "bottom_right": np.concatenate(right)},
                  official_split=split, decode=None, is_image=True,
                  image_shape=(28, 28, 1), augment=None, time=None)
