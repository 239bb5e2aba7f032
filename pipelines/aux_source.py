"""A different-input auxiliary dataset (DTG-AuxL, seed 001): e.g. CIFAR-10 learnt with
CIFAR-100 as auxiliary data, or Oxford-IIIT Pet with CUB.

`Setting(aux_dataset="cifar100")` (flag --aux_dataset, a registered dataset name) makes the
auxiliary source's training examples one extra auxiliary task of the primary dataset, named
`aux_<the auxiliary source's primary task>` (e.g. "aux_label"), whose head reads
`task_x["aux"]` (Task.input_key = "aux"). Every element of every split then carries

    task_x["aux"]          an auxiliary training example: pixels to [0, 1], resized (bilinear,
                           antialiased) to the primary's height x width when they differ, then
                           z-scored per channel with the auxiliary source's own training statistics
                           (on its native-size pixels), and given in the primary's raw pixel scale
                           (AuxDataset._aux_input), so the model's preprocessing (the primary's)
                           yields those z-scores; non-image inputs are only cast from float64 to float32;
    labels["aux_<task>"]   that example's primary label (served as-is, never noisy);
    mask["aux_<task>"]     1, except 0 on the dev split (the upper objective reads the primary only).

The auxiliary training examples are the auxiliary source's official "train" rows, or all of its
rows when it has no official split. `train` pairs each element with a row drawn by a seeded
shuffle of those rows that changes every epoch (without repetition within a pass over them);
every other pipeline (train_eval, dev, val, test, reordered) uses a fixed seeded pairing,
AuxDataset.aux_indices[split]. Auxiliary images are gathered and decoded on access, not cached.

Compatibility (DataError naming --aux_dataset otherwise): image primary needs an image auxiliary
source with the same number of channels; a non-image primary needs an auxiliary source with the
same input structure, shapes and dtypes (the two share one encoder).
"""

import numpy as np
import tensorflow as tf

from pipelines.contract import _float32, _unit, full_scale, pixel_stats
from pipelines.errors import DataError
from tfaux.tasks import Task

FLAG = "--aux_dataset"
INPUT_KEY = "aux"


def task_name(source):
    """The auxiliary task name of auxiliary source `source`: aux_<its primary task>."""
    return f"{INPUT_KEY}_{source.primary.name}"


def resolve(name, data_dir=None):
    """The Source of registered dataset `name` read from data_dir, for --aux_dataset."""
    from pipelines.contract import DATASETS
    if not isinstance(name, str) or name not in DATASETS:
        raise DataError(f"{FLAG} {name!r} is not a registered dataset; choose one of: "
                        f"{', '.join(sorted(DATASETS))}.")
    return DATASETS[name](data_dir)


def _label_dtype(task):
    return np.int32 if task.kind == "classification" else np.float32


