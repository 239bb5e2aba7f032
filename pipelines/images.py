"""Shared helpers of the dataset modules: TFDS without downloading, raw-file checks, image ops."""

import gzip
import os

import numpy as np
import tensorflow as tf

from pipelines.errors import DataError

# TFDS split names -> the contract's official split names.
SPLIT_NAMES = {"train": "train", "validation": "val", "test": "test"}


# ----------------------------------------------------------------------------- files

def check_dir(data_dir, what):
    """Raise a DataError naming `data_dir` unless it is an existing directory."""
    if not os.path.isdir(data_dir):
        raise DataError(f"--data_dir '{data_dir}' for {what} does not exist or is not a directory.")


def find_root(data_dir, folder, marker):
    """`data_dir/folder` or `data_dir` itself, whichever holds `marker`; None if neither does."""
    for root in (os.path.join(data_dir, folder), data_dir):
        if os.path.exists(os.path.join(root, marker)):
            return root
    return None


def root_with_folders(data_dir, roots, names):
    """(root, missing): the first of data_dir/r (r in roots; "" is data_dir itself) holding every
    folder of `names`, with missing = []; else the first holding some, with the ones it lacks;
    else (None, names)."""
    candidates = [os.path.join(data_dir, r) if r else data_dir for r in roots]
    for root in candidates:
        if all(os.path.isdir(os.path.join(root, n)) for n in names):
            return root, []
    for root in candidates:
        missing = [n for n in names if not os.path.isdir(os.path.join(root, n))]
        if len(missing) < len(names):
            return root, missing
    return None, list(names)


def require_file(root, name):
    """Path of `root/name`, or a DataError naming the missing file."""
    path = os.path.join(root, name)
    if not os.path.exists(path):
        raise DataError(f"Missing file '{name}' in '{root}'.")
    return path


def read_lines(path, encoding="utf-8"):
    """Non-empty lines of a text file (gzip when it ends in .gz), with a DataError naming the file."""
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rt", encoding=encoding) as f:
                text = f.read()
        else:
            with open(path, encoding=encoding) as f:
                text = f.read()
    except (OSError, UnicodeDecodeError, EOFError) as e:
        raise DataError(f"Cannot read '{os.path.basename(path)}' ({path}): {e}.") from e
    return [ln for ln in text.splitlines() if ln.strip()]


def read_mat(path, what, **options):
    """The variables of a MATLAB file (scipy.io.loadmat with `options`), or a DataError naming the
    file for `what` (e.g. "SVHN")."""
    name = os.path.basename(path)
    try:
        import scipy.io
    except ImportError as e:
        raise DataError(f"Reading {what} file '{name}' needs scipy (pip install scipy).") from e
    try:
        return scipy.io.loadmat(path, **options)
    except Exception as e:
        raise DataError(f"{what} file '{name}' is not a readable MATLAB file ({type(e).__name__}: {e}).") from e


def bad_line(path, lineno, why):
    """A DataError for line `lineno` (1-based) of a file."""
    return DataError(f"File '{os.path.basename(path)}' line {lineno} is malformed: {why}.")


def existing_images(paths, what):
    """Check the first and last image file exist (a cheap guard against a wrong folder)."""
    for p in (paths[0], paths[-1]) if len(paths) else ():
        if not os.path.exists(p):
            raise DataError(f"Image file '{os.path.basename(p)}' of {what} not found at '{p}'.")


# ----------------------------------------------------------------------------- TFDS

