"""NYUv2 with 13-class segmentation as the primary task and depth and surface normals as
auxiliaries (seed 002, Sec. 5.3 and Table 2, App. B.2; the setting of MTAN, Liu et al. 2019).

Raw files only (there is no TFDS builder): --data_dir is the preprocessed NYUv2 of MTAN, which
seed 002's code reads unchanged, as `train/` and `val/` folders (directly or under `nyuv2/`),
each with four subfolders of `<index>.npy` files, index 0..n-1 (795 train, 654 val images):

    image/<i>.npy    [288, 384, 3] float, RGB in [0, 1]
    label/<i>.npy    [288, 384]    float or int, class 0..12, -1 where unlabelled
    depth/<i>.npy    [288, 384, 1] float, depth, 0 where missing
    normal/<i>.npy   [288, 384, 3] float, unit surface normals, 0 where missing

H and W are read from train/image/0.npy (every file must match it), so smaller copies work too.

Tasks (one head each on the shared feature map: a linear 3x3 convolution of width 64, then a 1x1
one, as the reference's prediction layers):

    "segmentation"  primary, dense_classification, 13 classes, ignore index -1; metric mIoU (and
                    pixel accuracy);
    "depth"         auxiliary, dense_regression: per-pixel L1 over pixels with non-zero depth;
    "normal"        auxiliary, dense_normal: per-pixel 1 - cos over pixels with a non-zero normal.

Splits (Source.official_split): the train folder is "train" and the val folder "test" (the
paper's test set); the validation part (model selection, and the dev split of bi-level methods
out of it, --dev_size) is carved from train by the Setting (--val_fraction). The reference code
keeps 10 % of train for validation and 2.5 % of the rest as its auxiliary set. Images are not
square: pass --norotation (the Setting refuses the rotation task). There is no augmentation
(the reference has none, and Source.augment would move the image but not its label maps).
Per-example losses are means over the example's valid pixels (the reference averages over the
batch's pixels), and the input is z-scored per channel like every image source.

Everything is held in memory as float32 / int32 arrays: about 3.5 MB per image at 288 x 384.
"""

import os

import numpy as np

from pipelines import images
from pipelines.contract import Source, register
from pipelines.errors import DataError
from tfaux.tasks import Task

NUM_CLASSES = 13
IGNORE_INDEX = -1
HEAD_WIDTH = 64
FOLDERS = ("image", "label", "depth", "normal")
SPLITS = {"train": "train", "val": "test"}  # folder -> official split (the val folder is the test set)
ROOTS = ("", "nyuv2")
HINT = ("--data_dir with the preprocessed NYUv2 folders 'train/' and 'val/', each holding "
        "image/, label/, depth/ and normal/ files '<index>.npy'")


def nyuv2_tasks():
    """Segmentation (primary) and the depth and normal auxiliaries, with the reference's heads."""
    return [Task("segmentation", role="primary", kind="dense_classification", num_classes=NUM_CLASSES,
                 ignore_index=IGNORE_INDEX, head_units=(HEAD_WIDTH,)),
            Task("depth", role="auxiliary", kind="dense_regression", head_units=(HEAD_WIDTH,)),
            Task("normal", role="auxiliary", kind="dense_normal", head_units=(HEAD_WIDTH,))]


def _root(data_dir):
    """The folder holding train/ and val/ (data_dir itself or data_dir/nyuv2)."""
    root, missing = images.root_with_folders(data_dir, ROOTS, SPLITS)
    if root is None:
        raise DataError(f"nyuv2: no 'train/' or 'val/' folder in '{data_dir}'; pass {HINT}.")
    if missing:
        raise DataError(f"nyuv2: missing folder '{missing[0]}/' in '{root}'.")
    return root


