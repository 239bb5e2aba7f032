"""Tasks: what a head predicts and how one example's loss on it is measured."""

import dataclasses

import keras
import tensorflow as tf

PRIMARY = "primary"
AUXILIARY = "auxiliary"
DENSE_KINDS = ("dense_classification", "dense_regression", "dense_normal")
KINDS = ("classification", "binary", "regression", "soft", "consistency") + DENSE_KINDS
TARGET_KINDS = ("classification", "binary", "regression", "dense_classification")
METRIC_NAMES = {"accuracy": "accuracy", "rmse": "RMSE", "miou": "mIoU"}


@dataclasses.dataclass
class Task:
    """One learning task of an auxiliary-learning problem.

    name:        key of the task's labels and mask in every batch.
    role:        "primary" (a target task: one we care about; several are allowed, the
                 first is the one exported) or "auxiliary".
    kind:        "classification" (integer labels, softmax over `num_classes`),
                 "binary" (0/1 labels, one logit), "regression" (float target) or
                 "soft" (a probability vector over `num_classes`, softmax cross-entropy;
                 for labels a strategy generates, auxiliary only) or "consistency" (no labels:
                 the encoder's features of `input_key` are pulled towards those of batch["x"],
                 loss 1 - cos; self-supervised, auxiliary only; e.g. pipelines.exemplar).
                 Dense (per-pixel) kinds read an encoder feature map [B, H, W, C]:
                 "dense_classification" (an integer label map [H, W], `ignore_index` where
                 unlabelled; per-pixel softmax cross-entropy; may be a target, metric mIoU),
                 "dense_regression" (a target [H, W, 1], valid where non-zero; per-pixel L1, as
                 MTAN's depth loss) and "dense_normal" (unit normals [H, W, 3], valid where
                 non-zero; per-pixel 1 - cos); one example's loss is the mean over its valid pixels.
    num_classes: classes of a classification task (ignored otherwise).
    input_key:   if set, the head reads the encoder's features of
                 `batch["task_x"][input_key]` instead of `batch["x"]` (e.g. a
                 rotated copy of the image for a rotation task).
    head_units:  hidden widths of the task's MLP head (empty: one Dense layer); for a dense
                 task, widths of 3x3 convolutions (linear, as the reference SegNet's prediction
                 layers) before the 1x1 output convolution.
    head_fn:     optional callable returning a custom head layer (overrides head_units).
    ignore_index: label of unlabelled pixels of a dense_classification task (NYUv2: -1).
    from_logits: whether the head outputs logits (tfaux's heads) or probabilities (a Keras
                 head ending in softmax / sigmoid, `AuxiliaryModel.from_keras`).
    """

    name: str
    role: str = AUXILIARY
    kind: str = "classification"
    num_classes: int = 2
    input_key: str | None = None
    head_units: tuple = ()
    head_fn: object = None
    ignore_index: int = -1
    from_logits: bool = True

    def __post_init__(self):
        if self.role not in (PRIMARY, AUXILIARY):
            raise ValueError(f"Task '{self.name}': role must be 'primary' or 'auxiliary', got '{self.role}'.")
        if self.kind not in KINDS:
            raise ValueError(f"Task '{self.name}': kind must be one of {KINDS}, got '{self.kind}'.")
        if self.role == PRIMARY and self.kind not in TARGET_KINDS:
            raise ValueError(f"Task '{self.name}': a primary (target) task must be one of {TARGET_KINDS}.")
        if self.kind in ("classification", "soft", "dense_classification") and self.num_classes < 2:
            raise ValueError(f"Task '{self.name}': a classification task needs num_classes >= 2.")

    def get_config(self):
        """The task's fields (JSON); a custom `head_fn` is not kept: the model saves the head itself."""
        config = dataclasses.asdict(self)
        config.pop("head_fn")
        config["head_units"] = list(self.head_units)
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**{**config, "head_units": tuple(config.get("head_units", ()))})

    def logits(self, outputs):
        """The head's output as logits: as is, or log-probabilities of a probability head
        (binary: log p - log(1 - p)), clipped to Keras' epsilon as its crossentropies do."""
        outputs = tf.cast(outputs, tf.float32)
        if self.from_logits or self.kind not in ("classification", "binary", "soft", "dense_classification"):
            return outputs
        eps = keras.config.epsilon()
        p = tf.clip_by_value(outputs, eps, 1.0 - eps)
        return tf.math.log(p) - tf.math.log(1.0 - p) if self.kind == "binary" else tf.math.log(p)

    @property
    def is_primary(self):
        return self.role == PRIMARY

    @property
    def is_dense(self):
        """Whether the task predicts one value per pixel of an [B, H, W, C] feature map."""
        return self.kind in DENSE_KINDS

    @property
    def label_ndim(self):
        """Rank of one example's label: 0 (a scalar), 2 (an [H, W] class map) or 3 ([H, W, channels])."""
        if not self.is_dense:
            return 0
        return 2 if self.kind == "dense_classification" else 3

    @property
    def output_units(self):
        if self.kind == "dense_normal":
            return 3
        return self.num_classes if self.kind in ("classification", "soft", "dense_classification") else 1

    def make_head(self):
        """The task's head: optional ReLU MLP, then a linear output layer (a consistency task
        compares the encoder's features themselves: identity; a dense task: linear 3x3
        convolutions of widths head_units, then a 1x1 convolution to output_units channels)."""
        if self.head_fn is not None:
            return self.head_fn()
        if self.kind == "consistency":
            return keras.layers.Identity(name=f"head_{self.name}")
        if self.is_dense:
            layers = [keras.layers.Conv2D(u, 3, padding="same", kernel_initializer="glorot_normal")
                      for u in self.head_units]
            layers.append(keras.layers.Conv2D(self.output_units, 1, kernel_initializer="glorot_normal",
                                              name=f"{self.name}_out"))
            return keras.Sequential(layers, name=f"head_{self.name}")
        layers = [keras.layers.Dense(u, activation="relu") for u in self.head_units]
        layers.append(keras.layers.Dense(self.output_units, name=f"{self.name}_out"))
        return keras.Sequential(layers, name=f"head_{self.name}")

    def pixel_losses(self, labels, outputs):
        """Per-pixel losses l[i, h, w] and validity v[i, h, w] in {0, 1} of a dense task, l = 0 where
        v = 0. dense_classification: l = -log softmax(o)[y], v = [y != ignore_index];
        dense_regression: l = sum_c |o_c - y_c|, v = [y != 0]; dense_normal:
        l = 1 - <o / |o|, y / |y|>, v = [y != 0] (MTAN's masks: pixels with a non-zero target)."""
        outputs = self.logits(outputs)
        if self.kind == "dense_classification":
            y = tf.cast(tf.reshape(labels, tf.shape(outputs)[:-1]), tf.int32)
            valid = tf.not_equal(y, self.ignore_index)
            loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.where(valid, y, 0), logits=outputs)
        else:
            y = tf.cast(tf.reshape(labels, tf.shape(outputs)), tf.float32)
            valid = tf.reduce_any(tf.not_equal(y, 0.0), axis=-1)
            if self.kind == "dense_regression":
                loss = tf.reduce_sum(tf.abs(outputs - y), axis=-1)
            else:
                cos = tf.reduce_sum(tf.math.l2_normalize(outputs, axis=-1) * tf.math.l2_normalize(y, axis=-1), -1)
                loss = 1.0 - cos
        valid = tf.cast(valid, tf.float32)
        return loss * valid, valid

    def dense_losses(self, labels, outputs):
        """(l[i, h, w] per-pixel losses, zero where invalid; and the per-example losses
        l_i = sum_hw l[i, h, w] / max(1, sum_hw v[i, h, w]), the mean over the valid pixels)."""
        loss, valid = self.pixel_losses(labels, outputs)
        return loss, tf.reduce_sum(loss, [1, 2]) / tf.maximum(tf.reduce_sum(valid, [1, 2]), 1.0)

    def per_example_loss(self, labels, outputs):
        """l_k(f_k(x_i), y_ik) for every example of the batch: shape [batch] (a dense task: the
        mean of its per-pixel losses over the example's valid pixels, `dense_losses`)."""
        if self.is_dense:
            return self.dense_losses(labels, outputs)[1]
        outputs = self.logits(outputs)
        if self.kind == "consistency":  # labels: the features of batch["x"] (AuxiliaryModel.forward)
            a = tf.math.l2_normalize(tf.reshape(outputs, [tf.shape(outputs)[0], -1]), axis=-1)
            b = tf.math.l2_normalize(tf.reshape(tf.cast(labels, tf.float32), [tf.shape(outputs)[0], -1]), axis=-1)
            return 1.0 - tf.reduce_sum(a * b, axis=-1)
        if self.kind == "soft":  # written out: TF's fused op drops d(dloss/dlogits)/dlabels (mixed hypergradient)
            return -tf.reduce_sum(tf.cast(labels, tf.float32) * tf.nn.log_softmax(outputs, axis=-1), axis=-1)
        if self.kind == "classification":
            return tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=tf.cast(tf.reshape(labels, [-1]), tf.int32), logits=outputs)
        target = tf.cast(tf.reshape(labels, [-1]), tf.float32)
        out = tf.reshape(outputs, [-1])
        if self.kind == "binary":
            return tf.nn.sigmoid_cross_entropy_with_logits(labels=target, logits=out)
        return tf.square(out - target)

    def prediction(self, outputs):
        """What a user of the task wants from its raw head output (dense tasks: per pixel)."""
        if self.kind == "dense_normal":
            return tf.math.l2_normalize(outputs, axis=-1)
        if self.kind == "dense_regression":
            return outputs
        if self.kind in ("classification", "soft", "dense_classification"):
            return tf.nn.softmax(outputs, axis=-1) if self.from_logits else outputs
        if self.kind == "binary":
            return tf.sigmoid(tf.reshape(outputs, [-1])) if self.from_logits else tf.reshape(outputs, [-1])
        return tf.reshape(outputs, [-1])

    @property
    def metric_name(self):
        if self.kind == "dense_classification":
            return "miou"
        return "rmse" if self.kind == "regression" else "accuracy"

    def make_metric(self, name=None):
        """Keras' own metric of the task's predictions (logits in, masked by sample_weight)."""
        name = name or f"{self.name}_{self.metric_name}"
        if self.kind == "dense_classification":
            return DenseMeanIoU(self.num_classes, self.ignore_index, name=name)
        if self.kind == "regression":
            return keras.metrics.RootMeanSquaredError(name=name)
        if self.kind == "binary":
            return keras.metrics.BinaryAccuracy(name=name, threshold=0.0)  # on the logit
        return keras.metrics.SparseCategoricalAccuracy(name=name)

    def make_extra_metrics(self, prefix=None):
        """Metrics reported beside the selection metric (not used for model selection):
        pixel accuracy for a dense_classification target, none otherwise."""
        if self.kind != "dense_classification":
            return []
        return [DensePixelAccuracy(self.ignore_index, name=f"{prefix or self.name}_pixel_accuracy")]


