"""Keras' data forms, turned into the tfaux batch.

A Keras user passes `x` (an array, a DataFrame or a dict of named inputs), `y` (a dict
task -> labels, a list in task order, or one array when there is one task) and an optional
`sample_weight`, as arrays or as a `tf.data` stream of `(x, y)` / `(x, y, sample_weight)`.
tfaux's batch is `{"x", "labels": {task: y}, "mask": {task: 0/1}, "sample_weight": {task: w},
"id"}`: a missing label (NaN, or a negative class) becomes mask 0 (`to_batch`), and in-memory
data gets example ids from its row positions and, for bi-level methods, a dev split carved from
the training rows (`InMemory`).
"""

import math

import keras
import numpy as np
import tensorflow as tf

ACCEPTED = ("x as an array, a pandas DataFrame or a dict of named arrays, with y as a dict {task: labels}, "
            "a list in task order or one array when there is one task; or a tf.data.Dataset of (x, y) or "
            "(x, y, sample_weight); or tfaux batches {'x', 'labels', ...}")


class DataFormError(ValueError):
    """Data in a form `fit` / `evaluate` cannot read; the message names the accepted forms."""


@tf.autograph.experimental.do_not_convert
def is_batch(data):
    """Whether `data` is already a tfaux batch (or a {"train", "dev"} pair of them)."""
    return isinstance(data, dict) and ("labels" in data or {"train", "dev"} <= set(data))


@tf.autograph.experimental.do_not_convert
def labels_by_task(y, names):
    """{task: labels} from a dict, a list / tuple in task order (`names`) or one array."""
    if y is None:
        return {}
    if isinstance(y, dict):
        unknown = sorted(set(y) - set(names))
        if unknown:
            raise DataFormError(f"y names tasks the model does not have: {unknown}; its tasks are {list(names)}.")
        return dict(y)
    if isinstance(y, (list, tuple)):
        if len(y) != len(names):
            raise DataFormError(f"y is a list of {len(y)} label arrays but the model has {len(names)} tasks "
                                f"{list(names)}; pass one per task, in that order, or a dict {{task: labels}}.")
        return dict(zip(names, y))
    if len(names) != 1:
        raise DataFormError(f"y is one array but the model has tasks {list(names)}; pass a dict {{task: labels}} "
                            "(NaN or -1 where a task has no label).")
    return {names[0]: y}


@tf.autograph.experimental.do_not_convert
def _missing_mask(task, labels):
    """[B] float mask: 0 where the label is missing (NaN, or a negative class / binary label)."""
    if task.is_dense:
        return tf.ones(tf.shape(labels)[:1], tf.float32)
    flat = tf.reshape(labels, [tf.shape(labels)[0], -1])
    if flat.dtype.is_floating:
        present = tf.reduce_all(tf.math.is_finite(flat), axis=1)
    else:
        present = tf.ones(tf.shape(flat)[:1], tf.bool)
    if task.kind in ("classification", "binary"):
        present = tf.logical_and(present, tf.reduce_all(flat >= tf.zeros([], flat.dtype), axis=1))
    return tf.cast(present, tf.float32)


@tf.autograph.experimental.do_not_convert
def _labels_of(task, labels, mask):
    """The labels with missing entries replaced by 0, in the shape the task's loss reads."""
    if not task.is_dense and task.kind != "soft":
        labels = tf.reshape(labels, [-1])
    if labels.dtype.is_floating:
        labels = tf.where(tf.math.is_finite(labels), labels, tf.zeros_like(labels))
    keep = tf.reshape(mask > 0, [-1] + [1] * (labels.shape.rank - 1))
    return tf.where(keep, labels, tf.zeros_like(labels))


@tf.autograph.experimental.do_not_convert
def check_labels(labels, tasks):
    """A one-sentence error when `labels` ({task: y}) lack a task that needs labels."""
    for task in tasks:
        if task.name not in labels and task.kind != "consistency":
            raise DataFormError(f"y has no labels for task '{task.name}'; give every task's labels "
                                "(NaN, or -1 for classes, where an example has none).")


def check_stream(model, spec):
    """One-sentence errors, before training, for a stream of tfaux batches (its element_spec)
    that lacks labels or, for a method with per-example parameters, example ids."""
    batch = spec["train"] if "train" in spec else spec
    if "labels" not in batch:
        raise DataFormError(f"fit needs labels y beside x. Accepted: {ACCEPTED}.")
    check_labels(batch["labels"], model.user_tasks)
    if model.method.needs_ids and "id" not in batch:
        raise DataFormError(f"{type(model.method).__name__} keeps one weight per training example and needs example "
                            "ids: pass x and y as arrays (ids are row positions), or batches with an 'id' field.")