class AuxInput:
    """The auxiliary source of --aux_dataset, bound to one primary source and seed.

    Attributes: name, source, task (the extra auxiliary Task, input_key "aux"), input_key,
    rows ([n] source rows of the auxiliary training examples), labels ([n] their primary
    labels), scale / mean / std (full-intensity pixel value and per-channel training statistics,
    images only), image_shape (the
    shape served: the primary's), num_examples.
    """

    def __init__(self, source, primary_source, seed):
        source.validate()
        self.source, self.name, self.input_key = source, source.name, INPUT_KEY
        p = primary_source
        what = f"{FLAG} '{source.name}'"
        if p.is_image and not source.is_image:
            raise DataError(f"{what} is not an image dataset, but the primary dataset '{p.name}' is.")
        if source.is_image and not p.is_image:
            raise DataError(f"{what} is an image dataset, but the primary dataset '{p.name}' is not.")
        if p.is_image and source.image_shape[-1] != p.image_shape[-1]:
            raise DataError(f"{what} has {source.image_shape[-1]}-channel images but the primary dataset "
                            f"'{p.name}' has {p.image_shape[-1]}-channel ones; pick one with as many channels.")
        aux_task = source.primary
        self.task = Task(task_name(source), role="auxiliary", kind=aux_task.kind,
                         num_classes=aux_task.num_classes, input_key=INPUT_KEY)
        split = source.official_split
        self.rows = (np.arange(source.num_examples) if split is None
                     else np.flatnonzero(np.asarray(split) == "train"))
        self.num_examples = len(self.rows)
        self.labels = np.asarray(source.labels[aux_task.name])[self.rows].astype(_label_dtype(aux_task))
        features = tf.nest.map_structure(lambda a: np.asarray(a)[self.rows], source.features)
        self._features = tf.nest.map_structure(tf.constant, features)
        self._labels = tf.constant(self.labels)
        self.image_shape = tuple(p.image_shape) if p.is_image else None
        if source.is_image:
            raw = tf.data.Dataset.from_tensor_slices(tf.nest.map_structure(lambda a: a[:1], features)).map(
                self._decode).element_spec
            self.scale = full_scale(source, raw.dtype)
            self.mean, self.std = pixel_stats(features, source.decode, source.image_shape, seed, self.scale)
        else:
            self.mean = self.std = self.scale = None
            spec = tf.data.Dataset.from_tensor_slices(tf.nest.map_structure(lambda a: a[:1], features)).map(
                lambda f: tf.nest.map_structure(_float32, self._decode(f))).element_spec
            primary_spec = tf.data.Dataset.from_tensor_slices(
                tf.nest.map_structure(lambda a: np.asarray(a)[:1], p.features)).map(
                lambda f: tf.nest.map_structure(_float32, p.decode(f) if p.decode is not None else f)).element_spec
            if spec != primary_spec:
                raise DataError(f"{what} has inputs {spec} but the primary dataset '{p.name}' has "
                                f"{primary_spec}; the two share one encoder, so they must match.")

    def __repr__(self):
        return f"AuxInput('{self.name}', task={self.task.name}, examples={self.num_examples})"

    # ------------------------------------------------------------ pairing (numpy)
    def pairing(self, n, seed):
        """Fixed pairing of n ids with auxiliary rows (indices into self.rows): consecutive
        seeded permutations of all of them, cut to n."""
        rng = np.random.default_rng(seed)
        reps = -(-n // self.num_examples)
        return np.concatenate([rng.permutation(self.num_examples) for _ in range(max(reps, 1))])[:n].astype(np.int64)

    # ------------------------------------------------------------ tf.data
    def row_stream(self, seed):
        """Endless int64 rows: passes over all auxiliary rows, each in the permutation drawn
        from the stateless [2] seed `seed` folded with the pass number."""
        rows = tf.range(self.num_examples, dtype=tf.int64)

        def one_pass(p):
            order = tf.random.experimental.stateless_fold_in(seed, p)
            return tf.data.Dataset.from_tensor_slices(tf.random.experimental.stateless_shuffle(rows, seed=order))

        return tf.data.Dataset.range(np.iinfo(np.int64).max).flat_map(one_pass)

    def label(self, row):
        return tf.gather(self._labels, row)

    def _decode(self, f):
        src = self.source
        x = src.decode(f) if src.decode is not None else f
        return tf.ensure_shape(x, src.image_shape) if src.is_image else x

    def example(self, row):
        """The preprocessed input of auxiliary row `row` (see the module docstring)."""
        x = self._decode(tf.nest.map_structure(lambda a: tf.gather(a, row), self._features))
        if not self.source.is_image:
            return tf.nest.map_structure(_float32, x)
        x = _unit(x, self.scale)
        if tuple(self.source.image_shape[:2]) != self.image_shape[:2]:
            x = tf.image.resize(x, self.image_shape[:2], method="bilinear", antialias=True)
        return tf.ensure_shape((x - self.mean) / self.std, self.image_shape)
