"""Multi-MNIST (Sener & Koltun, 2018) and its variants Multi-Fashion and Multi-(MNIST+Fashion)
(seed 004 Sec. 5.2): two 28x28 items per image; "top_left" primary, "bottom_right" auxiliary.

    multi_mnist          two MNIST digits
    multi_fashion        two Fashion-MNIST icons
    multi_mnist_fashion  an MNIST digit top-left, a Fashion-MNIST icon bottom-right

Built as their reference loader does: item i at rows/cols 0:28 of a 36x36 canvas, a randomly
drawn item j of the same split at 6:34 (overlapping pixels take the maximum), then a
nearest-neighbour resize to 28x28. Item i runs over every image of the top-left family (so a
split has as many examples as that family's split); j is drawn from the bottom-right family's
split with numpy's default_rng(seed), one rng for the splits in order, so a seed gives the same data.

Sources (idx files: train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte,
t10k-labels-idx1-ubyte, each optionally .gz; Fashion-MNIST uses the same names):
  multi_mnist          MNIST idx files in --data_dir or --data_dir/mnist/; else TFDS `mnist`
                       (from a prepared copy in --data_dir when given, else the default one).
  multi_fashion        Fashion-MNIST idx files in --data_dir or --data_dir/fashion_mnist/; else
                       TFDS `fashion_mnist` (likewise).
  multi_mnist_fashion  --data_dir must hold two subfolders, mnist/ and fashion_mnist/, each
                       with its idx files (and the same splits); without --data_dir, TFDS
                       `mnist` and `fashion_mnist` from the default prepared copy.
"""

import os
from pathlib import Path

import numpy as np

from pipelines import images
from pipelines.contract import Source, register
from pipelines.errors import DataError
from pipelines.mnist import PAIRS, read_pair
from tfaux.tasks import Task

HINT = "the MNIST idx files (train-images-idx3-ubyte.gz, t10k-images-idx3-ubyte.gz, ... labels)"
FAMILIES = {  # TFDS builder / subfolder name -> (what an item is, raw-file hint)
    "mnist": ("MNIST digits", HINT),
    "fashion_mnist": ("Fashion-MNIST icons", "the Fashion-MNIST idx files (MNIST's names: "
                      "train-images-idx3-ubyte.gz, t10k-images-idx3-ubyte.gz, ... labels)"),
}
VARIANTS = {  # dataset -> (top-left family, bottom-right family)
    "multi_mnist": ("mnist", "mnist"),
    "multi_fashion": ("fashion_mnist", "fashion_mnist"),
    "multi_mnist_fashion": ("mnist", "fashion_mnist"),
}


def _raw(data_dir):
    """{split: (images [N, 28, 28], labels [N])} from idx files (pipelines.mnist's reader); None if none."""
    parts = {s: read_pair(Path(data_dir), s) for s in PAIRS}
    return {s: (p[0], p[1].astype(np.int64)) for s, p in parts.items() if p is not None} or None


def _tfds(family, data_dir, hint=None):
    """{split: (images [N, 28, 28], labels [N])} of TFDS builder `family` (never downloaded)."""
    cols, split, _ = images.tfds_source(family, data_dir, raw_hint=hint or FAMILIES[family][1],
                                        select=lambda ex: {"image": ex["image"], "label": ex["label"]})
    return {s: (cols["image"][split == s][..., 0], cols["label"][split == s].astype(np.int64))
            for s in ("train", "test") if np.any(split == s)}


def _family(family, data_dir, name):
    """One family for a single-family variant: idx files in data_dir or data_dir/<family>, else TFDS."""
    parts = None
    if data_dir is not None:
        images.check_dir(data_dir, name)
        parts = _raw(data_dir) or _raw(os.path.join(data_dir, family))
    return parts if parts is not None else _tfds(family, data_dir)


def _subfolder(data_dir, folder, name):
    """The idx files of data_dir/<folder>, with a DataError naming a missing or empty subfolder."""
    path = os.path.join(data_dir, folder)
    if not os.path.isdir(path):
        raise DataError(f"--data_dir '{data_dir}' for {name} has no subfolder '{folder}/'; it needs mnist/ and "
                        f"fashion_mnist/, each with its idx files (train-images-idx3-ubyte[.gz], ...).")
    parts = _raw(path)
    if parts is None:
        raise DataError(f"Subfolder '{path}' of --data_dir for {name} holds no idx files (expected "
                        f"{', '.join(PAIRS['train'] + PAIRS['test'])}, each optionally .gz).")
    return parts