@tf.autograph.experimental.do_not_convert
def sample_weights_by_task(sample_weight, tasks):
    """{task: [B] weights}: a dict by task, or one array for every target task."""
    if sample_weight is None:
        return {}
    if isinstance(sample_weight, dict):
        names = [t.name for t in tasks]
        unknown = sorted(set(sample_weight) - set(names))
        if unknown:
            raise DataFormError(f"sample_weight names tasks the model does not have: {unknown}.")
        return dict(sample_weight)
    return {t.name: sample_weight for t in tasks if t.is_primary}


@tf.autograph.experimental.do_not_convert
def to_batch(tasks, x, y=None, sample_weight=None):
    """The tfaux batch of one Keras batch (in-graph; `tasks`: the model's user tasks, in the
    order a list `y` follows). A task whose labels are absent is an error, unless it needs none
    (kind "consistency")."""
    labels = labels_by_task(y, [t.name for t in tasks])
    batch = {"x": x}
    if y is None:
        return batch
    batch.update(labels={}, mask={})
    size = tf.shape(tf.nest.flatten(x)[0])[0]
    check_labels(labels, tasks)
    for task in tasks:
        if task.name not in labels:  # a task that needs no labels
            batch["labels"][task.name] = tf.zeros([size])
            continue
        value = tf.convert_to_tensor(labels[task.name])
        mask = _missing_mask(task, value)
        batch["labels"][task.name], batch["mask"][task.name] = _labels_of(task, value, mask), mask
    weights = sample_weights_by_task(sample_weight, tasks)
    if weights:
        batch["sample_weight"] = {k: tf.reshape(tf.cast(w, tf.float32), [-1]) for k, w in weights.items()}
    return batch


@tf.autograph.experimental.do_not_convert
def from_keras_element(tasks, data):
    """A tfaux batch from what a Keras data adapter yields: a batch as is, else (x, y, sw)."""
    if is_batch(data):
        return data
    if isinstance(data, (tuple, list)):
        if not 1 <= len(data) <= 3:
            raise DataFormError(f"A batch tuple must be (x,), (x, y) or (x, y, sample_weight); got {len(data)} "
                                f"items. Accepted: {ACCEPTED}.")
        return to_batch(tasks, *data)
    return to_batch(tasks, data)


# ---------------------------------------------------------------- in-memory data
def _columns(x, dict_inputs):
    """x as numpy: a DataFrame becomes a dict of columns (dict inputs) or one 2-D array."""
    if hasattr(x, "to_numpy") and hasattr(x, "columns"):
        return {str(c): x[c].to_numpy() for c in x.columns} if dict_inputs else x.to_numpy()
    if isinstance(x, dict):
        return {k: np.asarray(v) for k, v in x.items()}
    return np.asarray(x)


def is_in_memory(x):
    """Whether x is in-memory data (arrays, DataFrame, dict of arrays) rather than a stream."""
    if isinstance(x, (tf.data.Dataset,)) or x is None:
        return False
    if isinstance(x, dict):
        return all(isinstance(v, (np.ndarray, list, tf.Tensor)) or hasattr(v, "to_numpy") for v in x.values())
    return isinstance(x, (np.ndarray, list, tf.Tensor)) or hasattr(x, "to_numpy")


def _rows(tree):
    sizes = {int(np.shape(v)[0]) for v in tf.nest.flatten(tree)}
    if len(sizes) != 1:
        raise DataFormError(f"x, y and sample_weight must have the same number of rows; got {sorted(sizes)}.")
    return sizes.pop()


def _take(tree, rows):
    return tf.nest.map_structure(lambda v: np.asarray(v)[rows], tree)