def _count(root, split):
    """n, the number of examples of a split: every subfolder must hold exactly 0.npy .. (n-1).npy."""
    counts = {}
    for sub in FOLDERS:
        folder = os.path.join(root, split, sub)
        if not os.path.isdir(folder):
            raise DataError(f"nyuv2: missing folder '{split}/{sub}/' in '{root}'.")
        counts[sub] = [n for n in os.listdir(folder) if n.endswith(".npy")]
    n = len(counts["image"])
    if n == 0:
        raise DataError(f"nyuv2: folder '{split}/image/' in '{root}' holds no '<index>.npy' file.")
    for sub in FOLDERS[1:]:
        if len(counts[sub]) != n:
            raise DataError(f"nyuv2: folder '{split}/{sub}/' holds {len(counts[sub])} .npy files but "
                            f"'{split}/image/' holds {n}.")
    for sub in FOLDERS:
        names = set(counts[sub])
        for i in range(n):
            if f"{i}.npy" not in names:
                raise DataError(f"nyuv2: file '{split}/{sub}/{i}.npy' is missing (files are named 0.npy to "
                                f"{n - 1}.npy).")
    return n


def _load(root, split, sub, i, shape):
    """One file as float32, a DataError naming it when unreadable or not of `shape`."""
    name = f"{split}/{sub}/{i}.npy"
    try:
        a = np.load(os.path.join(root, split, sub, f"{i}.npy"), allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DataError(f"nyuv2: file '{name}' is not a readable .npy array ({type(e).__name__}).") from e
    if a.shape != shape:
        raise DataError(f"nyuv2: file '{name}' has shape {a.shape}, expected {shape}.")
    if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
        raise DataError(f"nyuv2: file '{name}' holds {a.dtype} values, expected real numbers.")
    a = a.astype(np.float32)
    if not np.all(np.isfinite(a)):
        raise DataError(f"nyuv2: file '{name}' holds non-finite values.")
    return a, name


def _read_split(root, split, arrays, offset, n):
    """Fill rows offset..offset+n-1 of image [N, H, W, 3], label [N, H, W] (int32), depth
    [N, H, W, 1] and normal [N, H, W, 3] from a split's files."""
    image, label, depth, normal = arrays
    h, w = image.shape[1:3]
    for i in range(n):
        row = offset + i
        image[row], name = _load(root, split, "image", i, (h, w, 3))
        if image[row].min() < 0 or image[row].max() > 1:
            raise DataError(f"nyuv2: file '{name}' holds pixel values outside [0, 1].")
        y, name = _load(root, split, "label", i, (h, w))
        if np.any(y != np.round(y)) or y.min() < IGNORE_INDEX or y.max() >= NUM_CLASSES:
            raise DataError(f"nyuv2: file '{name}' must hold integer classes 0..{NUM_CLASSES - 1} or "
                            f"{IGNORE_INDEX} (unlabelled).")
        label[row] = y.astype(np.int32)
        depth[row], _ = _load(root, split, "depth", i, (h, w, 1))
        normal[row], _ = _load(root, split, "normal", i, (h, w, 3))


def _image_size(root):
    """(H, W) of train/image/0.npy, which every file must match."""
    try:
        shape = np.load(os.path.join(root, "train", "image", "0.npy"), mmap_mode="r", allow_pickle=False).shape
    except (OSError, ValueError) as e:
        raise DataError(f"nyuv2: file 'train/image/0.npy' is not a readable .npy array ({type(e).__name__}).") from e
    if len(shape) != 3 or shape[2] != 3:
        raise DataError(f"nyuv2: file 'train/image/0.npy' has shape {shape}, expected [H, W, 3].")
    return shape[:2]


def load_nyuv2(data_dir=None):
    """The NYUv2 Source (see the module docstring): the train and val folders as official
    splits "train" and "test"."""
    if data_dir is None:
        raise DataError(f"nyuv2 has no TFDS source; pass {HINT}.")
    images.check_dir(data_dir, "nyuv2")
    root = _root(data_dir)
    counts = {folder: _count(root, folder) for folder in SPLITS}
    h, w = _image_size(root)
    total = sum(counts.values())
    arrays = (np.empty((total, h, w, 3), np.float32), np.empty((total, h, w), np.int32),
              np.empty((total, h, w, 1), np.float32), np.empty((total, h, w, 3), np.float32))
    offset = 0
    for folder, n in counts.items():
        _read_split(root, folder, arrays, offset, n)
        offset += n
    split = np.concatenate([np.full(n, SPLITS[folder]) for folder, n in counts.items()])
    image, label, depth, normal = arrays
    return Source(name="nyuv2", tasks=nyuv2_tasks(), features=image,
                  labels={"segmentation": label, "depth": depth, "normal": normal},
                  official_split=split, is_image=True, image_shape=(h, w, 3))


register("nyuv2", load_nyuv2)
