"""The data contract: what a dataset module returns (Source), what a pipeline
yields (AuxDataset), and the registry of dataset loaders.

Every split of an AuxDataset yields dict elements

    {"x": x, "task_x": {"rotation": rot90(x, k),        # task_x only with a rotation task
                        "aux": x_aux},                  #   or an auxiliary dataset (--aux_dataset)
     "labels": {task: y}, "mask": {task: 0./1.}, "id": int64 index within the split}

Classification labels are int32 scalars, binary/regression labels float32. With an auxiliary
dataset (pipelines.aux_source), task_x["aux"] is an example of that other dataset, paired with
this element, and labels["aux_<its primary task>"] is its label.
"""

import dataclasses
import inspect
from typing import Any, Callable

import numpy as np
import tensorflow as tf

from pipelines import rotation
from pipelines.errors import DataError
from tfaux.tasks import Task, ordered

SPLITS = ("train", "val", "test")
AUTOTUNE = tf.data.AUTOTUNE
CACHE_LIMIT_BYTES = 1 << 30   # decoded examples are cached in memory up to this size
STATS_SAMPLE = 5000           # decoded sources: train images used for the mean/std


@dataclasses.dataclass
class Source:
    """A dataset in memory, before any experimental setting (see the module docstring).

    features: [N, ...] array or dict of them (file paths, ids, pixels).
    labels:   {task name: [N] array}; classification labels are ints in [0, num_classes).
    official_split: [N] strings among "train", "val", "test", or None.
    decode:   TF fn mapping one example's features to x (None: features are x).
    is_image: x is an [H, W, C] image with pixels in [0, 255] (integer dtype) or
              [0, 1] (float dtype); image_shape is (H, W, C).
    augment:  TF fn on one training x in [0, 1]: augment(x) or augment(x, seed) where
              seed is an int64 [2] tensor for tf.image.stateless_random_* ops.
    time:     [N] timestamps for chronological splits, or None.
    """

    name: str
    tasks: list
    features: Any
    labels: dict
    official_split: np.ndarray | None = None
    decode: Callable | None = None
    is_image: bool = False
    image_shape: tuple | None = None
    augment: Callable | None = None
    time: np.ndarray | None = None

    @property
    def num_examples(self):
        return len(tf.nest.flatten(self.features)[0])

    @property
    def primary(self) -> Task:
        return self.tasks[0]

    def validate(self):
        """Raise DataError naming the first inconsistent field."""
        where = f"Source '{self.name}'"
        try:
            tasks = ordered(self.tasks)
        except ValueError as e:
            raise DataError(f"{where}: field tasks is invalid: {e}") from None
        if tasks[0] is not self.tasks[0]:
            raise DataError(f"{where}: field tasks must list the primary task first.")
        arrays = tf.nest.flatten(self.features)
        if not arrays:
            raise DataError(f"{where}: field features is empty.")
        n = len(arrays[0])
        if n == 0 or any(len(a) != n for a in arrays):
            raise DataError(f"{where}: field features must be non-empty arrays sharing one leading dimension.")
        if set(self.labels) != {t.name for t in tasks}:
            raise DataError(f"{where}: field labels has keys {sorted(self.labels)} but the tasks are "
                            f"{[t.name for t in tasks]}.")
        for t in tasks:
            y = np.asarray(self.labels[t.name])
            if y.shape != (n,):
                raise DataError(f"{where}: field labels['{t.name}'] has shape {y.shape}, expected ({n},).")
            if t.kind == "classification" and (not np.issubdtype(y.dtype, np.integer)
                                               or y.min() < 0 or y.max() >= t.num_classes):
                raise DataError(f"{where}: field labels['{t.name}'] must hold integers in "
                                f"[0, {t.num_classes}).")
            if t.kind != "classification" and not np.all(np.isfinite(y.astype(np.float64))):
                raise DataError(f"{where}: field labels['{t.name}'] holds non-finite values.")
        for field in ("official_split", "time"):
            value = getattr(self, field)
            if value is not None and np.shape(value) != (n,):
                raise DataError(f"{where}: field {field} has shape {np.shape(value)}, expected ({n},).")
        if self.official_split is not None:
            bad = set(np.unique(self.official_split).tolist()) - set(SPLITS)
            if bad or not np.any(self.official_split == "train"):
                raise DataError(f"{where}: field official_split must hold 'train', 'val' or 'test' "
                                f"(with some 'train'); found {sorted(bad) or 'no train'}.")
        if self.is_image:
            if self.image_shape is None or len(self.image_shape) != 3:
                raise DataError(f"{where}: field image_shape must be (H, W, C) for an image source.")
            if self.decode is None and (not isinstance(self.features, np.ndarray)
                                        or self.features.shape[1:] != tuple(self.image_shape)):
                raise DataError(f"{where}: field features must be an array of shape [N, "
                                f"{', '.join(map(str, self.image_shape))}] when decode is None.")