def _pixel_weights(y_true, ignore_index, sample_weight):
    """(labels with ignored pixels set to 0, weights w[i, h, w] = m_i [y[i, h, w] != ignore_index])."""
    y = tf.cast(y_true, tf.int32)
    valid = tf.cast(tf.not_equal(y, ignore_index), tf.float32)
    if sample_weight is not None:  # [B] per example, or per pixel
        m = tf.cast(sample_weight, tf.float32)
        valid *= tf.reshape(m, [-1] + [1] * (y.shape.rank - 1)) if m.shape.rank == 1 else m
    return tf.where(valid > 0, y, 0), valid


class DenseMeanIoU(keras.metrics.MeanIoU):
    """mIoU = (1 / |C'|) sum_{c in C'} TP_c / (TP_c + FP_c + FN_c), from the confusion matrix of
    every valid pixel seen since the last reset (C': classes with a non-empty union). Inputs:
    label maps [B, H, W], logits [B, H, W, C] and a per-example mask [B] as sample_weight; pixels
    labelled `ignore_index` are skipped."""

    def __init__(self, num_classes, ignore_index=-1, name=None, dtype=None):
        super().__init__(num_classes=num_classes, name=name, dtype=dtype, sparse_y_pred=False)
        self.ignore_index = ignore_index

    def update_state(self, y_true, y_pred, sample_weight=None):
        y, weights = _pixel_weights(y_true, self.ignore_index, sample_weight)
        return super().update_state(y, y_pred, tf.cast(weights, self.dtype))  # 0/1 masks: exact int64 counts

    @property
    def count(self):
        """Weighted pixels seen (model selection averages only the targets that saw some)."""
        return tf.reduce_sum(tf.convert_to_tensor(self.total_cm))

    def get_config(self):
        return {"num_classes": self.num_classes, "ignore_index": self.ignore_index, "name": self.name,
                "dtype": self.dtype}