def default_dev_size(num_rows):
    """Examples of the dev split carved when `dev_split` is not given: 200 (seed 000, A.1: "We
    sample 200 samples ... to form D_dev with stratified sampling"), or a tenth of the training
    rows when that is fewer, so a small dataset keeps 90 % of its rows for training (AuxiLearn,
    seed 002, allocates 0.084-3.33 % of much larger training sets)."""
    return min(200, max(1, num_rows // 10))


class InMemory:
    """In-memory training data split the Keras way: `validation_split` takes the last rows
    (as keras.Model.fit does), a bi-level method's dev split is carved from the rest,
    stratified by the first target's labels (`dev_split`: a fraction in (0, 1) or a count),
    and every training row keeps its position as its example id."""

    def __init__(self, tasks, x, y, sample_weight=None, class_weight=None, dict_inputs=False):
        self.tasks = tasks
        names = [t.name for t in tasks]
        x = _columns(x, dict_inputs)
        y = {k: np.asarray(v.to_numpy() if hasattr(v, "to_numpy") else v)
             for k, v in labels_by_task(y, names).items()}
        check_labels(y, tasks)
        sample_weight = sample_weights_by_task(sample_weight, tasks)
        sample_weight = {k: np.asarray(v, np.float32).reshape(-1) for k, v in sample_weight.items()}
        self.rows = {"x": x, "y": y, "sample_weight": sample_weight}
        self.num_rows = _rows(self.rows)
        self.class_weight = class_weight
        if class_weight:
            class_weights_by_task(class_weight, tasks)  # checked now, applied per batch
        self.rows["id"] = np.arange(self.num_rows, dtype=np.int64)

    def split_last(self, fraction):
        """Keep the first rows for training; return the last `fraction` as (x, y, sample_weight)."""
        if not 0.0 < fraction < 1.0:
            raise DataFormError(f"validation_split must be in (0, 1); got {fraction}.")
        cut = int(math.floor(self.num_rows * (1.0 - fraction)))
        if cut < 1 or cut == self.num_rows:
            raise DataFormError(f"validation_split={fraction} leaves no rows for training or validation "
                                f"({self.num_rows} rows).")
        val = _take(self.rows, slice(cut, None))
        self.rows = _take(self.rows, slice(0, cut))
        self.num_rows = cut
        self.rows["id"] = np.arange(cut, dtype=np.int64)
        return val["x"], val["y"], val["sample_weight"] or None

    def carve_dev(self, dev_split=None, seed=0):
        """Rows of a dev split taken out of the training rows: stratified by the first target's
        labels (classification), from rows labelled for every target. Returns their rows."""
        from sklearn.model_selection import train_test_split

        targets = [t for t in self.tasks if t.is_primary]
        labelled = np.ones(self.num_rows, bool)
        for t in targets:
            labelled &= _missing_mask(t, tf.convert_to_tensor(self.rows["y"][t.name])).numpy() > 0
        candidates = np.flatnonzero(labelled)
        if dev_split is None:
            size = default_dev_size(self.num_rows)
        elif 0.0 < float(dev_split) < 1.0:
            size = max(1, int(round(float(dev_split) * self.num_rows)))
        elif float(dev_split) >= 1.0 and float(dev_split) == int(dev_split):
            size = int(dev_split)
        else:
            raise DataFormError(f"dev_split must be a fraction in (0, 1) or a number of examples; got {dev_split}.")
        if size >= len(candidates):
            raise DataFormError(f"dev_split asks for {size} dev examples but only {len(candidates)} training rows "
                                "have labels for every target task.")
        first = targets[0]
        strata = None
        if first.kind in ("classification", "binary"):
            classes = self.rows["y"][first.name].reshape(self.num_rows, -1)[candidates, 0]
            counts = np.unique(classes, return_counts=True)[1]
            if counts.min() >= 2 and size >= len(counts):
                strata = classes
        _, dev = train_test_split(candidates, test_size=size, random_state=seed, stratify=strata)
        keep = np.setdiff1d(np.arange(self.num_rows), dev)
        dev_rows = _take(self.rows, np.sort(dev))
        self.rows = _take(self.rows, keep)
        self.rows["id"] = np.arange(len(keep), dtype=np.int64)  # ids: positions among the training rows
        self.num_rows = len(keep)
        return dev_rows

    def dataset(self, rows=None, batch_size=32, shuffle=True, repeat=False, seed=None):
        """tf.data of tfaux batches over `rows` (default: the training rows, class-weighted)."""
        class_weight = self.class_weight if rows is None else None
        rows = self.rows if rows is None else rows
        num = _rows(rows)
        ds = tf.data.Dataset.from_tensor_slices(rows)
        if shuffle:
            ds = ds.shuffle(num, seed=seed, reshuffle_each_iteration=True)
        if repeat:
            ds = ds.repeat()
        tasks = self.tasks

        def convert(e):
            batch = to_batch(tasks, e["x"], e["y"], e["sample_weight"] or None)
            batch["id"] = e["id"]
            return with_class_weight(batch, tasks, class_weight) if class_weight else batch

        return ds.batch(batch_size).map(convert, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)


def class_weights_by_task(class_weight, tasks):
    """{task name: {class: weight}} from {class: weight} (the first target) or {task: {class: weight}}."""
    if all(isinstance(v, dict) for v in class_weight.values()):
        by_task = dict(class_weight)
    else:
        by_task = {next(t for t in tasks if t.is_primary).name: class_weight}
    kinds = {t.name: t.kind for t in tasks}
    for name, weights in by_task.items():
        if kinds.get(name) not in ("classification", "binary"):
            raise DataFormError(f"class_weight names '{name}', which is not a classification task of the model.")
        if any(int(c) != c or c < 0 for c in weights):
            raise DataFormError(f"class_weight for '{name}' must map class indices (integers >= 0) to weights.")
    return by_task


@tf.autograph.experimental.do_not_convert
def with_class_weight(batch, tasks, class_weight):
    """The batch with each task's sample weights multiplied by the weight of its example's class
    (classes class_weight does not name keep weight 1); of a {"train", "dev"} pair, the training batch."""
    if "train" in batch:
        return {**batch, "train": with_class_weight(batch["train"], tasks, class_weight)}
    weights = dict(batch.get("sample_weight", {}))
    for name, table in class_weights_by_task(class_weight, tasks).items():
        dense = [1.0] * (int(max(table)) + 1)
        for c, w in table.items():
            dense[int(c)] = float(w)
        labels = tf.cast(tf.reshape(batch["labels"][name], [-1]), tf.int32)
        factor = tf.gather(tf.constant(dense), tf.clip_by_value(labels, 0, len(dense) - 1))
        factor = tf.where(labels < len(dense), factor, tf.ones_like(factor))
        weights[name] = weights[name] * factor if name in weights else factor
    return {**batch, "sample_weight": weights}


def paired(train, second):
    """A dataset of {"train": batch, "dev": batch}: every training batch with the next batch of
    the repeated second stream (dev split, or a reordered copy of the training set)."""
    return tf.data.Dataset.zip((train, second)).map(lambda a, b: {"train": a, "dev": b})


# ---------------------------------------------------------------- what fit / evaluate are given
def inputs(model, x):
    """x as Keras' own adapters read it: a DataFrame as a dict of columns for a model with named
    inputs (else one array); other forms as they are."""
    return _columns(x, isinstance(model.input_spec_nest, dict)) if is_in_memory(x) else x


def evaluation_data(model, x, y, sample_weight, batch_size):
    """In-memory x, y (and sample weights) as a tf.data of tfaux batches in row order, for
    evaluate; any other form is returned as it is (Keras' adapters read it)."""
    if not is_in_memory(x) or y is None:
        return None
    data = InMemory(model.user_tasks, x, y, sample_weight, dict_inputs=isinstance(model.input_spec_nest, dict))
    return data.dataset(batch_size=batch_size or 32, shuffle=False)


def unpaired_message(method):
    """The error for a bi-level method fed training batches alone."""
    stream = "data.train_with_dev(batch_size)" if method.upper_data == "dev" else "data.train_with_reordered(batch_size)"
    return (f"{type(method).__name__} is bi-level: feed fit x and y as arrays (a dev split is carved), a tf.data "
            f"stream with dev_data=, or {stream}, batches of {{'train': ..., 'dev': ...}}.")


def _unpack(data, what):
    if isinstance(data, (tuple, list)) and 2 <= len(data) <= 3:
        return tuple(data) + (None,) * (3 - len(data))
    raise DataFormError(f"{what} must be (x, y) or (x, y, sample_weight) arrays, or a tf.data.Dataset.")


def _converted(stream, tasks):
    """A tf.data stream of Keras elements as tfaux batches (tfaux batches pass as they are)."""
    if is_batch(stream.element_spec):
        return stream
    return stream.map(lambda *e: from_keras_element(tasks, e[0] if len(e) == 1 else e))


def _second_stream(model, kind, data, dev_data, dev_split, dev_batch_size, batch_size, shuffle=True):
    """The repeated stream paired with training batches: the dev split or a reordered copy of the
    training rows (`kind`: Strategy.second_stream), or None."""
    tasks = model.user_tasks
    name = type(model.method).__name__
    if dev_data is not None:
        if isinstance(dev_data, tf.data.Dataset):
            return _converted(dev_data, tasks).repeat()
        dx, dy, dw = _unpack(dev_data, "dev_data")
        dev = InMemory(tasks, dx, dy, dw, dict_inputs=isinstance(model.input_spec_nest, dict))
        return dev.dataset(batch_size=dev_batch_size or min(dev.num_rows, 1024), shuffle=shuffle, repeat=True)
    if data is None:
        what = "a dev split" if kind == "dev" else "a reordered copy of the training set"
        raise DataFormError(f"{name} reads {what} beside the training batches: pass x and y as arrays (tfaux "
                            "carves or reorders it), or give it as dev_data=(x, y).")
    if kind == "dev":
        rows = data.carve_dev(dev_split)
        return data.dataset(rows, batch_size=dev_batch_size or min(_rows(rows), 1024), shuffle=shuffle, repeat=True)
    return data.dataset(batch_size=batch_size, shuffle=True, seed=None if shuffle else 1, repeat=True)  # reordered


def training_data(model, x, y, batch_size=None, validation_split=0.0, validation_data=None, shuffle=True,
                  class_weight=None, sample_weight=None, dev_data=None, dev_split=None, dev_batch_size=None,
                  validation_batch_size=None):
    """(what keras.Model.fit is fed, validation_data) for AuxiliaryModel.fit; in-memory validation
    data becomes a stream of tfaux batches."""
    data, validation_data = _training_data(model, x, y, batch_size, validation_split, validation_data, shuffle,
                                           class_weight, sample_weight, dev_data, dev_split, dev_batch_size)
    if isinstance(validation_data, (tuple, list)) and validation_data and is_in_memory(validation_data[0]):
        vx, vy, vw = _unpack(validation_data, "validation_data")
        validation_data = evaluation_data(model, vx, vy, vw, validation_batch_size or batch_size)
    return data, validation_data


def _training_data(model, x, y, batch_size, validation_split, validation_data, shuffle, class_weight,
                   sample_weight, dev_data, dev_split, dev_batch_size):
    kind = model.method.second_stream
    if kind is None and (dev_data is not None or dev_split is not None or dev_batch_size is not None):
        raise DataFormError(f"dev_data / dev_split / dev_batch_size are for methods that read a second stream; "
                            f"{type(model.method).__name__} reads none (it trains on every row).")
    if dev_data is not None and dev_split is not None:
        raise DataFormError("give dev_data (the dev split itself) or dev_split (carve it from x, y), not both.")
    if is_in_memory(x):
        dict_inputs = isinstance(model.input_spec_nest, dict)
        if y is None:
            raise DataFormError(f"fit needs labels y beside x. Accepted: {ACCEPTED}.")
        data = InMemory(model.user_tasks, x, y, sample_weight, class_weight, dict_inputs=dict_inputs)
        if validation_split and validation_data is None:
            validation_data = data.split_last(validation_split)
        batch_size = batch_size or 32
        train = data.dataset(batch_size=batch_size, shuffle=shuffle)
        if kind is not None:
            train = paired(train, _second_stream(model, kind, data, dev_data, dev_split, dev_batch_size,
                                                 batch_size, shuffle))
        if model.num_examples is not None and data.num_rows > model.num_examples and model.method.needs_ids:
            raise DataFormError(f"fit got {data.num_rows} training rows but the model was built with "
                                f"num_examples={model.num_examples}, one weight per example.")
        return train, validation_data
    if y is not None or sample_weight is not None:
        raise DataFormError(f"y and sample_weight go inside the stream when x is a dataset or generator. "
                            f"Accepted: {ACCEPTED}.")
    if validation_split:
        raise DataFormError("validation_split needs in-memory x and y (as in Keras); pass validation_data=.")
    if not isinstance(x, tf.data.Dataset):
        if not (isinstance(x, keras.utils.PyDataset) or hasattr(x, "__next__")):
            raise DataFormError(f"fit cannot read x of type {type(x).__name__}. Accepted: {ACCEPTED}, "
                                "a keras.utils.PyDataset or a generator of batches.")
        if kind is not None:
            raise DataFormError(f"{type(model.method).__name__} needs x as arrays or a tf.data.Dataset "
                                f"(a second stream is paired with it); got {type(x).__name__}.")
        if class_weight:
            raise DataFormError("class_weight needs in-memory data or a tf.data.Dataset.")
        return x, validation_data
    if is_batch(x.element_spec) and dev_data is None and not class_weight:
        if model.method.bilevel and not {"train", "dev"} <= set(x.element_spec):
            raise DataFormError(unpaired_message(model.method))
        return x, validation_data  # tfaux batches (pipelines' streams): as they are
    stream = _converted(x, model.user_tasks)
    if class_weight:
        stream = stream.map(lambda b: with_class_weight(b, model.user_tasks, class_weight))
    paired_already = {"train", "dev"} <= set(stream.element_spec)
    if kind is not None and not paired_already and (dev_data is not None or model.method.bilevel):
        stream = paired(stream, _second_stream(model, kind, None, dev_data, dev_split, dev_batch_size, None))
    check_stream(model, stream.element_spec)
    return stream, validation_data