# ---------------------------------------------------------------- registry
DATASETS: dict[str, Callable] = {}


def register(name, fn=None):
    """Register fn(data_dir) -> Source under `name`; usable as `@register("name")`."""
    if fn is None:
        return lambda f: register(name, f)
    old = DATASETS.get(name)
    if old is not None and (old.__module__, old.__qualname__) != (fn.__module__, fn.__qualname__):
        raise ValueError(f"Dataset '{name}' is already registered by {old.__module__}.{old.__qualname__}.")
    DATASETS[name] = fn
    return fn


# ---------------------------------------------------------------- AuxDataset
def _batch_size(value, flag="--batch_size"):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise DataError(f"{flag} must be a positive integer, got {value!r}.")
    return int(value)


def _unit(x):
    """Pixels to float32 in [0, 1]: integers are divided by 255, floats kept."""
    return tf.cast(x, tf.float32) / 255.0 if x.dtype.is_integer else tf.cast(x, tf.float32)


def _float32(x):
    return tf.cast(x, tf.float32) if x.dtype == tf.float64 else x


def pixel_stats(features, decode, image_shape, seed):
    """Per-channel mean and std (float32 tensors) of images in [0, 1]: every image of
    `features` when decode is None, else a seeded sample of STATS_SAMPLE decoded ones."""
    total, total_sq, count = 0.0, 0.0, 0
    if decode is None:
        scale = 255.0 if np.issubdtype(features.dtype, np.integer) else 1.0
        for start in range(0, len(features), 4096):
            chunk = features[start:start + 4096].astype(np.float64) / scale
            chunk = chunk.reshape(-1, chunk.shape[-1])
            total, total_sq, count = total + chunk.sum(0), total_sq + (chunk ** 2).sum(0), count + len(chunk)
    else:
        n = len(tf.nest.flatten(features)[0])
        pick = np.sort(np.random.default_rng(seed).permutation(n)[:STATS_SAMPLE])
        ds = tf.data.Dataset.from_tensor_slices(tf.nest.map_structure(lambda a: np.asarray(a)[pick], features))
        ds = ds.map(lambda f: _unit(tf.ensure_shape(decode(f), image_shape)), num_parallel_calls=AUTOTUNE)
        for x in ds.batch(256).as_numpy_iterator():
            x = x.astype(np.float64).reshape(-1, x.shape[-1])
            total, total_sq, count = total + x.sum(0), total_sq + (x ** 2).sum(0), count + len(x)
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean ** 2, 0.0))
    return tf.constant(mean, tf.float32), tf.constant(np.maximum(std, 1e-6), tf.float32)


