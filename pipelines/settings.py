"""Experimental settings, orthogonal to datasets: splits, dev set, label fraction /
K-shot, label noise, rotation auxiliary, a different-input auxiliary dataset, a
random-label (harmful) auxiliary.
`make_dataset(source, setting)` applies one.

All random choices come from numpy's default_rng(setting.seed); counts are exact
(Python's round). Noise only ever touches training labels; dev, val and test are clean.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from pipelines import aux_source as aux_lib
from pipelines import exemplar, rotation
from pipelines.contract import AuxDataset, Source
from pipelines.errors import DataError
from tfaux.tasks import Task

NOISE_KINDS = ("uniform", "pair_flip")
RANDOM = "random"  # the task of --random_auxiliary
AUTO_DEV_MAX, AUTO_DEV_SHARE = 200, 0.35


@dataclasses.dataclass
class Setting:
    """One experimental setting; every field is validated (DataError naming `--field`).

    dev_size:        clean primary examples taken (stratified) out of the validation part.
                     None (default): min(200, round(0.35 * validation part)), e.g. 200 for
                     MNIST and 101 for digits (whose validation part holds 288).
    dev_per_class:   if > 0, K examples per class taken out of train instead (dev_size ignored).
    val_fraction:    share of the non-test examples held out for validation (dev included),
                     used when the source has no official val split.
    test_fraction:   share of all examples held out for test, when there is no official test split.
    label_fraction:  share of training examples whose primary label is kept (stratified).
    shots_per_class: if > 0, only K labelled primary examples per class (K-shot).
    num_labelled:    if > 0, exactly this many labelled primary training examples (stratified).
    drop_unlabelled: remove the training examples whose primary label is not kept, so the
                     limits above shrink the training set (seed 002's "5% of the training set",
                     "30 samples per class") instead of making it semi-supervised.
    noise_rate:      share of the labelled training examples whose primary label is corrupted.
    noise_kind:      "uniform" (a uniformly drawn different class) or "pair_flip" (c -> c+1 mod C).
    rotation:        add the 4-way rotation auxiliary task to image sources.
    exemplar:        add the Exemplar-MT auxiliary task (pipelines.exemplar) to image sources.
    aux_dataset:     name of a registered dataset whose training examples become one more
                     auxiliary task, aux_<its primary task>, read from task_x["aux"]
                     (DTG-AuxL; see pipelines.aux_source). None: no auxiliary dataset.
    random_auxiliary: if > 0 (then >= 2), one more auxiliary task named "random", N-way
                     classification of batch["x"], whose label for every example of every
                     split is drawn uniformly from range(N) once per run: pure noise, a
                     deliberately harmful auxiliary (seed 001's DTG-AuxL setting). 0: none.
    chronological:   split by the source's timestamps (oldest train, newest test), using the
                     fractions above and ignoring any official split.
    seed:            seeds every split, selection, shuffle and random rotation.
    """

    dev_size: int | None = None
    dev_per_class: int = 0
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    label_fraction: float = 1.0
    shots_per_class: int = 0
    num_labelled: int = 0
    drop_unlabelled: bool = False
    noise_rate: float = 0.0
    noise_kind: str = "uniform"
    rotation: bool = True
    exemplar: bool = False
    chronological: bool = False
    seed: int = 0
    aux_dataset: str | None = None
    random_auxiliary: int = 0

    def __post_init__(self):
        def integer(name, minimum, optional=False):
            v = getattr(self, name)
            if optional and v is None:
                return
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
                raise DataError(f"--{name} must be an integer >= {minimum}, got {v!r}.")

        def fraction(name, low, high, closed_high):
            v = getattr(self, name)
            ok = (not isinstance(v, bool) and isinstance(v, (int, float, np.number))
                  and low < v and (v <= high if closed_high else v < high))
            if name == "noise_rate":
                ok = ok or (not isinstance(v, bool) and v == 0)
            if not ok:
                lo = "[0" if name == "noise_rate" else "(0"
                raise DataError(f"--{name} must be in {lo}, {high}{']' if closed_high else ')'}, got {v!r}.")

        integer("dev_size", 0, optional=True)
        integer("dev_per_class", 0)
        integer("shots_per_class", 0)
        integer("num_labelled", 0)
        integer("seed", 0)
        fraction("val_fraction", 0, 1, False)
        fraction("test_fraction", 0, 1, False)
        fraction("label_fraction", 0, 1, True)
        fraction("noise_rate", 0, 1, False)
        if self.noise_kind not in NOISE_KINDS:
            raise DataError(f"--noise_kind must be one of {', '.join(NOISE_KINDS)}, got {self.noise_kind!r}.")
        for name in ("rotation", "exemplar", "chronological", "drop_unlabelled"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise DataError(f"--{name} must be a boolean, got {getattr(self, name)!r}.")
        v = self.random_auxiliary
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0 or v == 1:
            raise DataError(f"--random_auxiliary must be >= 2 (classes of the random labels) or 0 (none), "
                            f"got {v!r}.")
        if self.aux_dataset is not None and (not isinstance(self.aux_dataset, str) or not self.aux_dataset):
            raise DataError(f"--aux_dataset must be a registered dataset name, got {self.aux_dataset!r}.")
        limits = [f"--{name}" for name, off in (("shots_per_class", 0), ("label_fraction", 1), ("num_labelled", 0))
                  if getattr(self, name) != off]
        if len(limits) > 1:
            raise DataError(f"{' and '.join(limits)} each limit the labelled examples; set only one.")


# ---------------------------------------------------------------- selection helpers
def _pick(rows, n, strata, rng):
    """(chosen, rest): n of `rows` at random, proportionally per stratum when strata is given."""
    rows = np.asarray(rows)
    n = int(n)
    if strata is None:
        chosen = rng.choice(rows, n, replace=False)
    else:
        s = strata[rows]
        classes, counts = np.unique(s, return_counts=True)
        quota = counts * n / len(rows)
        base = np.floor(quota).astype(int)
        extra = np.lexsort((rng.random(len(classes)), -(quota - base)))[: n - base.sum()]
        base[extra] += 1
        chosen = np.concatenate([rng.choice(rows[s == c], k, replace=False) for c, k in zip(classes, base)])
    chosen = np.sort(chosen)
    return chosen, np.setdiff1d(rows, chosen)


def _per_class(rows, k, y, num_classes, rng, flag):
    """(chosen, rest): k rows of every class, or DataError naming the flag."""
    chosen = []
    for c in range(num_classes):
        of_c = rows[y[rows] == c]
        if len(of_c) < k:
            raise DataError(f"--{flag} {k} needs {k} training examples of every class, but class {c} has "
                            f"{len(of_c)}.")
        chosen.append(rng.choice(of_c, k, replace=False))
    chosen = np.sort(np.concatenate(chosen))
    return chosen, np.setdiff1d(rows, chosen)


def _splits(source, setting, strata, rng):
    """train, val (dev included), test rows of the source."""
    n = source.num_examples
    pool = np.arange(n)
    if setting.chronological:
        if source.time is None:
            raise DataError(f"--chronological needs timestamps, but dataset '{source.name}' has none.")
        order = np.argsort(source.time, kind="stable")
        n_test = round(setting.test_fraction * n)
        n_val = round(setting.val_fraction * (n - n_test))
        return (np.sort(order[: n - n_test - n_val]), np.sort(order[n - n_test - n_val: n - n_test]),
                np.sort(order[n - n_test:]))
    official = None if source.official_split is None else np.asarray(source.official_split)
    if official is None:
        test, rest = _pick(pool, round(setting.test_fraction * n), strata, rng)
        val, train = _pick(rest, round(setting.val_fraction * len(rest)), strata, rng)
        return train, val, test
    train, val, test = (pool[official == s] for s in ("train", "val", "test"))
    if len(test) == 0:
        test, train = _pick(train, round(setting.test_fraction * n), strata, rng)
    if len(val) == 0:
        val, train = _pick(train, round(setting.val_fraction * len(train)), strata, rng)
    return train, val, test


def _noise(y, labelled_rows, setting, task, rng):
    """Noisy copy of train labels y and the corrupted flags (among labelled rows only)."""
    corrupted = np.zeros(len(y), bool)
    if setting.noise_rate == 0:
        return y.copy(), corrupted
    if task.kind not in ("classification", "binary"):
        raise DataError(f"--noise_rate needs a classification or binary primary task; '{task.name}' is {task.kind}.")
    hit = rng.choice(labelled_rows, round(setting.noise_rate * len(labelled_rows)), replace=False)
    noisy = y.copy()
    if task.kind == "binary":
        noisy[hit] = 1 - y[hit]
    elif setting.noise_kind == "pair_flip":
        noisy[hit] = (y[hit] + 1) % task.num_classes
    else:
        noisy[hit] = (y[hit] + rng.integers(1, task.num_classes, len(hit))) % task.num_classes
    corrupted[hit] = True
    return noisy, corrupted


def random_task(num_classes):
    """The auxiliary task of --random_auxiliary: num_classes-way classification of batch["x"]."""
    return Task(RANDOM, role="auxiliary", kind="classification", num_classes=int(num_classes))


def _label_dtype(task):
    return np.int32 if task.kind in ("classification", "dense_classification") else np.float32


# ---------------------------------------------------------------- make_dataset
def make_dataset(source: Source, setting: Setting | None = None, aux_source: Source | None = None) -> AuxDataset:
    """Split, carve dev, hide labels, add noise, rotation, the auxiliary dataset and the random
    auxiliary: the AuxDataset of a Source. aux_source: the Source of setting.aux_dataset, already read
    (default: read from the registry without a data dir); it needs setting.aux_dataset."""
    setting = setting if setting is not None else Setting()
    if aux_source is not None and setting.aux_dataset is None:
        raise DataError(f"An auxiliary source '{aux_source.name}' was given but --aux_dataset is not set.")
    source.validate()
    for field, why in (source.fixed_settings or {}).items():
        if getattr(setting, field) != getattr(Setting, field):
            raise DataError(f"--{field} does not apply to dataset '{source.name}': {why}.")
    primary = source.primary
    rng = np.random.default_rng(setting.seed)
    y = np.asarray(source.labels[primary.name])
    discrete = primary.kind in ("classification", "binary")
    strata = y if discrete else None
    num_classes = primary.num_classes if primary.kind == "classification" else 2
    per_class_flags = [f for f in ("dev_per_class", "shots_per_class") if getattr(setting, f) > 0]
    if per_class_flags and not discrete:
        raise DataError(f"--{per_class_flags[0]} needs a classification or binary primary task; "
                        f"'{primary.name}' is {primary.kind}.")

    train, val, test = _splits(source, setting, strata, rng)
    if setting.dev_per_class > 0:
        dev, train = _per_class(train, setting.dev_per_class, y.astype(int), num_classes, rng, "dev_per_class")
    else:
        dev_size = setting.dev_size
        if dev_size is None:
            dev_size = min(AUTO_DEV_MAX, round(AUTO_DEV_SHARE * len(val)))
        if dev_size >= len(val):
            raise DataError(f"--dev_size {dev_size} needs a validation part larger than that, but dataset "
                            f"'{source.name}' holds {len(val)} validation examples; lower --dev_size or "
                            f"raise --val_fraction.")
        dev, val = _pick(val, dev_size, strata, rng)
    if len(train) == 0 or len(test) == 0:
        raise DataError(f"Dataset '{source.name}' has no {'training' if len(train) == 0 else 'test'} examples "
                        f"left under --val_fraction / --test_fraction / --dev_size.")

    # Which training labels are kept, then noise among them (train ids index these arrays).
    n_train, ids = len(train), np.arange(len(train))
    if setting.shots_per_class > 0:
        kept, _ = _per_class(ids, setting.shots_per_class, y[train].astype(int), num_classes, rng, "shots_per_class")
    elif setting.num_labelled > 0:
        if setting.num_labelled > n_train:
            raise DataError(f"--num_labelled {setting.num_labelled} exceeds the {n_train} training examples of "
                            f"dataset '{source.name}'.")
        kept, _ = _pick(ids, setting.num_labelled, y[train] if discrete else None, rng)
    else:
        kept, _ = _pick(ids, round(setting.label_fraction * n_train), y[train] if discrete else None, rng)
    if len(kept) == 0:
        raise DataError(f"--label_fraction {setting.label_fraction} keeps no labelled primary example of the "
                        f"{n_train} training examples of dataset '{source.name}'; raise it.")
    if setting.drop_unlabelled:  # a smaller, fully labelled training set
        train, kept = train[kept], np.arange(len(kept))
        n_train = len(train)
    labelled = np.zeros(n_train, bool)
    labelled[kept] = True
    clean = y[train].astype(_label_dtype(primary))
    noisy, corrupted = _noise(clean, kept, setting, primary, rng)
    served = np.where(labelled.reshape((-1,) + (1,) * (noisy.ndim - 1)), noisy, 0).astype(clean.dtype)  # dense: per map
    # Random auxiliary labels: one uniform draw per source example, last, so no other draw moves.
    random_labels = (rng.integers(0, setting.random_auxiliary, source.num_examples).astype(np.int32)
                     if setting.random_auxiliary > 0 else None)

    tasks = list(source.tasks)
    if source.is_image and setting.rotation:
        if any(t.name == rotation.NAME for t in tasks):
            raise DataError(f"Dataset '{source.name}' already has a task named 'rotation'; pass --norotation.")
        h, w, _ = source.image_shape
        if h != w:
            raise DataError(f"--rotation needs square images, but dataset '{source.name}' has {h}x{w}; "
                            f"pass --norotation.")
        tasks.append(rotation.rotation_task())
    if setting.exemplar:
        if not source.is_image:
            raise DataError(f"--exemplar needs images, but dataset '{source.name}' has none; pass --noexemplar.")
        if any(t.name == exemplar.NAME for t in tasks):
            raise DataError(f"Dataset '{source.name}' already has a task named 'exemplar'; pass --noexemplar.")
        tasks.append(exemplar.exemplar_task())
    aux = None
    if setting.aux_dataset is not None:
        if aux_source is None:
            aux_source = aux_lib.resolve(setting.aux_dataset)
        aux = aux_lib.AuxInput(aux_source, source, seed=int(setting.seed) * 7919 + 7)
        if any(t.name == aux.task.name for t in tasks):
            raise DataError(f"--aux_dataset '{setting.aux_dataset}' would add task '{aux.task.name}', but "
                            f"dataset '{source.name}' already has a task of that name.")
        tasks.append(aux.task)
    if random_labels is not None:
        if any(t.name == RANDOM for t in tasks):
            raise DataError(f"--random_auxiliary would add task '{RANDOM}', but dataset '{source.name}' already "
                            f"has a task of that name.")
        tasks.append(random_task(setting.random_auxiliary))

    def part(rows, split):
        labels = {t.name: np.asarray(source.labels[t.name])[rows].astype(_label_dtype(t)) for t in source.tasks}
        mask = {t.name: source.mask(t.name)[rows] for t in source.tasks}
        if split == "train":
            labels[primary.name] = served
            mask[primary.name] = mask[primary.name] * labelled.astype(np.float32)
        if split == "dev":  # the upper level sees the target tasks' labels only
            for t in source.tasks:
                if not t.is_primary:
                    labels[t.name] = np.zeros_like(labels[t.name])
                    mask[t.name] = np.zeros(len(rows), np.float32)
        if aux is not None:  # the fixed pairing; train() redraws it every epoch
            labels[aux.task.name] = aux.labels[aux_indices[split]]
            mask[aux.task.name] = np.full(len(rows), 0.0 if split == "dev" else 1.0, np.float32)
        if random_labels is not None:  # every example has one; dev (upper level) masks it out
            labels[RANDOM] = random_labels[rows]
            mask[RANDOM] = np.full(len(rows), 0.0 if split == "dev" else 1.0, np.float32)
        features = tf.nest.map_structure(lambda a: np.asarray(a)[rows], source.features)
        return {"features": features, "labels": labels, "mask": mask}

    indices = {"train": train, "dev": dev, "val": val, "test": test}
    aux_indices = {} if aux is None else {
        split: aux.pairing(len(rows), (int(setting.seed), 8, k)) for k, (split, rows) in enumerate(indices.items())}
    parts = {split: part(rows, split) for split, rows in indices.items()}
    return AuxDataset(source, setting, tasks, parts, indices, corrupted, labelled, clean, served,
                      aux=aux, aux_indices=aux_indices)
