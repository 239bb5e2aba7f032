"""The data contract: what a dataset module returns (Source), what a pipeline
yields (AuxDataset), and the registry of dataset loaders.

Every split of an AuxDataset yields dict elements

    {"x": x, "task_x": {"rotation": rot90(x, k),        # task_x only with a rotation task
                        "aux": x_aux},                  #   or an auxiliary dataset (--aux_dataset)
     "labels": {task: y}, "mask": {task: 0./1.}, "id": int64 index within the split}

Classification labels are int32 scalars, binary/regression labels float32; dense (per-pixel)
labels are [H, W] int32 class maps or [H, W, channels] float32 targets. With an auxiliary
dataset (pipelines.aux_source), task_x["aux"] is an example of that other dataset, paired with
this element, and labels["aux_<its primary task>"] is its label.
"""

import dataclasses
import inspect
from typing import Any, Callable

import keras
import numpy as np
import tensorflow as tf

from pipelines import exemplar, rotation
from pipelines.errors import DataError
from tfaux.tasks import Task, ordered

SPLITS = ("train", "val", "test")
AUTOTUNE = tf.data.AUTOTUNE
CACHE_LIMIT_BYTES = 1 << 30   # decoded inputs are kept in memory (as tensors) up to this size
STATS_SAMPLE = 5000           # decoded sources: train images used for the mean/std


@dataclasses.dataclass
class Source:
    """A dataset in memory, before any experimental setting (see the module docstring).

    features: [N, ...] array or dict of them (file paths, ids, pixels).
    labels:   {task name: [N] array}; classification labels are ints in [0, num_classes).
    official_split: [N] strings among "train", "val", "test", or None.
    decode:   TF fn mapping one example's features to x (None: features are x).
    is_image: x is an [H, W, C] image with pixels in [0, pixel_max]; image_shape is (H, W, C).
    pixel_max: the raw value of a full-intensity pixel; None: 255 for integer pixels, 1 for
              float ones (sklearn's digits: 16).
    augment:  TF fn on one training x in [0, 1]: augment(x) or augment(x, seed) where
              seed is an int64 [2] tensor for tf.image.stateless_random_* ops.
    time:     [N] timestamps for chronological splits, or None.
    vocabularies: {feature key: [n] raw ids}, for features that are indices 0..n-1 into the
              dataset's own ids (MovieLens user / item); the exported model serves raw ids.
    masks:    {task name: [N] bool}, which examples carry a label for that task (e.g. CIFAR-100
              as 20 five-way tasks: each image belongs to one task); None or a missing task:
              every example does.
    fixed_settings: {Setting field: why}, settings the source decides itself (e.g. PACS picks
              its labelled target images), so make_dataset refuses a non-default value for them.
    """

    name: str
    tasks: list
    features: Any
    labels: dict
    official_split: np.ndarray | None = None
    decode: Callable | None = None
    is_image: bool = False
    image_shape: tuple | None = None
    pixel_max: float | None = None
    augment: Callable | None = None
    time: np.ndarray | None = None
    vocabularies: dict | None = None
    masks: dict | None = None
    fixed_settings: dict | None = None

    def mask(self, task_name):
        """[N] float32: 1 where the example has a label for the task."""
        if self.masks is None or task_name not in self.masks:
            return np.ones(self.num_examples, np.float32)
        return np.asarray(self.masks[task_name]).astype(np.float32)

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
            if t.is_dense:
                self._validate_dense(where, t, y, n)
                continue
            if y.shape != (n,):
                raise DataError(f"{where}: field labels['{t.name}'] has shape {y.shape}, expected ({n},).")
            if t.kind == "classification" and (not np.issubdtype(y.dtype, np.integer)
                                               or y.min() < 0 or y.max() >= t.num_classes):
                raise DataError(f"{where}: field labels['{t.name}'] must hold integers in "
                                f"[0, {t.num_classes}).")
            if t.kind != "classification" and not np.all(np.isfinite(y.astype(np.float64))):
                raise DataError(f"{where}: field labels['{t.name}'] holds non-finite values.")
        for name, m in (self.masks or {}).items():
            if name not in self.labels or np.shape(m) != (n,):
                raise DataError(f"{where}: field masks['{name}'] must be a ({n},) array of a task's examples.")
            if not np.any(m):
                raise DataError(f"{where}: field masks['{name}'] marks no example as labelled.")
        for field in ("official_split", "time"):
            value = getattr(self, field)
            if value is not None and np.shape(value) != (n,):
                raise DataError(f"{where}: field {field} has shape {np.shape(value)}, expected ({n},).")
        if self.official_split is not None:
            bad = set(np.unique(self.official_split).tolist()) - set(SPLITS)
            if bad or not np.any(self.official_split == "train"):
                raise DataError(f"{where}: field official_split must hold 'train', 'val' or 'test' "
                                f"(with some 'train'); found {sorted(bad) or 'no train'}.")
        if self.pixel_max is not None and not (np.isfinite(self.pixel_max) and self.pixel_max > 0):
            raise DataError(f"{where}: field pixel_max must be a positive number, got {self.pixel_max!r}.")
        if self.is_image:
            if self.image_shape is None or len(self.image_shape) != 3:
                raise DataError(f"{where}: field image_shape must be (H, W, C) for an image source.")
            if self.decode is None and (not isinstance(self.features, np.ndarray)
                                        or self.features.shape[1:] != tuple(self.image_shape)):
                raise DataError(f"{where}: field features must be an array of shape [N, "
                                f"{', '.join(map(str, self.image_shape))}] when decode is None.")


    def _validate_dense(self, where, task, y, n):
        """A dense task's labels: [N, H, W] class maps (integers in [0, C) or the ignore index) or
        [N, H, W, channels] finite targets, with the images' H, W."""
        field = f"{where}: field labels['{task.name}']"
        shape = ("N", "H", "W") + (() if task.label_ndim == 2 else (task.output_units,))
        if (y.ndim != len(shape) or len(y) != n or (task.label_ndim == 3 and y.shape[-1] != task.output_units)
                or (self.is_image and self.image_shape is not None and y.shape[1:3] != tuple(self.image_shape[:2]))):
            raise DataError(f"{field} has shape {y.shape}, expected [{', '.join(map(str, shape))}] with N = {n}"
                            + (f" and H, W = {tuple(self.image_shape[:2])}." if self.is_image and self.image_shape
                               else "."))
        if task.kind == "dense_classification":
            labelled = y[y != task.ignore_index]
            if not np.issubdtype(y.dtype, np.integer) or (labelled.size and (labelled.min() < 0
                                                                             or labelled.max() >= task.num_classes)):
                raise DataError(f"{field} must hold integers in [0, {task.num_classes}) or the ignore index "
                                f"{task.ignore_index}.")
        elif np.issubdtype(y.dtype, np.floating) and not np.all(np.isfinite(y)):
            raise DataError(f"{field} holds non-finite values.")


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


