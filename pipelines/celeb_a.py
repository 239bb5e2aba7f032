"""CelebA: aligned face images with 40 binary attributes; one attribute primary, the others auxiliary
("celeb_a"), or all 40 as tasks with the 23 hardest as targets ("celeb_a_tasks", seed 004).

Raw files (--data_dir): `img_align_celeba/*.jpg` and `list_attr_celeba.txt` (1/-1 per attribute),
optionally `list_eval_partition.txt` (0 train, 1 val, 2 test) for the official split; each may
also sit in the official `Img/`, `Anno/`, `Eval/` subfolders. Without raw files: TFDS `celeb_a`.
Images are centre-cropped to a square and resized to `image_size` (Sener & Koltun use 64).
"""

import os

import numpy as np

from pipelines import images
from pipelines.contract import Source, register
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


# ---------------------------------------------------------------- all 40 attributes, 23 targets
# Share of positive labels of each attribute on CelebA's official training partition (0 in
# list_eval_partition.txt), approximately (to 0.01; these are the commonly reported CelebA label
# frequencies, not computed in this repository, which holds no copy of CelebA). Errors of that size do
# not move HARDEST_23: the nearest attributes on either side of its boundary (Bushy_Eyebrows 0.14 in,
# Wearing_Necklace 0.12 out) are 0.02 apart. Check against the real files with
# rank_by_entropy(source.labels, source.official_split == "train")[:23].
TRAIN_POSITIVE_RATE = {
    "5_o_Clock_Shadow": 0.11, "Arched_Eyebrows": 0.27, "Attractive": 0.51, "Bags_Under_Eyes": 0.20,
    "Bald": 0.02, "Bangs": 0.15, "Big_Lips": 0.24, "Big_Nose": 0.23, "Black_Hair": 0.24, "Blond_Hair": 0.15,
    "Blurry": 0.05, "Brown_Hair": 0.21, "Bushy_Eyebrows": 0.14, "Chubby": 0.06, "Double_Chin": 0.05,
    "Eyeglasses": 0.07, "Goatee": 0.06, "Gray_Hair": 0.04, "Heavy_Makeup": 0.39, "High_Cheekbones": 0.46,
    "Male": 0.42, "Mouth_Slightly_Open": 0.48, "Mustache": 0.04, "Narrow_Eyes": 0.12, "No_Beard": 0.83,
    "Oval_Face": 0.28, "Pale_Skin": 0.04, "Pointy_Nose": 0.28, "Receding_Hairline": 0.08, "Rosy_Cheeks": 0.07,
    "Sideburns": 0.06, "Smiling": 0.48, "Straight_Hair": 0.21, "Wavy_Hair": 0.32, "Wearing_Earrings": 0.19,
    "Wearing_Hat": 0.05, "Wearing_Lipstick": 0.47, "Wearing_Necklace": 0.12, "Wearing_Necktie": 0.07,
    "Young": 0.77}


def _entropy(p):
    p = min(max(float(p), 1e-12), 1 - 1e-12)
    return -(p * np.log2(p) + (1 - p) * np.log2(1 - p))


def rank_by_entropy(rates, rows=None):
    """Attributes from hardest to easiest: by decreasing entropy of their binary label distribution
    (a balanced attribute is hard, a rare one easy: always answering "no" already gets it right),
    ties broken by ATTRIBUTES order. `rates`: {attribute: share of positives}, or {attribute: [N]
    0/1 labels} whose mean over `rows` (a [N] bool mask, None: all) is taken."""
    def share(v):
        v = np.asarray(v, np.float64)
        return float(v) if v.ndim == 0 else float(v[rows].mean() if rows is not None else v.mean())
    h = {a: _entropy(share(rates[a])) for a in ATTRIBUTES}
    return tuple(sorted(ATTRIBUTES, key=lambda a: (-h[a], ATTRIBUTES.index(a))))


# Seed 004 takes "the hardest 23 tasks as the target ones" without naming them. No per-attribute
# error table of a single-task baseline could be found to rank them, so "hardest" is the entropy of
# the attribute's label distribution on the official training split (TRAIN_POSITIVE_RATE): the 23
# most balanced attributes, most balanced first.
HARDEST_23 = rank_by_entropy(TRAIN_POSITIVE_RATE)[:23]


def load_celeb_a_tasks(data_dir=None, image_size=64):
    """CelebA with all 40 attributes as binary tasks (seed 004, Sec. 5.3): the 23 of HARDEST_23
    are targets (role "primary", hardest first, so HARDEST_23[0] is the exported task), the other
    17 auxiliary (in ATTRIBUTES order). Files, split and images as for celeb_a."""
    aux = [a for a in ATTRIBUTES if a not in HARDEST_23]
    source = load_celeb_a(data_dir, primary=HARDEST_23[0], auxiliary=list(HARDEST_23[1:]) + aux,
                          image_size=image_size)
    roles = {a: "primary" for a in HARDEST_23}
    source.name = "celeb_a_tasks"
    source.tasks = [Task(t.name, role=roles.get(t.name, "auxiliary"), kind="binary") for t in source.tasks]
    return source


register("celeb_a_tasks", load_celeb_a_tasks)