def combine(x, y, rng, x2=None, y2=None):
    """The composite images of one split: x [N, 28, 28] uint8 top-left items -> [N, 28, 28] uint8,
    labels (left, right). The bottom-right item of image i is x2[j] (default: x[j]), j drawn by rng."""
    x2, y2 = (x, y) if x2 is None else (x2, y2)
    right = rng.integers(0, len(x2), size=len(x))
    canvas = np.zeros((len(x), 36, 36), np.uint8)
    canvas[:, 0:28, 0:28] = x
    canvas[:, 6:34, 6:34] = np.maximum(canvas[:, 6:34, 6:34], x2[right])
    idx = ((np.arange(28) + 0.5) * 36 / 28).astype(int)  # nearest-neighbour sampling, as PIL does
    return canvas[:, idx][:, :, idx], y, y2[right]


def _parts(name, data_dir):
    """{split: (top-left x, y, bottom-right x, y)} of variant `name`."""
    left, right = VARIANTS[name]
    if left == right:
        return {s: (x, y, x, y) for s, (x, y) in _family(left, data_dir, name).items()}
    if data_dir is not None:
        images.check_dir(data_dir, name)
        a, b = _subfolder(data_dir, left, name), _subfolder(data_dir, right, name)
    else:
        hint = (f"a folder holding {left}/ and {right}/, each with its idx files "
                "(train-images-idx3-ubyte[.gz], ...)")
        a, b = _tfds(left, None, hint), _tfds(right, None, hint)
    if set(a) != set(b):
        have = lambda p: " and ".join(s if s == "train" else "t10k" for s in p)  # noqa: E731
        raise DataError(f"{name} pairs items of the same split, but {left} has the {have(a)} files and "
                        f"{right} the {have(b)} files.")
    return {s: (*a[s], *b[s]) for s in a}


def load_variant(name, data_dir=None, seed=0):
    """Variant `name` of VARIANTS: tasks "top_left" (primary) and "bottom_right" (auxiliary), 10 classes each."""
    families = VARIANTS[name]
    parts = _parts(name, data_dir)
    rng = np.random.default_rng(seed)
    xs, left, right, split = [], [], [], []
    for s, (x, y, x2, y2) in parts.items():
        items = [(families[0], x, y)] + ([(families[1], x2, y2)] if x2 is not x else [])
        for family, fx, fy in items:
            what = name if len(items) == 1 else f"{name} {family}"
            images.check_classes(fy, 10, f"{what} {s} labels")
            if fx.shape[1:] != (28, 28):
                raise DataError(f"{name} needs 28x28 {FAMILIES[family][0]}, the {s} images are {fx.shape[1:]}.")
        cx, cl, cr = combine(x, y, rng, x2, y2)
        xs.append(cx), left.append(cl), right.append(cr), split.append(np.full(len(cx), s))
    split = np.concatenate(split)
    if "train" not in parts:  # e.g. only the t10k files: no official split to follow
        split = None
    tasks = [Task("top_left", role="primary", num_classes=10), Task("bottom_right", role="auxiliary", num_classes=10)]
    return Source(name=name, tasks=tasks, features=np.concatenate(xs)[..., None],
                  labels={"top_left": np.concatenate(left), "bottom_right": np.concatenate(right)},
                  official_split=split, decode=None, is_image=True,
                  image_shape=(28, 28, 1), augment=None, time=None)


def load_multi_mnist(data_dir=None, seed=0):
    """Multi-MNIST: tasks "top_left" (primary) and "bottom_right" (auxiliary), 10 classes each."""
    return load_variant("multi_mnist", data_dir, seed)


@register("multi_fashion")
def load_multi_fashion(data_dir=None, seed=0):
    """Multi-Fashion: two Fashion-MNIST icons; tasks "top_left" (primary), "bottom_right" (auxiliary)."""
    return load_variant("multi_fashion", data_dir, seed)


@register("multi_mnist_fashion")
def load_multi_mnist_fashion(data_dir=None, seed=0):
    """Multi-(MNIST+Fashion): an MNIST digit top-left ("top_left", primary), a Fashion-MNIST icon
    bottom-right ("bottom_right", auxiliary); --data_dir holds mnist/ and fashion_mnist/."""
    return load_variant("multi_mnist_fashion", data_dir, seed)
