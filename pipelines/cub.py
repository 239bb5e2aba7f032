"""CUB-200-2011 birds: 200 species ("species", primary) and 312 binary attributes ("attr_001".."attr_312").

Raw files only (TFDS `caltech_birds2011` has no attribute labels): the `CUB_200_2011/` folder
(--data_dir is that folder or its parent) with images.txt, image_class_labels.txt,
train_test_split.txt, classes.txt, attributes/image_attribute_labels.txt and images/.
Images: resize to 256/224 * image_size, central crop (training: random crop + flip).
"""

import os
import warnings

import numpy as np

from pipelines import images
from pipelines.contract import Source
from pipelines.errors import DataError
from tfaux.tasks import Task

NUM_ATTRIBUTES = 312
ATTR_FILE = os.path.join("attributes", "image_attribute_labels.txt")
HINT = "--data_dir with the raw 'CUB_200_2011/' folder (TFDS caltech_birds2011 lacks the 312 attributes)"


def _pairs(path, ncols=2):
    """Rows of the first `ncols` whitespace-separated fields (ints, except a trailing path)."""
    rows = []
    for i, ln in enumerate(images.read_lines(path), start=1):
        p = ln.split(None, ncols)
        if len(p) < ncols or not p[0].isdigit():
            raise images.bad_line(path, i, f"expected {ncols} fields starting with an image id")
        rows.append(p[:ncols])
    return rows


def _int_column(path, rows, col):
    try:
        return np.array([int(r[col]) for r in rows], np.int64)
    except ValueError as e:
        raise DataError(f"File '{os.path.basename(path)}' has a non-integer in column {col + 1} ({e}).") from e


def _by_id(path, ids, what):
    """{image id: value} of a two-column file, checked to cover every image of images.txt."""
    rows = _pairs(path)
    table = dict(zip(_int_column(path, rows, 0), _int_column(path, rows, 1)))
    missing = [i for i in ids if i not in table]
    if missing:
        raise DataError(f"File '{os.path.basename(path)}' has no {what} for image id {missing[0]} "
                        f"({len(missing)} images lack one).")
    return np.array([table[i] for i in ids], np.int64)


def _attributes(path, ids):
    """[N, 312] float32 0/1 from image_attribute_labels.txt (fields after is_present are ignored)."""
    name = "image_attribute_labels.txt"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an empty file warns before failing our checks below
            t = np.loadtxt(path, usecols=(0, 1, 2), dtype=np.int64, ndmin=2)
    except OSError as e:
        raise DataError(f"Cannot read '{name}' ({path}): {e}.") from e
    except ValueError as e:
        raise DataError(f"File '{name}' is malformed ({str(e).splitlines()[0].rstrip('.')}).") from e
    lookup = np.full(max(int(ids.max()), int(t[:, 0].max(initial=0))) + 1, -1)
    lookup[ids] = np.arange(len(ids))
    rows, attr, value = lookup[np.clip(t[:, 0], 0, None)], t[:, 1] - 1, t[:, 2]
    bad = (t[:, 0] < 0) | (rows < 0) | (attr < 0) | (attr >= NUM_ATTRIBUTES) | ((value != 0) & (value != 1))
    if bad.any():
        raise DataError(f"File '{name}' row {int(np.argmax(bad)) + 1} needs an image id of images.txt, an "
                        f"attribute id in 1..{NUM_ATTRIBUTES} and is_present 0 or 1.")
    out = np.zeros((len(ids), NUM_ATTRIBUTES), np.float32)
    seen = np.zeros((len(ids), NUM_ATTRIBUTES), bool)
    out[rows, attr], seen[rows, attr] = value, True
    if not seen.all():
        r, a = np.argwhere(~seen)[0]
        raise DataError(f"File '{name}' lacks attribute {a + 1} of image id {ids[r]} "
                        f"({int((~seen).sum())} labels missing; truncated?).")
    return out


def load_cub(data_dir=None, attributes=True, image_size=224):
    """CUB: "species" (200 classes); with `attributes`, the 312 binary auxiliary tasks attr_001..attr_312."""
    if not isinstance(attributes, bool):
        raise DataError(f"cub option 'attributes' must be True or False, got {attributes!r}.")
    if data_dir is None:
        raise DataError(f"cub has no offline TFDS source with attributes; pass {HINT}.")
    images.check_dir(data_dir, "cub")
    root = images.find_root(data_dir, "CUB_200_2011", "images.txt")
    if root is None:
        raise DataError(f"Missing file 'images.txt' in '{data_dir}' or its 'CUB_200_2011/' folder; pass {HINT}.")
    path = images.require_file(root, "images.txt")
    rows = _pairs(path)
    ids = _int_column(path, rows, 0)
    paths = np.array([os.path.join(root, "images", r[1].strip()) for r in rows])
    n_classes = len(_pairs(images.require_file(root, "classes.txt")))
    species = _by_id(images.require_file(root, "image_class_labels.txt"), ids, "class label") - 1
    images.check_classes(species, n_classes, "cub 'image_class_labels.txt'")
    is_train = _by_id(images.require_file(root, "train_test_split.txt"), ids, "train/test flag")
    images.existing_images(paths, "cub")
    tasks = [Task("species", role="primary", num_classes=n_classes)]
    labels = {"species": species}
    if attributes:
        attr = _attributes(images.require_file(root, ATTR_FILE), ids)
        for a in range(NUM_ATTRIBUTES):
            name = f"attr_{a + 1:03d}"
            tasks.append(Task(name, role="auxiliary", kind="binary"))
            labels[name] = attr[:, a]
    resize = round(image_size * 256 / 224)
    return Source(name="cub", tasks=tasks, features=paths, labels=labels,
                  official_split=np.where(is_train == 1, "train", "test"),
                  decode=images.make_decode(lambda img: images.resize_center_crop(img, resize, image_size), True),
                  is_image=True, image_shape=(image_size, image_size, 3),
                  augment=images.resize_crop_flip(resize), time=None)
