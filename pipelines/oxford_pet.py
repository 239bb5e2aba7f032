"""Oxford-IIIT Pet: 37 cat and dog breeds ("breed", primary); optionally cat vs dog ("species", auxiliary).

Raw files (--data_dir): `images/*.jpg` with `annotations/trainval.txt` and `annotations/test.txt`
(lines `<image> <class 1..37> <species 1 cat, 2 dog> <breed id>`). Without raw files: TFDS
`oxford_iiit_pet`. Images: resize to 256/224 * image_size, central crop image_size (training
augmentation: random crop of the re-enlarged image and horizontal flip).
"""

import os

import numpy as np

from pipelines import images
from pipelines.contract import Source
from pipelines.errors import DataError
from tfaux.tasks import Task

SPLIT_FILES = {"train": "trainval.txt", "test": "test.txt"}
HINT = "the raw 'images/' and 'annotations/' folders (trainval.txt, test.txt)"


def _read_list(path):
    names, breed, species = [], [], []
    for i, ln in enumerate(images.read_lines(path), start=1):
        if ln.startswith("#"):
            continue
        p = ln.split()
        if len(p) < 3 or not (p[1].isdigit() and p[2] in ("1", "2")) or not 1 <= int(p[1]) <= 37:
            raise images.bad_line(path, i, "expected '<image> <class 1..37> <species 1|2> <breed id>'")
        names.append(p[0]), breed.append(int(p[1]) - 1), species.append(int(p[2]) - 1)
    return names, breed, species


def _raw(data_dir):
    root = images.find_root(data_dir, "oxford-iiit-pet", "annotations")
    if root is None:
        return None
    ann = os.path.join(root, "annotations")
    cols = {"path": [], "breed": [], "species": [], "split": []}
    for split, fname in SPLIT_FILES.items():
        names, breed, species = _read_list(images.require_file(ann, fname))
        cols["path"] += [os.path.join(root, "images", n + ".jpg") for n in names]
        cols["breed"] += breed
        cols["species"] += species
        cols["split"] += [split] * len(names)
    paths = np.array(cols["path"])
    images.existing_images(paths, "oxford_iiit_pet")
    return (paths, np.array(cols["breed"], np.int64), np.array(cols["species"], np.float32),
            np.array(cols["split"]), True)


def _tfds(data_dir):
    import tensorflow_datasets as tfds
    cols, split, _ = images.tfds_source(
        "oxford_iiit_pet", data_dir, raw_hint=HINT,
        decoders={"image": tfds.decode.SkipDecoding(), "segmentation_mask": tfds.decode.SkipDecoding()},
        select=lambda ex: {"image": ex["image"], "label": ex["label"], "species": ex["species"]})
    return cols["image"], cols["label"].astype(np.int64), cols["species"].astype(np.float32), split, False


def load_oxford_pet(data_dir=None, species=True, image_size=224):
    """Pet: "breed" (37 classes); with `species`, the binary auxiliary task "species" (1 = dog)."""
    if not isinstance(species, bool):
        raise DataError(f"oxford_iiit_pet option 'species' must be True or False, got {species!r}.")
    found = None
    if data_dir is not None:
        images.check_dir(data_dir, "oxford_iiit_pet")
        found = _raw(data_dir)
    features, breed, spec, split, from_file = found if found is not None else _tfds(data_dir)
    images.check_classes(breed, 37, "oxford_iiit_pet breeds")
    tasks = [Task("breed", role="primary", num_classes=37)]
    labels = {"breed": breed}
    if species:
        tasks.append(Task("species", role="auxiliary", kind="binary"))
        labels["species"] = spec
    resize = round(image_size * 256 / 224)
    return Source(name="oxford_iiit_pet", tasks=tasks, features=features, labels=labels, official_split=split,
                  decode=images.make_decode(lambda img: images.resize_center_crop(img, resize, image_size), from_file),
                  is_image=True, image_shape=(image_size, image_size, 3),
                  augment=images.resize_crop_flip(resize), time=None)
