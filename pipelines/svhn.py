"""SVHN cropped digits: 32x32 colour images of house-number digits, 10 classes.

Raw files (--data_dir): the official `train_32x32.mat` and `test_32x32.mat` (read with scipy;
the label 10 means digit 0). The 531k-image `extra_32x32.mat` is not used. Without raw files:
TFDS `svhn_cropped` (train and test splits).
"""

import os

import numpy as np

from pipelines import images
from pipelines.contract import Source
from pipelines.errors import DataError
from tfaux.tasks import Task

FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}
HINT = "the raw 'train_32x32.mat' and 'test_32x32.mat' files"


def _read_mat(path):
    name = os.path.basename(path)
    d = images.read_mat(path, "SVHN")
    if "X" not in d or "y" not in d:
        raise DataError(f"SVHN file '{name}' lacks the variables 'X' and 'y'.")
    x, y = np.asarray(d["X"]), np.asarray(d["y"]).reshape(-1)
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.shape[3] != len(y):
        raise DataError(f"SVHN file '{name}' variable 'X' has shape {x.shape}, expected [32, 32, 3, {len(y)}].")
    y = y.astype(np.int64) % 10  # the official files label digit 0 as 10
    return np.ascontiguousarray(x.transpose(3, 0, 1, 2)).astype(np.uint8), y


def _raw(data_dir):
    root = images.find_root(data_dir, "svhn", FILES["train"])
    if root is None:
        return None
    parts = {s: _read_mat(images.require_file(root, f)) for s, f in FILES.items()}
    split = np.concatenate([np.full(len(parts[s][1]), s) for s in FILES])
    return np.concatenate([parts[s][0] for s in FILES]), np.concatenate([parts[s][1] for s in FILES]), split


def load_svhn(data_dir=None):
    """SVHN: task "label" (digit 0..9)."""
    found = None
    if data_dir is not None:
        images.check_dir(data_dir, "svhn")
        found = _raw(data_dir)
    if found is None:
        cols, split, _ = images.tfds_source("svhn_cropped", data_dir, raw_hint=HINT,
                                            select=lambda ex: {"image": ex["image"], "label": ex["label"]})
        found = cols["image"].astype(np.uint8), cols["label"].astype(np.int64), split
    x, y, split = found
    images.check_classes(y, 10, "svhn")
    return Source(name="svhn", tasks=[Task("label", role="primary", num_classes=10)], features=x,
                  labels={"label": y}, official_split=split, decode=None, is_image=True,
                  image_shape=(32, 32, 3), augment=images.pad_crop_flip(4, flip_lr=False), time=None)