def tfds_source(builder, data_dir=None, splits=("train", "test"), select=None, decoders=None,
                raw_hint="the dataset's raw files"):
    """Load every example of a prepared TFDS dataset into numpy, never downloading.

    select: fn(example dict) -> flat dict of the tensors to keep (default: all top-level ones).
    Returns (columns: dict of [N, ...] numpy arrays, official_split: [N] str array, info).
    A failure (not prepared, no network) becomes a DataError saying to pass --data_dir.
    """
    import tensorflow_datasets as tfds  # imported lazily: slow, and raw loaders don't need it
    try:
        datasets, info = tfds.load(builder, split=list(splits), data_dir=data_dir, download=False,
                                   decoders=decoders, with_info=True)
        columns, split_of = {}, []
        for split, ds in zip(splits, datasets):
            if select is not None:
                ds = ds.map(select, num_parallel_calls=tf.data.AUTOTUNE)
            n = 0
            for batch in tfds.as_numpy(ds.batch(4096)):
                for k, v in batch.items():
                    columns.setdefault(k, []).append(v)
                n += len(next(iter(batch.values())))
            split_of.append(np.full(n, SPLIT_NAMES.get(split, split)))
    except DataError:
        raise
    except Exception as e:  # tfds raises AssertionError, DatasetNotFoundError, OSError, ...
        msg = (str(e).splitlines() or [type(e).__name__])[0].split(". ")[0]  # keep one sentence
        raise DataError(f"TFDS could not load '{builder}' from data_dir={data_dir!r} without downloading "
                        f"({msg.rstrip('.')}); pass --data_dir with {raw_hint}.") from e
    columns = {k: np.concatenate(v) for k, v in columns.items()}
    return columns, np.concatenate(split_of) if split_of else np.array([], str), info


# ----------------------------------------------------------------------------- image ops

def scale_uint8(x):
    """uint8 image -> float32 in [0, 1]."""
    return tf.cast(x, tf.float32) / 255.0


def decode_image(data, channels=3):
    """Encoded JPEG/PNG/GIF/BMP bytes -> uint8 [H, W, channels]."""
    img = tf.io.decode_image(data, channels=channels, expand_animations=False)
    img.set_shape([None, None, channels])
    return img


def resize_center_crop(img, resize, crop):
    """Resize to resize x resize, then take the central crop x crop; float32 in [0, 1]."""
    img = tf.image.resize(scale_uint8(img), [resize, resize])
    off = (resize - crop) // 2
    return tf.ensure_shape(img[off:off + crop, off:off + crop, :], [crop, crop, img.shape[-1]])


def square_crop_resize(img, size):
    """Central square crop of a non-square image, resized to size x size; float32 in [0, 1]."""
    shape = tf.shape(img)
    side = tf.minimum(shape[0], shape[1])
    img = tf.image.crop_to_bounding_box(img, (shape[0] - side) // 2, (shape[1] - side) // 2, side, side)
    return tf.ensure_shape(tf.image.resize(scale_uint8(img), [size, size]), [size, size, 3])


def make_decode(transform, from_file):
    """decode(features) for image files (`from_file`) or encoded bytes (TFDS with SkipDecoding)."""
    def decode(features):
        data = tf.io.read_file(features) if from_file else features
        return transform(decode_image(data))
    return decode


def pad_crop_flip(pad=4, flip_lr=True):
    """CIFAR-style augment(x, seed): zero-pad by `pad`, random crop back, random horizontal flip."""
    def augment(x, seed):
        h, w, c = x.shape
        crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        x = tf.image.resize_with_crop_or_pad(x, h + 2 * pad, w + 2 * pad)
        x = tf.image.stateless_random_crop(x, [h, w, c], seed=crop_seed)
        return tf.image.stateless_random_flip_left_right(x, seed=flip_seed) if flip_lr else x
    return augment


def resize_crop_flip(resize):
    """CUB/Pet augment(x, seed): resize the centre-cropped x to `resize`, random crop back, flip."""
    def augment(x, seed):
        h, w, c = x.shape
        crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        x = tf.image.stateless_random_crop(tf.image.resize(x, [resize, resize]), [h, w, c], seed=crop_seed)
        return tf.image.stateless_random_flip_left_right(x, seed=flip_seed)
    return augment


def flip():
    """CelebA augment(x, seed): random horizontal flip only."""
    def augment(x, seed):
        return tf.image.stateless_random_flip_left_right(x, seed=seed)
    return augment


def check_classes(labels, num_classes, what):
    """Raise a DataError naming `what` unless every label is in 0..num_classes-1."""
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"Labels of {what} range over {labels.min()}..{labels.max()}, "
                        f"expected 0..{num_classes - 1}.")