def full_scale(source, dtype):
    """The raw value of a full-intensity pixel of image source `source` whose decoded x has `dtype`."""
    if source.pixel_max is not None:
        return float(source.pixel_max)
    return 255.0 if tf.as_dtype(dtype).is_integer else 1.0


def _unit(x, scale):
    """Raw pixels (full intensity `scale`) to float32 in [0, 1]."""
    return tf.cast(x, tf.float32) / scale


def _float32(x):
    return tf.cast(x, tf.float32) if x.dtype == tf.float64 else x


def _draw(seed, example_id):
    """The int64 random draw of one training example in one epoch: a pure function of the
    epoch's stateless seed and the example id (so independent of the order of the epoch)."""
    return tf.random.stateless_uniform([], seed=tf.random.experimental.stateless_fold_in(seed, example_id),
                                       minval=None, maxval=None, dtype=tf.int64)


def pixel_stats(features, decode, image_shape, seed, scale):
    """Per-channel mean and std (float32 tensors) of images scaled to [0, 1] (raw pixels / scale):
    every image of `features` when decode is None, else a seeded sample of STATS_SAMPLE decoded ones."""
    total, total_sq, count = 0.0, 0.0, 0
    if decode is None:
        for start in range(0, len(features), 4096):
            chunk = features[start:start + 4096].astype(np.float64) / scale
            chunk = chunk.reshape(-1, chunk.shape[-1])
            total, total_sq, count = total + chunk.sum(0), total_sq + (chunk ** 2).sum(0), count + len(chunk)
    else:
        n = len(tf.nest.flatten(features)[0])
        pick = np.sort(np.random.default_rng(seed).permutation(n)[:STATS_SAMPLE])
        ds = tf.data.Dataset.from_tensor_slices(tf.nest.map_structure(lambda a: np.asarray(a)[pick], features))
        ds = ds.map(lambda f: _unit(tf.ensure_shape(decode(f), image_shape), scale), num_parallel_calls=AUTOTUNE)
        for x in ds.batch(256).as_numpy_iterator():
            x = x.astype(np.float64).reshape(-1, x.shape[-1])
            total, total_sq, count = total + x.sum(0), total_sq + (x ** 2).sum(0), count + len(x)
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean ** 2, 0.0))
    return tf.constant(mean, tf.float32), tf.constant(np.maximum(std, 1e-6), tf.float32)