class AuxDataset:
    """Splits of one dataset under one Setting, as batched tf.data pipelines.

    Attributes: name, tasks (primary first), input_spec (TensorSpec nest of one x),
    num_train / num_dev / num_val / num_test, corrupted / labelled / clean_train_labels /
    train_labels ([num_train] arrays indexed by train id; train_labels are the primary
    labels as served, 0 where unlabelled), indices ({split: source row of each id}),
    setting, aux (the pipelines.aux_source.AuxInput of --aux_dataset, or None) and
    aux_indices ({split: row of aux.rows paired with each id}, the fixed pairing every
    pipeline but `train` uses; {} without an auxiliary dataset). Built by
    pipelines.settings.make_dataset.

    Batch streams for model.fit:
      train(b)                  one epoch, shuffled and augmented (the lower objective);
      train_with_dev(b)         {"train": train(b), "dev": dev(b)}, dev a held-out clean set;
      train_with_reordered(b)   {"train": train(b), "dev": reordered(b)}, where the upper
                                objective reads the training set itself, independently
                                reshuffled and unaugmented (DTG-AuxL, seed 001).
    """

    def __init__(self, source, setting, tasks, parts, indices, corrupted, labelled, clean_train_labels,
                 train_labels, aux=None, aux_indices=None):
        self.name = source.name
        self.tasks = tasks
        self.setting = setting
        self.indices = indices
        self.corrupted, self.labelled = corrupted, labelled
        self.clean_train_labels, self.train_labels = clean_train_labels, train_labels
        self.aux = aux
        self.aux_indices = aux_indices or {}
        self._source = source
        self._parts = parts
        self._rotation = any(t.input_key == rotation.NAME for t in tasks)
        self._augment = self._wrap_augment(source.augment)
        for split in ("train", "dev", "val", "test"):
            setattr(self, f"num_{split}", len(indices[split]))
        self._cache = self._cacheable()
        self._tensors = {}
        # Whole batches are finished at once when nothing is per-example: no image ops, no
        # augmentation or rotation, no decode fn (here or in the auxiliary source).
        self._vector = (not source.is_image and source.decode is None and not self._rotation
                        and (aux is None or aux.source.decode is None))
        self._mean, self._std = self._image_stats() if source.is_image else (None, None)
        self.input_spec = self._examples("train", rows=slice(0, 1)).map(self._decode).map(
            lambda e: self._finish(e, False, None)).element_spec["x"]

    def __repr__(self):
        return (f"AuxDataset('{self.name}', tasks={[t.name for t in self.tasks]}, train={self.num_train}, "
                f"dev={self.num_dev}, val={self.num_val}, test={self.num_test})")

    @property
    def primary(self):
        return self.tasks[0]

    # ------------------------------------------------------------ public pipelines
    def train(self, batch_size=64, shuffle=True):
        """One epoch of training batches: reshuffled every epoch, augmented, remainder dropped.
        With an auxiliary dataset, each example is paired with an auxiliary training example
        drawn by a seeded shuffle of the auxiliary rows that changes every epoch."""
        batch_size = _batch_size(batch_size)
        if batch_size > self.num_train:
            raise DataError(f"--batch_size {batch_size} exceeds the {self.num_train} training examples "
                            f"(the remainder is dropped, so an epoch would be empty).")
        ds, get = self._base("train", shuffle_seed=self._seed(1) if shuffle else None)
        streams = [ds]
        if self.aux is not None:
            streams.append(self.aux.row_stream(self._seed(5)))
        if not self._vector:  # per-example randomness: augmentation, rotation
            streams.append(tf.data.Dataset.random(seed=self._seed(2), rerandomize_each_iteration=True))

        def finish(first, *rest):
            e = get(first)
            if self.aux is not None:
                e, rest = self._with_aux_row(e, rest[0]), rest[1:]
            return self._finish(e, True, rest[0] if rest else None)

        ds = tf.data.Dataset.zip(tuple(streams)) if len(streams) > 1 else ds
        return self._batch_and_finish(ds, batch_size, True, finish)

    def dev(self, batch_size=64):
        """Endless shuffled stream of clean dev batches (batch_size capped at num_dev)."""
        batch_size = min(_batch_size(batch_size), self.num_dev)
        if self.num_dev == 0:
            raise DataError("The dev split is empty; set --dev_size or --dev_per_class above 0.")
        return self._plain("dev", batch_size, drop_remainder=True, shuffle_seed=self._seed(3), repeat=True)

    def train_with_dev(self, batch_size=64, dev_batch_size=None):
        """One training epoch zipped with the dev stream: {"train": batch, "dev": batch}."""
        pairs = tf.data.Dataset.zip((self.train(batch_size), self.dev(dev_batch_size or batch_size)))
        return pairs.map(lambda t, d: {"train": t, "dev": d})

    def reordered(self, batch_size=64):
        """Endless stream of the training split itself as an upper-level objective (DTG-AuxL):
        the primary-labelled training examples with their labels as served (possibly noisy),
        every mask as in train (so the primary mask is 1), unaugmented, with the fixed
        rotation / auxiliary pairing of train_eval, in a seeded order reshuffled every pass
        and independent of train's. batch_size is capped at the number of labelled examples."""
        rows = np.flatnonzero(self._parts["train"]["mask"][self.primary.name] > 0)
        if len(rows) == 0:
            raise DataError("No training example keeps its primary label; raise --label_fraction or "
                            "--shots_per_class.")
        batch_size = min(_batch_size(batch_size), len(rows))
        return self._plain("train", batch_size, drop_remainder=True, shuffle_seed=self._seed(6), rows=rows,
                           repeat=True)

    def train_with_reordered(self, batch_size=64, dev_batch_size=None):
        """One training epoch zipped with the reordered training stream: {"train": batch,
        "dev": batch}, where "dev" comes from reordered() instead of the dev split. Feed it to
        model.fit like train_with_dev; a bi-level strategy then takes its upper steps on
        the training set itself (DTG-AuxL uses the training set as its upper objective)."""
        pairs = tf.data.Dataset.zip((self.train(batch_size), self.reordered(dev_batch_size or batch_size)))
        return pairs.map(lambda t, d: {"train": t, "dev": d})

    def val(self, batch_size=256):
        return self._ordered("val", batch_size)

    def test(self, batch_size=256):
        return self._ordered("test", batch_size)

    def train_eval(self, batch_size=256):
        """The training split in id order, unaugmented, remainder kept (inspect per-example weights)."""
        return self._ordered("train", batch_size)

    # ------------------------------------------------------------ internals
    def _seed(self, stream):
        return int(self.setting.seed) * 7919 + stream

    def _ordered(self, split, batch_size):
        return self._plain(split, _batch_size(batch_size))

    def _plain(self, split, batch_size, drop_remainder=False, shuffle_seed=None, rows=None, repeat=False):
        """Unaugmented batches of a split (ids `rows` only), optionally shuffled and endless."""
        ds, get = self._base(split, shuffle_seed=shuffle_seed, rows=rows)
        if repeat:
            ds = ds.repeat()
        return self._batch_and_finish(ds, batch_size, drop_remainder, lambda e: self._finish(get(e), False, None))

    def _batch_and_finish(self, ds, batch_size, drop_remainder, finish):
        """Batches of finish(element): finished one example at a time, or a whole batch at
        once (vectorised) when nothing in it is per-example (self._vector)."""
        if self._vector:
            ds = ds.batch(batch_size, drop_remainder=drop_remainder)
            ds = ds.map(finish, num_parallel_calls=AUTOTUNE)
        else:
            ds = ds.map(finish, num_parallel_calls=AUTOTUNE).batch(batch_size, drop_remainder=drop_remainder)
        return ds.prefetch(AUTOTUNE)

    def _base(self, split, shuffle_seed=None, rows=None):
        """(ds, get): the examples of a split (of ids `rows` only), optionally reshuffled every
        iteration, and the TF fn turning one element of ds (or a batch of them) into
        {"x", "labels", "mask", "id"[, "aux_row"]}. Sources without a decode fn yield int64
        ids that `get` gathers from the split's arrays (a shuffle buffer of ids fills fast,
        and gathers vectorise; a shuffle of ids with one seed gives the same order as a shuffle
        of the examples); the others yield decoded examples (cached when they fit)."""
        if self._source.decode is not None:
            return self._decoded(split, shuffle_seed=shuffle_seed, rows=rows), lambda e: e
        ids = np.arange(len(self.indices[split]), dtype=np.int64) if rows is None else np.asarray(rows, np.int64)
        ds = tf.data.Dataset.from_tensor_slices(ids)
        if shuffle_seed is not None:
            ds = ds.shuffle(len(ids), seed=shuffle_seed, reshuffle_each_iteration=True)
        arrays = self._arrays(split)
        return ds, lambda i: self._gather(arrays, i)

    def _arrays(self, split):
        """The split's features, labels, masks (and auxiliary rows) as tensors, made once."""
        if split not in self._tensors:
            part = self._parts[split]
            arrays = {"f": part["features"], "labels": part["labels"], "mask": part["mask"]}
            if self.aux is not None:
                arrays["aux_row"] = self.aux_indices[split]
            self._tensors[split] = tf.nest.map_structure(tf.constant, arrays)
        return self._tensors[split]

    def _gather(self, arrays, ids):
        """Example(s) `ids` (a scalar or a vector) of a split's arrays."""
        e = tf.nest.map_structure(lambda a: tf.gather(a, ids), arrays)
        x = e["f"]
        if self._source.is_image and ids.shape.rank == 0:
            x = tf.ensure_shape(x, self._source.image_shape)
        out = {"x": x, "labels": e["labels"], "mask": e["mask"], "id": ids}
        if "aux_row" in e:
            out["aux_row"] = e["aux_row"]
        return out

    def _examples(self, split, rows=slice(None)):
        part = self._parts[split]
        n = len(self.indices[split])
        take = lambda a: a[rows]  # noqa: E731
        examples = {
            "f": tf.nest.map_structure(take, part["features"]),
            "labels": {k: take(v) for k, v in part["labels"].items()},
            "mask": {k: take(v) for k, v in part["mask"].items()},
            "id": take(np.arange(n, dtype=np.int64))}
        if self.aux is not None:
            examples["aux_row"] = take(self.aux_indices[split])
        return tf.data.Dataset.from_tensor_slices(examples)

    def _decode(self, e):
        src = self._source
        x = src.decode(e["f"]) if src.decode is not None else e["f"]
        if src.is_image:
            x = tf.ensure_shape(x, src.image_shape)
        out = {"x": x, "labels": e["labels"], "mask": e["mask"], "id": e["id"]}
        if "aux_row" in e:
            out["aux_row"] = e["aux_row"]
        return out

    def _with_aux_row(self, e, row):
        """Pair a training example (or batch) with auxiliary row(s) `row`, label and all."""
        return {**e, "aux_row": row, "labels": {**e["labels"], self.aux.task.name: self.aux.label(row)}}

    def _cacheable(self):
        """Decoded examples are cached in memory when a decode fn exists and they fit."""
        if self._source.decode is None:
            return False
        spec = self._examples("train", rows=slice(0, 1)).map(self._decode).element_spec["x"]
        specs = tf.nest.flatten(spec)
        if not all(s.shape.is_fully_defined() for s in specs):
            return False
        per_example = sum(int(np.prod(s.shape)) * s.dtype.size for s in specs)
        return per_example * self._source.num_examples <= CACHE_LIMIT_BYTES

    def _decoded(self, split, shuffle_seed=None, rows=None):
        """Examples (all, or those of ids `rows`) with x decoded (cached when it fits),
        optionally reshuffled every iteration."""
        n = len(self.indices[split]) if rows is None else len(rows)
        ds = self._examples(split, rows=slice(None) if rows is None else rows)
        shuffle = (lambda d: d.shuffle(n, seed=shuffle_seed, reshuffle_each_iteration=True)) \
            if shuffle_seed is not None else (lambda d: d)
        if not self._cache:
            return shuffle(ds).map(self._decode, num_parallel_calls=AUTOTUNE)
        return shuffle(ds.map(self._decode, num_parallel_calls=AUTOTUNE).cache())

    def _finish(self, e, training, draw):
        """Scale, augment (training), normalise, cast, add the auxiliary input and the rotation task."""
        x = e["x"]
        if self._source.is_image:
            x = _unit(x)
            if training and self._augment is not None:
                x = tf.ensure_shape(self._augment(x, tf.stack([draw // 4, e["id"]])), x.shape)
            x = (x - self._mean) / self._std
        else:
            x = tf.nest.map_structure(_float32, x)
        out = {"x": x, "labels": e["labels"], "mask": e["mask"], "id": e["id"]}
        if self.aux is not None:
            out["task_x"] = {self.aux.input_key: self.aux.example(e["aux_row"])}
        if self._rotation:
            k = rotation.random_k(draw) if training else rotation.eval_k(e["id"])
            out = rotation.add_rotation(out, k)
        return out

    @staticmethod
    def _wrap_augment(fn):
        if fn is None:
            return None
        try:
            two = len(inspect.signature(fn).parameters) >= 2
        except (TypeError, ValueError):
            two = False
        return fn if two else (lambda x, seed: fn(x))

    def _image_stats(self):
        """Per-channel mean and std of training pixels in [0, 1] (a seeded sample if decoded)."""
        src = self._source
        return pixel_stats(self._parts["train"]["features"], src.decode, src.image_shape, self._seed(4))