class DensePixelAccuracy(keras.metrics.SparseCategoricalAccuracy):
    """Pixel accuracy = sum_valid [argmax_c o[i, h, w, c] = y[i, h, w]] / #valid pixels, over
    every valid pixel seen since the last reset (inputs as DenseMeanIoU's)."""

    def __init__(self, ignore_index=-1, name="pixel_accuracy", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.ignore_index = ignore_index

    def update_state(self, y_true, y_pred, sample_weight=None):
        y, weights = _pixel_weights(y_true, self.ignore_index, sample_weight)
        return super().update_state(y, y_pred, weights)

    def get_config(self):
        return {**super().get_config(), "ignore_index": self.ignore_index}


def primary_task(tasks):
    """The single primary task of a list, with a clear error otherwise."""
    found = [t for t in tasks if t.is_primary]
    if len(found) != 1:
        raise ValueError(f"Exactly one task must have role 'primary'; got {len(found)} among {[t.name for t in tasks]}.")
    return found[0]


def target_tasks(tasks):
    """The primary (target) tasks of a list, in order, with a clear error when there is none
    or when their metrics cannot be averaged (model selection uses their mean)."""
    found = [t for t in tasks if t.is_primary]
    if not found:
        raise ValueError(f"At least one task must have role 'primary'; tasks are {[t.name for t in tasks]}.")
    names = {t.metric_name for t in found}
    if len(names) > 1:
        raise ValueError(f"Target tasks {[t.name for t in found]} mix "
                         f"{' and '.join(METRIC_NAMES[m] for m in sorted(names))}; their mean selects "
                         "the model, so they must share one metric.")
    return found


def ordered(tasks):
    """Tasks with the targets first (columns 0..n-1 of every loss matrix; column 0 is the
    exported one), auxiliaries after."""
    tasks = list(tasks)
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise ValueError(f"Task names must be unique; got {names}.")
    targets = target_tasks(tasks)
    return targets + [t for t in tasks if not t.is_primary]


def with_roles(tasks, targets=(), privileged=None):
    """The tasks with new roles: `targets` (names, in order; the first is exported) become
    role "primary", the others "auxiliary" (seed 004's privileged tasks). `privileged` (names)
    keeps only those auxiliaries (None: every other task). Empty `targets`: roles unchanged.
    Unknown or repeated names raise ValueError naming them."""
    tasks = list(tasks)
    if not targets and privileged is None:
        return tasks
    by_name = {t.name: t for t in tasks}
    targets = list(targets) or [t.name for t in tasks if t.is_primary]
    privileged = [n for n in by_name if n not in targets] if privileged is None else list(privileged)
    unknown = sorted(set(targets + privileged) - set(by_name))
    if unknown:
        raise ValueError(f"unknown task names {unknown}; the tasks are {sorted(by_name)}.")
    both = sorted(set(targets) & set(privileged))
    if both or len(set(targets)) != len(targets) or len(set(privileged)) != len(privileged):
        raise ValueError(f"a task may be named once, as a target or as privileged; repeated: "
                         f"{both or sorted(n for n in by_name if (targets + privileged).count(n) > 1)}.")
    for name in targets:
        if by_name[name].kind not in TARGET_KINDS:
            raise ValueError(f"task '{name}' ({by_name[name].kind} labels) cannot be a target.")
    return ([dataclasses.replace(by_name[n], role=PRIMARY) for n in targets]
            + [dataclasses.replace(by_name[n], role=AUXILIARY) for n in privileged])