class AuxDataset:
    """Splits of one dataset under one Setting, as batched tf.data pipelines.

    Inputs come in their raw scale: images as float32 pixels in [0, pixel_max] (as the files
    store them, e.g. 0-255 for MNIST; augmentation works in [0, 1] and scales back), other
    inputs as the source has them (float64 cast to float32). Normalisation belongs to the
    model: `preprocessing()` is the Keras layer to put in front of the encoder.

    Attributes: name, tasks (primary first), input_spec (TensorSpec nest of one x as yielded),
    raw_dtype (the dtype of x as the dataset stores it, e.g. tf.uint8 for MNIST pixels, the one
    to serve: tfaux.export_primary(..., dtype=data.raw_dtype); None for dict inputs),
    num_train / num_dev / num_val / num_test, corrupted / labelled / clean_train_labels /
    train_labels ([num_train] arrays indexed by train id; train_labels are the primary
    labels as served, 0 where unlabelled), indices ({split: source row of each id}),
    setting, vocabularies (Source.vocabularies), aux (the pipelines.aux_source.AuxInput
    of --aux_dataset, or None) and
    aux_indices ({split: row of aux.rows paired with each id}, the fixed pairing every
    pipeline but `train` uses; {} without an auxiliary dataset). Built by
    pipelines.settings.make_dataset.

    Batch streams for model.fit:
      train(b)                  one epoch, shuffled and augmented (the lower objective);
      train_with_dev(b)         {"train": train(b), "dev": dev(b)}, dev a held-out clean set;
      train_with_reordered(b)   {"train": train(b), "dev": reordered(b)}, where the upper
                                objective reads the training set itself, independently
                                reshuffled and unaugmented (DTG-AuxL, seed 001).
    Each takes epochs=E, initial_epoch=e to serve epochs e..E-1, each a pure function of
    (seed, epoch): fit with steps_per_epoch=steps_per_epoch(b) then resumes exactly.
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
        self.vocabularies = dict(source.vocabularies or {})
        self._source = source
        self._parts = parts
        self._rotation = any(t.input_key == rotation.NAME for t in tasks)
        self._exemplar = any(t.input_key == exemplar.NAME for t in tasks)
        self._augment = self._wrap_augment(source.augment)
        for split in ("train", "dev", "val", "test"):
            setattr(self, f"num_{split}", len(indices[split]))
        self._cache = self._cacheable()
        self._tensors = {}
        # Whole batches are finished at once when nothing is per-example: no image ops, no
        # augmentation or rotation, no decode fn (here or in the auxiliary source).
        self._vector = (not source.is_image and source.decode is None and not self._rotation and not self._exemplar
                        and (aux is None or aux.source.decode is None))
        raw = self._examples("train", rows=slice(0, 1)).map(self._decode).element_spec["x"]
        self.raw_dtype = None if isinstance(raw, dict) else (tf.float32 if raw.dtype == tf.float64 else raw.dtype)
        self._scale = full_scale(source, raw.dtype) if source.is_image else None
        self._mean, self._std = self._image_stats() if source.is_image else (None, None)
        self.input_spec = self._examples("train", rows=slice(0, 1)).map(self._decode).map(
            lambda e: self._finish(e, False, None)).element_spec["x"]

    def __repr__(self):
        return (f"AuxDataset('{self.name}', tasks={[t.name for t in self.tasks]}, train={self.num_train}, "
                f"dev={self.num_dev}, val={self.num_val}, test={self.num_test})")

    @property
    def primary(self):
        return self.tasks[0]

    def preprocessing(self):
        """A fresh Keras layer taking a batch of raw x to the scale the model trains on: for images
        Rescaling to [0, 1], then Normalization with the training split's per-channel mean and
        variance; None for other inputs (fed as they are). Put it in front of the encoder, e.g.
        keras.Sequential([data.preprocessing(), tfaux.models.convnet4()])."""
        if self._mean is None:
            return None
        return keras.Sequential([keras.layers.Rescaling(1.0 / self._scale),
                                 keras.layers.Normalization(mean=self._mean.numpy(),
                                                            variance=np.square(self._std.numpy()))],
                                name="preprocessing")

    # ------------------------------------------------------------ public pipelines
    def steps_per_epoch(self, batch_size=64):
        """Training batches per epoch (the remainder is dropped)."""
        return self.num_train // _batch_size(batch_size)

    def train(self, batch_size=64, shuffle=True, epochs=None, initial_epoch=0):
        """Training batches: shuffled, augmented, remainder dropped.

        epochs=None: one epoch whose order and draws (augmentation, rotation, auxiliary
        pairing) are new every time the dataset is iterated (what `fit(..., epochs=E)`
        expects). epochs=E: epochs initial_epoch..E-1 back to back, each a pure function
        of (seed, epoch), so a run resumed at epoch e sees exactly the batches an
        uninterrupted one does; pass `steps_per_epoch=data.steps_per_epoch(b)` to fit."""
        batch_size = _batch_size(batch_size)
        if batch_size > self.num_train:
            raise DataError(f"--batch_size {batch_size} exceeds the {self.num_train} training examples "
                            f"(the remainder is dropped, so an epoch would be empty).")

        def epoch(key):
            ds, get = self._base("train", order=self._key(1, key) if shuffle else None)
            if self.aux is not None:
                ds = tf.data.Dataset.zip((ds, self.aux.row_stream(self._key(5, key))))
            draws = self._key(2, key)

            def finish(first, *rest):
                e = get(first)
                if self.aux is not None:
                    e = self._with_aux_row(e, rest[0])
                return self._finish(e, True, None if self._vector else _draw(draws, e["id"]))

            return self._map_and_batch(ds, batch_size, True, finish)

        keys = self._epoch_keys(1, epochs, initial_epoch)
        batches = (self.num_train // batch_size) * int(keys.cardinality())
        return keys.flat_map(epoch).apply(tf.data.experimental.assert_cardinality(batches)).prefetch(AUTOTUNE)

    def dev(self, batch_size=64, epochs=None, initial_epoch=0, steps=None):
        """Endless shuffled stream of clean dev batches (batch_size capped at num_dev); with
        epochs=E, `steps` batches for each of epochs initial_epoch..E-1, a function of (seed, epoch)."""
        if self.num_dev == 0:
            raise DataError("The dev split is empty; set --dev_size or --dev_per_class above 0.")
        return self._passes("dev", min(_batch_size(batch_size), self.num_dev), 3, epochs, initial_epoch, steps)

    def train_with_dev(self, batch_size=64, dev_batch_size=None, epochs=None, initial_epoch=0):
        """Training epoch(s) zipped with the dev stream: {"train": batch, "dev": batch}
        (epochs / initial_epoch as in train)."""
        return self._with_upper(self.dev, batch_size, dev_batch_size, epochs, initial_epoch)

    def reordered(self, batch_size=64, epochs=None, initial_epoch=0, steps=None):
        """Endless stream of the training split itself as an upper-level objective (DTG-AuxL):
        the primary-labelled training examples with their labels as served (possibly noisy),
        every mask as in train (so the primary mask is 1), unaugmented, with the fixed
        rotation / auxiliary pairing of train_eval, in a seeded order reshuffled every pass
        and independent of train's. batch_size is capped at the number of labelled examples.
        epochs / initial_epoch / steps as in dev."""
        rows = np.flatnonzero(self._parts["train"]["mask"][self.primary.name] > 0)
        if len(rows) == 0:
            raise DataError("No training example keeps its primary label; raise --label_fraction or "
                            "--shots_per_class.")
        return self._passes("train", min(_batch_size(batch_size), len(rows)), 6, epochs, initial_epoch, steps,
                            rows=rows)

    def train_with_reordered(self, batch_size=64, dev_batch_size=None, epochs=None, initial_epoch=0):
        """Training epoch(s) zipped with the reordered training stream: {"train": batch,
        "dev": batch}, where "dev" comes from reordered() instead of the dev split. Feed it to
        model.fit like train_with_dev; a bi-level strategy then takes its upper steps on
        the training set itself (DTG-AuxL uses the training set as its upper objective)."""
        return self._with_upper(self.reordered, batch_size, dev_batch_size, epochs, initial_epoch)

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

    def _key(self, stream, *keys):
        """Stateless [2] int64 seed of random `stream` (1 train order, 2 per-example draws,
        3 dev order, 5 auxiliary rows, 6 reordered) for epoch / pass `keys`."""
        seed = tf.constant([self._seed(stream), 0], tf.int64)
        for k in keys:
            seed = tf.random.experimental.stateless_fold_in(seed, tf.cast(k, tf.int64))
        return seed

    def _epoch_keys(self, stream, epochs, initial_epoch):
        """Dataset of epoch keys: initial_epoch..epochs-1, or (epochs=None) one fresh random
        key each time the dataset is iterated."""
        if epochs is None:
            return tf.data.Dataset.random(seed=self._seed(stream), rerandomize_each_iteration=True).take(1)
        if not 0 <= int(initial_epoch) < int(epochs):
            raise DataError(f"initial_epoch {initial_epoch} must lie in [0, epochs={epochs}).")
        return tf.data.Dataset.range(int(initial_epoch), int(epochs))

    def _passes(self, split, batch_size, stream, epochs, initial_epoch, steps, rows=None):
        """Unaugmented batches of a split (ids `rows` only), endless passes each in a new
        seeded order; per epoch key, `steps` batches (all of them if steps is None)."""
        def passes(key):
            def one_pass(p):
                ds, get = self._base(split, order=self._key(stream, key, p), rows=rows)
                return self._map_and_batch(ds, batch_size, True, lambda e: self._finish(get(e), False, None))
            ds = tf.data.Dataset.range(np.iinfo(np.int64).max).flat_map(one_pass)
            return ds if steps is None else ds.take(steps)
        if epochs is not None and steps is None:
            raise DataError("Pass steps (batches per epoch) together with epochs.")
        keys = self._epoch_keys(stream, epochs, initial_epoch)
        batches = tf.data.INFINITE_CARDINALITY if steps is None else steps * int(keys.cardinality())
        return keys.flat_map(passes).apply(tf.data.experimental.assert_cardinality(batches)).prefetch(AUTOTUNE)

    def _with_upper(self, upper, batch_size, dev_batch_size, epochs, initial_epoch):
        steps = None if epochs is None else self.steps_per_epoch(batch_size)
        pairs = tf.data.Dataset.zip((self.train(batch_size, epochs=epochs, initial_epoch=initial_epoch),
                                     upper(dev_batch_size or batch_size, epochs=epochs,
                                           initial_epoch=initial_epoch, steps=steps)))
        return pairs.map(lambda t, d: {"train": t, "dev": d})

    def _ordered(self, split, batch_size):
        return self._plain(split, _batch_size(batch_size))

    def _plain(self, split, batch_size):
        """Unaugmented batches of a split in id order."""
        ds, get = self._base(split)
        return self._map_and_batch(ds, batch_size, False, lambda e: self._finish(get(e), False, None)).prefetch(
            AUTOTUNE)

    def _map_and_batch(self, ds, batch_size, drop_remainder, finish):
        """Batches of finish(element): finished one example at a time, or a whole batch at
        once (vectorised) when nothing in it is per-example (self._vector)."""
        if self._vector:
            return ds.batch(batch_size, drop_remainder=drop_remainder).map(finish, num_parallel_calls=AUTOTUNE)
        return ds.map(finish, num_parallel_calls=AUTOTUNE).batch(batch_size, drop_remainder=drop_remainder)

    def _base(self, split, order=None, rows=None):
        """(ds, get): int64 ids of a split (ids `rows` only), in id order or in the permutation
        drawn from the stateless seed `order`, and the TF fn turning one id (or a vector of
        them) into {"x", "labels", "mask", "id"[, "aux_row"]} by gathering from the split's
        arrays (gathers vectorise; shuffling ids needs no buffer). Sources with a decode fn
        have their decoded inputs gathered when they fit in memory, else decode per example."""
        ids = np.arange(len(self.indices[split]), dtype=np.int64) if rows is None else np.asarray(rows, np.int64)
        ids = tf.constant(ids)
        if order is not None:
            ids = tf.random.experimental.stateless_shuffle(ids, seed=order)
        arrays = self._arrays(split)
        return tf.data.Dataset.from_tensor_slices(ids), lambda i: self._gather(arrays, i)

    def _arrays(self, split):
        """The split's inputs (decoded when cacheable), labels, masks (and auxiliary rows)
        as tensors, made once."""
        if split not in self._tensors:
            part = self._parts[split]
            with tf.init_scope():  # eager tensors, shared by every traced pipeline function
                features = self._decoded_inputs(split) if self._cache else part["features"]
                arrays = {"f": features, "labels": part["labels"], "mask": part["mask"]}
                if self.aux is not None:
                    arrays["aux_row"] = self.aux_indices[split]
                self._tensors[split] = tf.nest.map_structure(tf.constant, arrays)
        return self._tensors[split]

    def _decoded_inputs(self, split):
        """Every decoded input x of a split, stacked (numpy; used when they fit in memory)."""
        ds = self._examples(split).map(self._decode, num_parallel_calls=AUTOTUNE).map(lambda e: e["x"])
        chunks = list(ds.batch(1024).as_numpy_iterator())
        if not chunks:
            return tf.nest.map_structure(lambda s: np.zeros((0, *s.shape), s.dtype.as_numpy_dtype), ds.element_spec)
        return tf.nest.map_structure(lambda *c: np.concatenate(c), *chunks)

    def _gather(self, arrays, ids):
        """Example(s) `ids` (a scalar or a vector) of a split's arrays; decoded here when
        the source decodes and its inputs were not cached."""
        e = tf.nest.map_structure(lambda a: tf.gather(a, ids), arrays)
        e["id"] = ids
        if self._source.decode is not None and not self._cache:
            return self._decode(e)
        x = e.pop("f")
        if self._source.is_image and ids.shape.rank == 0:
            x = tf.ensure_shape(x, self._source.image_shape)
        return {"x": x, **e}

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
        """Decoded inputs are kept in memory when a decode fn exists and they fit."""
        if self._source.decode is None:
            return False
        spec = self._examples("train", rows=slice(0, 1)).map(self._decode).element_spec["x"]
        specs = tf.nest.flatten(spec)
        if not all(s.shape.is_fully_defined() for s in specs):
            return False
        per_example = sum(int(np.prod(s.shape)) * s.dtype.size for s in specs)
        return per_example * self._source.num_examples <= CACHE_LIMIT_BYTES

    def _finish(self, e, training, draw):
        """Cast, augment (training; in [0, 1], scaled back to raw pixels), add the auxiliary input
        and the rotation and Exemplar-MT tasks. Nothing is normalised (see preprocessing)."""
        x = e["x"]
        if self._source.is_image:
            x = tf.cast(x, tf.float32)
            if training and self._augment is not None:
                unit = self._augment(x / self._scale, tf.stack([draw // 4, e["id"]]))
                x = tf.ensure_shape(unit, x.shape) * self._scale
        else:
            x = tf.nest.map_structure(_float32, x)
        out = {"x": x, "labels": e["labels"], "mask": e["mask"], "id": e["id"]}
        if self.aux is not None:
            out["task_x"] = {self.aux.input_key: self._aux_input(e["aux_row"])}
        if self._rotation:
            k = rotation.random_k(draw) if training else rotation.eval_k(e["id"])
            out = rotation.add_rotation(out, k)
        if self._exemplar:  # a fresh draw every training epoch, fixed by the id elsewhere
            seed = tf.stack([draw // 16 if training else tf.constant(-1, tf.int64), e["id"]])
            out = exemplar.add_exemplar(out, seed, self._scale)
        return out

    def _aux_input(self, row):
        """The auxiliary input of row(s) `row`; an image, z-scored with its own statistics
        (pipelines.aux_source), is given in this dataset's raw pixel scale, so that
        preprocessing() turns it back into those z-scores."""
        x = self.aux.example(row)
        if not self._source.is_image:
            return x
        return (x * self._std + self._mean) * self._scale

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
        return pixel_stats(self._parts["train"]["features"], src.decode, src.image_shape, self._seed(4), self._scale)
