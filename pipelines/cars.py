"""Stanford Cars (Krause et al. 2013): 16,185 images of 196 car models ("car", primary: make,
model and year), the official split of 8,144 training and 8,041 test images (seed 002, Sec. 5.4,
Table 3; App. B.3 "Fine-grain classification datasets").

Raw files (--data_dir, or its 'stanford_cars/' folder), the official devkit layout:
    cars_train/00001.jpg ...                 cars_test/00001.jpg ...
    devkit/cars_train_annos.mat              struct array 'annotations' (bbox_x1, bbox_y1,
                                             bbox_x2, bbox_y2, class 1..196, fname)
    devkit/cars_meta.mat                     cell array 'class_names' (196 names)
    cars_test_annos_withlabels.mat           the test annotations with their class (the devkit's
                                             own cars_test_annos.mat has none); also looked for
                                             in devkit/
read with scipy.io.loadmat. Without raw files: a prepared TFDS `cars196` copy (never downloaded).
The bounding boxes are not used: as in the paper (App. B.1, "the same processing was applied in
all fine-grain experiments") the whole image is resized to 256/224 * image_size square and
centre-cropped to image_size (training: random crop of the re-enlarged image and horizontal flip),
as pipelines.oxford_pet does.
"""

import os

import numpy as np

from pipelines import images
from pipelines.contract import Source, register
from pipelines.errors import DataError
from tfaux.tasks import Task

NUM_CLASSES = 196
META = os.path.join("devkit", "cars_meta.mat")
SPLITS = {"train": (os.path.join("devkit", "cars_train_annos.mat"), "cars_train"),
          "test": ("cars_test_annos_withlabels.mat", "cars_test")}
HINT = ("the raw 'cars_train/', 'cars_test/' folders, 'devkit/' (cars_train_annos.mat, cars_meta.mat) and "
        "'cars_test_annos_withlabels.mat'")


def _loadmat(path):
    return images.read_mat(path, "Cars", squeeze_me=True)


def _class_names(path):
    """The 196 names of cars_meta.mat's 'class_names'."""
    name = os.path.basename(path)
    names = _loadmat(path).get("class_names")
    if names is None:
        raise DataError(f"Cars file '{name}' lacks the variable 'class_names'.")
    names = [str(n) for n in np.atleast_1d(names)]
    if len(names) != NUM_CLASSES:
        raise DataError(f"Cars file '{name}' lists {len(names)} class names, expected {NUM_CLASSES}.")
    return names


def _annotations(path):
    """(file names, classes 0..195) of the struct array 'annotations' of an annotation file."""
    name = os.path.basename(path)
    ann = _loadmat(path).get("annotations")
    if ann is None:
        raise DataError(f"Cars file '{name}' lacks the variable 'annotations'.")
    ann = np.atleast_1d(ann)
    fields = ann.dtype.names or ()
    if "fname" not in fields:
        raise DataError(f"Cars file '{name}' has annotations without the field 'fname'.")
    if "class" not in fields:
        raise DataError(f"Cars file '{name}' has annotations without a 'class' field (the test labels are in "
                        "cars_test_annos_withlabels.mat).")
    try:
        classes = np.array([int(np.asarray(c).reshape(-1)[0]) for c in ann["class"]], np.int64)
    except (ValueError, TypeError, IndexError) as e:
        raise DataError(f"Cars file '{name}' has a class that is not an integer ({e}).") from e
    bad = np.flatnonzero((classes < 1) | (classes > NUM_CLASSES))
    if len(bad):
        raise DataError(f"Cars file '{name}' annotation {bad[0] + 1} has class {classes[bad[0]]}, expected "
                        f"1..{NUM_CLASSES}.")
    fnames = [str(np.asarray(f).reshape(-1)[0]) if np.size(f) else "" for f in ann["fname"]]
    empty = [i for i, f in enumerate(fnames) if not f.strip()]
    if empty:
        raise DataError(f"Cars file '{name}' annotation {empty[0] + 1} has an empty file name.")
    return fnames, classes - 1


def _raw(data_dir):
    root = images.find_root(data_dir, "stanford_cars", "devkit")
    if root is None:
        return None
    _class_names(images.require_file(root, META))
    paths, labels, split = [], [], []
    for part, (annos, folder) in SPLITS.items():
        annos_path = os.path.join(root, annos)
        if not os.path.exists(annos_path) and part == "test":  # some copies keep it in devkit/
            annos_path = os.path.join(root, "devkit", annos)
        if not os.path.exists(annos_path):
            raise DataError(f"Missing file '{annos}' in '{root}'; pass --data_dir with {HINT}.")
        fnames, classes = _annotations(annos_path)
        part_paths = np.array([os.path.join(root, folder, f) for f in fnames])
        images.existing_images(part_paths, "cars196")
        paths.append(part_paths), labels.append(classes), split.append(np.full(len(fnames), part))
    return np.concatenate(paths), np.concatenate(labels), np.concatenate(split), True


def _tfds(data_dir):
    import tensorflow_datasets as tfds
    cols, split, _ = images.tfds_source("cars196", data_dir, raw_hint=HINT,
                                        decoders={"image": tfds.decode.SkipDecoding()},
                                        select=lambda ex: {"image": ex["image"], "label": ex["label"]})
    return cols["image"], cols["label"].astype(np.int64), split, False


@register("cars196")
def load_cars(data_dir=None, image_size=224):
    """Stanford Cars: task "car" (196 classes), official train / test split."""
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise DataError(f"cars196 option 'image_size' must be a positive integer, got {image_size!r}.")
    found = None
    if data_dir is not None:
        images.check_dir(data_dir, "cars196")
        found = _raw(data_dir)
    features, labels, split, from_file = found if found is not None else _tfds(data_dir)
    images.check_classes(labels, NUM_CLASSES, "cars196")
    resize = round(image_size * 256 / 224)
    return Source(name="cars196", tasks=[Task("car", role="primary", num_classes=NUM_CLASSES)], features=features,
                  labels={"car": labels}, official_split=split,
                  decode=images.make_decode(lambda img: images.resize_center_crop(img, resize, image_size), from_file),
                  is_image=True, image_shape=(image_size, image_size, 3),
                  augment=images.resize_crop_flip(resize), time=None)
