"""CIFAR-10 and CIFAR-100: 32x32 colour images; CIFAR-100's 20 coarse labels as an auxiliary task.

Raw files (--data_dir, the folder itself or its parent): the official python-pickle folders
`cifar-10-batches-py/` (data_batch_1..5, test_batch) and `cifar-100-python/` (train, test), or
the binary folders `cifar-10-batches-bin/` (data_batch_1..5.bin, test_batch.bin) and
`cifar-100-binary/` (train.bin, test.bin). Without raw files: TFDS `cifar10` / `cifar100`.
"""

import os
import pickle

import numpy as np

from pipelines import images
from pipelines.contract import Source
from pipelines.errors import DataError
from tfaux.tasks import Task

SHAPE = (32, 32, 3)
PIXELS = 32 * 32 * 3
C10_BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def _unpickle(path, keys):
    """The arrays under `keys` of one pickled CIFAR batch file."""
    name = os.path.basename(path)
    try:
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="bytes")
    except Exception as e:
        raise DataError(f"CIFAR file '{name}' is not a readable python pickle ({type(e).__name__}: {e}).") from e
    if not isinstance(d, dict):
        raise DataError(f"CIFAR file '{name}' does not hold a dict of arrays.")
    out = []
    for k in keys:
        if k.encode() not in d:
            raise DataError(f"CIFAR file '{name}' has no field '{k}'.")
        out.append(np.asarray(d[k.encode()]))
    data = out[0]
    if data.ndim != 2 or data.shape[1] != PIXELS or any(len(o) != len(data) for o in out[1:]):
        raise DataError(f"CIFAR file '{name}' field 'data' has shape {data.shape}, expected [N, {PIXELS}] "
                        f"with one label per row.")
    return [data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).astype(np.uint8)] + [o.astype(np.int64) for o in out[1:]]


def _read_bin(path, n_labels):
    """Records of `n_labels` label bytes then 3072 pixel bytes (the CIFAR binary format)."""
    raw = np.fromfile(path, dtype=np.uint8)
    rec = n_labels + PIXELS
    if raw.size == 0 or raw.size % rec:
        raise DataError(f"CIFAR binary file '{os.path.basename(path)}' has {raw.size} bytes, "
                        f"not a whole number of {rec}-byte records.")
    raw = raw.reshape(-1, rec)
    imgs = raw[:, n_labels:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return [imgs] + [raw[:, i].astype(np.int64) for i in range(n_labels)]


def _raw10(data_dir):
    root = images.find_root(data_dir, "cifar-10-batches-py", "data_batch_1")
    if root is not None:
        parts = [_unpickle(images.require_file(root, b), ["data", "labels"]) for b in C10_BATCHES]
    else:
        root = images.find_root(data_dir, "cifar-10-batches-bin", "data_batch_1.bin")
        if root is None:
            return None
        parts = [_read_bin(images.require_file(root, b + ".bin"), 1) for b in C10_BATCHES]
    split = np.array(["train"] * sum(len(p[0]) for p in parts[:5]) + ["test"] * len(parts[5][0]))
    return np.concatenate([p[0] for p in parts]), {"label": np.concatenate([p[1] for p in parts])}, split


def _raw100(data_dir):
    root = images.find_root(data_dir, "cifar-100-python", "train")
    if root is not None and os.path.isfile(os.path.join(root, "train")):
        parts = [_unpickle(images.require_file(root, s), ["data", "fine_labels", "coarse_labels"])
                 for s in ("train", "test")]
    else:
        root = images.find_root(data_dir, "cifar-100-binary", "train.bin")
        if root is None:
            return None
        # binary records: coarse label byte, fine label byte, pixels
        parts = [(lambda r: [r[0], r[2], r[1]])(_read_bin(images.require_file(root, s + ".bin"), 2))
                 for s in ("train", "test")]
    split = np.array(["train"] * len(parts[0][0]) + ["test"] * len(parts[1][0]))
    labels = {"label": np.concatenate([p[1] for p in parts]), "coarse": np.concatenate([p[2] for p in parts])}
    return np.concatenate([p[0] for p in parts]), labels, split


def _tfds(builder, data_dir, hint):
    keys = ["image", "label"] + (["coarse_label"] if builder == "cifar100" else [])
    cols, split, _ = images.tfds_source(builder, data_dir, select=lambda ex: {k: ex[k] for k in keys},
                                        raw_hint=hint)
    labels = {"label": cols["label"].astype(np.int64)}
    if "coarse_label" in cols:
        labels["coarse"] = cols["coarse_label"].astype(np.int64)
    return cols["image"].astype(np.uint8), labels, split


def _load(name, data_dir, raw_reader, builder, hint):
    found = None
    if data_dir is not None:
        images.check_dir(data_dir, name)
        found = raw_reader(data_dir)
    return found if found is not None else _tfds(builder, data_dir, hint)


def _source(name, x, labels, split, tasks):
    for t in tasks:
        images.check_classes(labels[t.name], t.num_classes, f"{name} task '{t.name}'")
    return Source(name=name, tasks=tasks, features=x, labels={t.name: labels[t.name] for t in tasks},
                  official_split=split, decode=None, is_image=True, image_shape=SHAPE,
                  augment=images.pad_crop_flip(4), time=None)


def load_cifar10(data_dir=None):
    """CIFAR-10: 10 classes, task "label"."""
    x, labels, split = _load("cifar10", data_dir, _raw10, "cifar10",
                             "the raw 'cifar-10-batches-py/' or 'cifar-10-batches-bin/' folder")
    return _source("cifar10", x, labels, split, [Task("label", role="primary", num_classes=10)])


def load_cifar100(data_dir=None, coarse=True):
    """CIFAR-100: 100 fine classes ("label"); with `coarse`, the 20 superclasses as auxiliary "coarse"."""
    if not isinstance(coarse, bool):
        raise DataError(f"cifar100 option 'coarse' must be True or False, got {coarse!r}.")
    x, labels, split = _load("cifar100", data_dir, _raw100, "cifar100",
                             "the raw 'cifar-100-python/' or 'cifar-100-binary/' folder")
    tasks = [Task("label", role="primary", num_classes=100)]
    if coarse:
        tasks.append(Task("coarse", role="auxiliary", num_classes=20))
    return _source("cifar100", x, labels, split, tasks)
