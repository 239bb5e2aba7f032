"""MNIST from the standard idx files in --data_dir (each optionally .gz), or from TFDS.

With both the train and t10k pairs, the official train/test split is kept (val is
carved from train); with only one pair, its examples are the whole pool and the
setting splits them.
"""

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from pipelines.contract import Source, register
from pipelines.errors import DataError
from tfaux.tasks import Task

IMAGES_MAGIC, LABELS_MAGIC = 0x00000803, 0x00000801
PAIRS = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def _read_bytes(path):
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (EOFError, OSError, zlib.error) as e:
        raise DataError(f"File {path} is truncated or not a valid gzip file ({e}).") from None


def read_idx(path, magic):
    """The uint8 array of one idx file, checking magic number, header and size."""
    path = Path(path)
    data = _read_bytes(path)
    ndim = magic & 0xFF
    if len(data) < 4 + 4 * ndim:
        raise DataError(f"File {path} is truncated: it holds {len(data)} bytes, fewer than its "
                        f"{4 + 4 * ndim}-byte header.")
    found = struct.unpack(">I", data[:4])[0]
    if found != magic:
        raise DataError(f"File {path} has magic number 0x{found:08X}, expected 0x{magic:08X} "
                        f"({'images' if magic == IMAGES_MAGIC else 'labels'} idx file).")
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    if 0 in dims:
        raise DataError(f"File {path} has a header announcing dimensions {dims}; none may be 0.")
    body = len(data) - 4 - 4 * ndim
    if body != math.prod(dims):  # (Python integers: a forged header cannot overflow)
        what = (f"{dims[0]} images of {dims[1]}x{dims[2]}" if ndim == 3 else f"{dims[0]} labels")
        problem = "is truncated" if body < math.prod(dims) else "has trailing bytes"
        raise DataError(f"File {path} {problem}: its header announces {what} but it holds {body:,} bytes of "
                        f"{'pixels' if ndim == 3 else 'labels'}.")
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _find(data_dir, stem):
    for name in (stem, stem + ".gz"):
        if (data_dir / name).is_file():
            return data_dir / name
    return None


def read_pair(data_dir, split):
    """(images [N, 28, 28] uint8, labels [N] int32) of one split, or None when neither file is there."""
    images_path, labels_path = (_find(data_dir, stem) for stem in PAIRS[split])
    if images_path is None and labels_path is None:
        return None
    if images_path is None or labels_path is None:
        have, missing = (images_path, PAIRS[split][1]) if labels_path is None else (labels_path, PAIRS[split][0])
        raise DataError(f"File {data_dir / missing}[.gz] is missing, but {have} is present.")
    images, labels = read_idx(images_path, IMAGES_MAGIC), read_idx(labels_path, LABELS_MAGIC)
    if len(images) != len(labels):
        raise DataError(f"File {labels_path} holds {len(labels):,} labels but {images_path} holds "
                        f"{len(images):,} images.")
    if labels.size and labels.max() > 9:
        raise DataError(f"File {labels_path} holds label {labels.max()}, outside 0..9.")
    return images, labels.astype(np.int32)


def _from_dir(data_dir):
    data_dir = Path(data_dir)
    if not data_dir.exists():
        raise DataError(f"--data_dir {data_dir} does not exist.")
    if not data_dir.is_dir():
        raise DataError(f"--data_dir {data_dir} is not a directory.")
    pairs = {s: read_pair(data_dir, s) for s in PAIRS}
    pairs = {s: p for s, p in pairs.items() if p is not None}
    if not pairs:
        raise DataError(f"--data_dir {data_dir} holds no MNIST idx files (expected "
                        f"{', '.join(PAIRS['train'] + PAIRS['test'])}, each optionally .gz).")
    shapes = {p[0].shape[1:] for p in pairs.values()}
    if len(shapes) > 1:
        raise DataError(f"--data_dir {data_dir}: train and t10k images differ in size ({sorted(shapes)}).")
    images = np.concatenate([p[0] for p in pairs.values()])
    labels = np.concatenate([p[1] for p in pairs.values()])
    split = None
    if len(pairs) == 2:
        split = np.concatenate([np.full(len(p[1]), s) for s, p in pairs.items()])
    return images[..., None], labels, split


def _from_tfds():
    try:
        import tensorflow_datasets as tfds

        splits = tfds.load("mnist", split=["train", "test"], batch_size=-1, download=False, as_supervised=True)
    except Exception as e:  # noqa: BLE001 - any TFDS failure means "not available offline"
        raise DataError(f"MNIST is not prepared in the TFDS data directory ({type(e).__name__}); pass "
                        f"--data_dir with the idx files (train-images-idx3-ubyte[.gz], ...).") from None
    arrays = [(np.asarray(x, np.uint8), np.asarray(y, np.int32)) for x, y in tfds.as_numpy(splits)]
    split = np.concatenate([np.full(len(y), s) for s, (_, y) in zip(("train", "test"), arrays)])
    return np.concatenate([a[0] for a in arrays]), np.concatenate([a[1] for a in arrays]), split


@register("mnist")
def load_mnist(data_dir=None):
    """MNIST digits as uint8 [N, 28, 28, 1] images with one primary task "label" (10 classes)."""
    images, labels, split = _from_dir(data_dir) if data_dir is not None else _from_tfds()
    return Source(name="mnist", tasks=[Task("label", role="primary", kind="classification", num_classes=10)],
                  features=np.ascontiguousarray(images), labels={"label": labels}, official_split=split,
                  is_image=True, image_shape=tuple(images.shape[1:]))
