"""The data contract: what a dataset module returns (Source), what a pipeline
yields (AuxDataset), and the registry of dataset loaders.

Every split of an AuxDataset yields dict elements

    {"x": x, "task_x": {"rotation": rot90(x, k)},      # task_x only with a rotation task
     "labels": {task: y}, "mask": {task: 0./1.}, "id": int64 index within the split}

Classification labels are int32 scalars, binary/regression labels float32.
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


class AuxDataset:
    """Splits of one dataset under one Setting, as batched tf.data pipelines.

    Attributes: name, tasks (primary first), input_spec (TensorSpec nest of one x),
    num_train / num_dev / num_val / num_test, corrupted / labelled / clean_train_labels /
    train_labels ([num_train] arrays indexed by train id; train_labels are the primary
    labels as served, 0 where unlabelled), indices ({split: source row of each id}),
    setting. Built by pipelines.settings.make_dataset.
    """

    def __init__(self, source, setting, tasks, parts, indices, corrupted, labelled, clean_train_labels,
                 train_labels):
        self.name = source.name
        self.tasks = tasks
        self.setting = setting
        self.indices = indices
        self.corrupted, self.labelled = corrupted, labelled
        self.clean_train_labels, self.train_labels = clean_train_labels, train_labels
        self._source = source
        self._parts = parts
        self._rotation = any(t.input_key == rotation.NAME for t in tasks)
        self._augment = self._wrap_augment(source.augment)
        for split in ("train", "dev", "val", "test"):
            setattr(self, f"num_{split}", len(indices[split]))
        self._cache = self._cacheable()
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
        """One epoch of training batches: reshuffled every epoch, augmented, remainder dropped."""
        batch_size = _batch_size(batch_size)
        if batch_size > self.num_train:
            raise DataError(f"--batch_size {batch_size} exceeds the {self.num_train} training examples "
                            f"(the remainder is dropped, so an epoch would be empty).")
        ds = self._decoded("train", shuffle_seed=self._seed(1) if shuffle else None)
        noise = tf.data.Dataset.random(seed=self._seed(2), rerandomize_each_iteration=True)
        ds = tf.data.Dataset.zip((ds, noise)).map(lambda e, r: self._finish(e, True, r),
                                                  num_parallel_calls=AUTOTUNE)
        return ds.batch(batch_size, drop_remainder=True).prefetch(AUTOTUNE)

    def dev(self, batch_size=64):
        """Endless shuffled stream of clean dev batches (batch_size capped at num_dev)."""
        batch_size = min(_batch_size(batch_size), self.num_dev)
        if self.num_dev == 0:
            raise DataError("The dev split is empty; set --dev_size or --dev_per_class above 0.")
        ds = self._decoded("dev", shuffle_seed=self._seed(3)).repeat()
        ds = ds.map(lambda e: self._finish(e, False, None), num_parallel_calls=AUTOTUNE)
        return ds.batch(batch_size, drop_remainder=True).prefetch(AUTOTUNE)

    def train_with_dev(self, batch_size=64, dev_batch_size=None):
        """One training epoch zipped with the dev stream: {"train": batch, "dev": batch}."""
        pairs = tf.data.Dataset.zip((self.train(batch_size), self.dev(dev_batch_size or batch_size)))
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
        ds = self._decoded(split).map(lambda e: self._finish(e, False, None), num_parallel_calls=AUTOTUNE)
        return ds.batch(_batch_size(batch_size)).prefetch(AUTOTUNE)

    def _examples(self, split, rows=slice(None)):
        part = self._parts[split]
        n = len(self.indices[split])
        take = lambda a: a[rows]  # noqa: E731
        return tf.data.Dataset.from_tensor_slices({
            "f": tf.nest.map_structure(take, part["features"]),
            "labels": {k: take(v) for k, v in part["labels"].items()},
            "mask": {k: take(v) for k, v in part["mask"].items()},
            "id": take(np.arange(n, dtype=np.int64))})

    def _decode(self, e):
        src = self._source
        x = src.decode(e["f"]) if src.decode is not None else e["f"]
        if src.is_image:
            x = tf.ensure_shape(x, src.image_shape)
        return {"x": x, "labels": e["labels"], "mask": e["mask"], "id": e["id"]}

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

    def _decoded(self, split, shuffle_seed=None):
        """Examples with x decoded (cached when it fits), optionally reshuffled every iteration."""
        n = len(self.indices[split])
        ds = self._examples(split)
        shuffle = (lambda d: d.shuffle(n, seed=shuffle_seed, reshuffle_each_iteration=True)) \
            if shuffle_seed is not None else (lambda d: d)
        if not self._cache:
            return shuffle(ds).map(self._decode, num_parallel_calls=AUTOTUNE)
        return shuffle(ds.map(self._decode, num_parallel_calls=AUTOTUNE).cache())

    def _finish(self, e, training, draw):
        """Scale, augment (training), normalise, cast, add the rotation task."""
        x = e["x"]
        if self._source.is_image:
            x = _unit(x)
            if training and self._augment is not None:
                x = tf.ensure_shape(self._augment(x, tf.stack([draw // 4, e["id"]])), x.shape)
            x = (x - self._mean) / self._std
        else:
            x = tf.nest.map_structure(_float32, x)
        out = {"x": x, "labels": e["labels"], "mask": e["mask"], "id": e["id"]}
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
        src, rows = self._source, self.indices["train"]
        total, total_sq, count = 0.0, 0.0, 0
        if src.decode is None:
            pixels = self._parts["train"]["features"]
            scale = 255.0 if np.issubdtype(pixels.dtype, np.integer) else 1.0
            for start in range(0, len(pixels), 4096):
                chunk = pixels[start:start + 4096].astype(np.float64) / scale
                chunk = chunk.reshape(-1, chunk.shape[-1])
                total, total_sq, count = total + chunk.sum(0), total_sq + (chunk ** 2).sum(0), count + len(chunk)
        else:
            pick = np.random.default_rng(self._seed(4)).permutation(len(rows))[:STATS_SAMPLE]
            ds = self._examples("train", rows=np.sort(pick)).map(self._decode, num_parallel_calls=AUTOTUNE)
            for x in ds.map(lambda e: _unit(e["x"])).batch(256).as_numpy_iterator():
                x = x.astype(np.float64).reshape(-1, x.shape[-1])
                total, total_sq, count = total + x.sum(0), total_sq + (x ** 2).sum(0), count + len(x)
        mean = total / count
        std = np.sqrt(np.maximum(total_sq / count - mean ** 2, 0.0))
        return tf.constant(mean, tf.float32), tf.constant(np.maximum(std, 1e-6), tf.float32)
