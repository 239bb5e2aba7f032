"""CIFAR-10 and CIFAR-100: 32x32 colour images; CIFAR-100's 20 coarse labels as an auxiliary task,
or CIFAR-100 as 20 five-way tasks, one per superclass ("cifar100_tasks", seed 004).

Raw files (--data_dir, the folder itself or its parent): the official python-pickle folders
`cifar-10-batches-py/` (data_batch_1..5, test_batch) and `cifar-100-python/` (train, test), or
the binary folders `cifar-10-batches-bin/` (data_batch_1..5.bin, test_batch.bin) and
`cifar-100-binary/` (train.bin, test.bin). Without raw files: TFDS `cifar10` / `cifar100`.
"""

import os
import pickle

import numpy as np

from pipelines import images
from pipelines.contract import Source, register
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


def _source(name, x, labels, split, tasks, masks=None):
    for t in tasks:
        images.check_classes(labels[t.name], t.num_classes, f"{name} task '{t.name}'")
    return Source(name=name, tasks=tasks, features=x, labels={t.name: labels[t.name] for t in tasks},
                  official_split=split, decode=None, is_image=True, image_shape=SHAPE,
                  augment=images.pad_crop_flip(4), time=None, masks=masks)


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


# ---------------------------------------------------------------- CIFAR-100 as 20 five-way tasks
COARSE_NAMES = (
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
    "household_electrical_devices", "household_furniture", "insects", "large_carnivores",
    "large_man-made_outdoor_things", "large_natural_outdoor_scenes", "large_omnivores_and_herbivores",
    "medium_mammals", "non-insect_invertebrates", "people", "reptiles", "small_mammals", "trees",
    "vehicles_1", "vehicles_2")
# The official CIFAR-100 superclass of each fine class 0..99 (fine ids in the dataset's alphabetical order).
FINE_TO_COARSE = (
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
    6, 11, 5, 10, 7, 6, 13, 15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
    5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
    16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13)
# Task k's name: superclass k's name with '-' written '_' (task names become layer and metric names).
TASK_NAMES = tuple(n.replace("-", "_") for n in COARSE_NAMES)
TARGET_SEED = 0


def superclass_members(k):
    """The 5 fine-class ids of superclass k, sorted; fine id members[j] is label j of task k."""
    return [f for f, c in enumerate(FINE_TO_COARSE) if c == k]


def fine_to_task_label():
    """[100] int64: the 0..4 label of each fine class within its superclass's task."""
    out = np.zeros(100, np.int64)
    for k in range(20):
        out[superclass_members(k)] = np.arange(5)
    return out


def target_superclasses(targets=10):
    """The superclass ids whose tasks are targets: the first `targets` of the fixed permutation
    np.random.default_rng(0).permutation(20), sorted (so the choice is the same on every run and
    machine, and the targets of a smaller count are among those of a larger one)."""
    if isinstance(targets, bool) or not isinstance(targets, (int, np.integer)) or not 1 <= targets <= 20:
        raise DataError(f"cifar100_tasks option 'targets' must be an integer in 1..20, got {targets!r}.")
    return sorted(int(k) for k in np.random.default_rng(TARGET_SEED).permutation(20)[:int(targets)])


def load_cifar100_tasks(data_dir=None, targets=10):
    """CIFAR-100 as 20 five-way classification tasks, one per superclass (seed 004, Sec. 5.3,
    after Rosenbaum et al.): task `TASK_NAMES[k]` tells apart the 5 fine classes of superclass k,
    label j being its j-th fine class in increasing fine id (`superclass_members(k)`).

    Each image has a label for exactly one task, its superclass's: Source.masks marks it (its
    label for the 19 other tasks is 0, masked out). `targets` of the 20 tasks are targets (role
    "primary", listed first, in increasing superclass id; default 10, seed 004's "half of the
    tasks"), chosen by `target_superclasses` from np.random.default_rng(0), the others auxiliary.
    Raw files and TFDS fallback as for cifar100; the coarse labels read must agree with the official
    fine-to-superclass map FINE_TO_COARSE."""
    chosen = target_superclasses(targets)
    x, labels, split = _load("cifar100_tasks", data_dir, _raw100, "cifar100",
                             "the raw 'cifar-100-python/' or 'cifar-100-binary/' folder")
    fine, coarse = np.asarray(labels["label"]), np.asarray(labels["coarse"])
    images.check_classes(fine, 100, "cifar100_tasks fine labels")
    images.check_classes(coarse, 20, "cifar100_tasks coarse labels")
    wrong = np.flatnonzero(np.asarray(FINE_TO_COARSE)[fine] != coarse)
    if len(wrong):
        i = int(wrong[0])
        raise DataError(f"cifar100_tasks: example {i} has fine label {fine[i]} and coarse label {coarse[i]}, but "
                        f"CIFAR-100 puts fine class {fine[i]} in superclass {FINE_TO_COARSE[fine[i]]} "
                        f"({len(wrong)} examples disagree with the official superclass map).")
    within = fine_to_task_label()[fine]
    order = chosen + [k for k in range(20) if k not in chosen]
    tasks = [Task(TASK_NAMES[k], role="primary" if k in chosen else "auxiliary", num_classes=5) for k in order]
    task_labels = {TASK_NAMES[k]: np.where(coarse == k, within, 0).astype(np.int64) for k in range(20)}
    masks = {TASK_NAMES[k]: coarse == k for k in range(20)}
    return _source("cifar100_tasks", x, task_labels, split, tasks, masks)


register("cifar100_tasks", load_cifar100_tasks)
