"""CelebA: aligned face images with 40 binary attributes; one attribute primary, the others auxiliary.

Raw files (--data_dir): `img_align_celeba/*.jpg` and `list_attr_celeba.txt` (1/-1 per attribute),
optionally `list_eval_partition.txt` (0 train, 1 val, 2 test) for the official split; each may
also sit in the official `Img/`, `Anno/`, `Eval/` subfolders. Without raw files: TFDS `celeb_a`.
Images are centre-cropped to a square and resized to `image_size` (Sener & Koltun use 64).
"""

import os

import numpy as np

from pipelines import images
from pipelines.contract import Source
from pipelines.errors import DataError
from tfaux.tasks import Task

ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips",
    "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby",
    "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male",
    "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose",
    "Receding_Hairline", "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair",
    "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young")
ATTR_FILE, PART_FILE, IMG_DIR = "list_attr_celeba.txt", "list_eval_partition.txt", "img_align_celeba"
HINT = f"the raw '{IMG_DIR}/' folder and '{ATTR_FILE}'"
PARTS = {"0": "train", "1": "val", "2": "test"}


def _read_attrs(path):
    """(file names, {attribute: [N] 0/1 array}) from list_attr_celeba.txt."""
    lines = images.read_lines(path)
    if len(lines) < 2:
        raise DataError(f"File '{ATTR_FILE}' is truncated: it needs a count line and a header line.")
    header = lines[1].split()
    if sorted(header) != sorted(ATTRIBUTES):
        raise DataError(f"File '{ATTR_FILE}' line 2 should name the 40 CelebA attributes, got {len(header)} names.")
    names, values = [], []
    for i, ln in enumerate(lines[2:], start=3):
        p = ln.split()
        if len(p) != 41 or any(v not in ("1", "-1") for v in p[1:]):
            raise images.bad_line(path, i, "expected a file name and 40 values of 1 or -1")
        names.append(p[0]), values.append(p[1:])
    if not lines[0].strip().isdigit() or int(lines[0]) != len(names):
        raise DataError(f"File '{ATTR_FILE}' announces {lines[0].strip()!r} images on line 1 but lists {len(names)}.")
    v = (np.array(values, dtype=np.int8) > 0).astype(np.float32)
    return np.array(names), {a: v[:, header.index(a)] for a in ATTRIBUTES}


def _read_partition(path, names):
    part = {}
    for i, ln in enumerate(images.read_lines(path), start=1):
        p = ln.split()
        if len(p) != 2 or p[1] not in PARTS:
            raise images.bad_line(path, i, "expected '<file> 0|1|2'")
        part[p[0]] = PARTS[p[1]]
    missing = [n for n in names if n not in part]
    if missing:
        raise DataError(f"File '{PART_FILE}' has no partition for '{missing[0]}' ({len(missing)} images lack one).")
    return np.array([part[n] for n in names])


def _raw(data_dir):
    img_root = images.find_root(data_dir, "Img", IMG_DIR)
    if img_root is None:
        return None
    attr_root = images.find_root(data_dir, "Anno", ATTR_FILE) or data_dir
    names, attrs = _read_attrs(images.require_file(attr_root, ATTR_FILE))
    part_root = images.find_root(data_dir, "Eval", PART_FILE)
    split = _read_partition(os.path.join(part_root, PART_FILE), names) if part_root else None
    paths = np.array([os.path.join(img_root, IMG_DIR, n) for n in names])
    images.existing_images(paths, "celeb_a")
    return paths, attrs, split, True


def _tfds(data_dir):
    import tensorflow_datasets as tfds
    cols, split, _ = images.tfds_source(
        "celeb_a", data_dir, splits=("train", "validation", "test"), raw_hint=HINT,
        decoders={"image": tfds.decode.SkipDecoding()},
        select=lambda ex: {"image": ex["image"], **{a: ex["attributes"][a] for a in ATTRIBUTES}})
    return cols["image"], {a: cols[a].astype(np.float32) for a in ATTRIBUTES}, split, False


def load_celeb_a(data_dir=None, primary="Smiling", auxiliary=None, image_size=64):
    """CelebA with binary task `primary` and auxiliary binary tasks `auxiliary` (default: the other 39)."""
    if primary not in ATTRIBUTES:
        raise DataError(f"celeb_a option 'primary' must be one of the 40 CelebA attributes, got {primary!r}.")
    aux = [a for a in ATTRIBUTES if a != primary] if auxiliary is None else list(auxiliary)
    bad = [a for a in aux if a not in ATTRIBUTES or a == primary]
    if bad:
        raise DataError(f"celeb_a option 'auxiliary' names {bad[0]!r}, "
                        f"which is not a CelebA attribute other than the primary.")
    found = None
    if data_dir is not None:
        images.check_dir(data_dir, "celeb_a")
        found = _raw(data_dir)
    features, attrs, split, from_file = found if found is not None else _tfds(data_dir)
    tasks = [Task(primary, role="primary", kind="binary")] + [Task(a, role="auxiliary", kind="binary") for a in aux]
    return Source(name="celeb_a", tasks=tasks, features=features, labels={t.name: attrs[t.name] for t in tasks},
                  official_split=split,
                  decode=images.make_decode(lambda img: images.square_crop_resize(img, image_size), from_file),
                  is_image=True, image_shape=(image_size, image_size, 3), augment=images.flip(), time=None)
