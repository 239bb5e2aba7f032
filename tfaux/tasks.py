"""Tasks: what a head predicts and how one example's loss on it is measured."""

import dataclasses

import keras
import tensorflow as tf

PRIMARY = "primary"
AUXILIARY = "auxiliary"
KINDS = ("classification", "binary", "regression", "soft", "consistency")
TARGET_KINDS = ("classification", "binary", "regression")


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
    num_classes: classes of a classification task (ignored otherwise).
    input_key:   if set, the head reads the encoder's features of
                 `batch["task_x"][input_key]` instead of `batch["x"]` (e.g. a
                 rotated copy of the image for a rotation task).
    head_units:  hidden widths of the task's MLP head (empty: one Dense layer).
    head_fn:     optional callable returning a custom head layer (overrides head_units).
    """

    name: str
    role: str = AUXILIARY
    kind: str = "classification"
    num_classes: int = 2
    input_key: str | None = None
    head_units: tuple = ()
    head_fn: object = None

    def __post_init__(self):
        if self.role not in (PRIMARY, AUXILIARY):
            raise ValueError(f"Task '{self.name}': role must be 'primary' or 'auxiliary', got '{self.role}'.")
        if self.kind not in KINDS:
            raise ValueError(f"Task '{self.name}': kind must be one of {KINDS}, got '{self.kind}'.")
        if self.role == PRIMARY and self.kind not in TARGET_KINDS:
            raise ValueError(f"Task '{self.name}': a primary (target) task must be one of {TARGET_KINDS}.")
        if self.kind in ("classification", "soft") and self.num_classes < 2:
            raise ValueError(f"Task '{self.name}': a classification task needs num_classes >= 2.")

    @property
    def is_primary(self):
        return self.role == PRIMARY

    @property
    def output_units(self):
        return self.num_classes if self.kind in ("classification", "soft") else 1

    def make_head(self):
        """The task's head: optional ReLU MLP, then a linear output layer (a consistency task
        compares the encoder's features themselves: identity)."""
        if self.head_fn is not None:
            return self.head_fn()
        if self.kind == "consistency":
            return keras.layers.Identity(name=f"head_{self.name}")
        layers = [keras.layers.Dense(u, activation="relu") for u in self.head_units]
        layers.append(keras.layers.Dense(self.output_units, name=f"{self.name}_out"))
        return keras.Sequential(layers, name=f"head_{self.name}")

    def per_example_loss(self, labels, outputs):
        """l_k(f_k(x_i), y_ik) for every example of the batch: shape [batch]."""
        outputs = tf.cast(outputs, tf.float32)
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
        """What a user of the task wants from its raw head output."""
        if self.kind in ("classification", "soft"):
            return tf.nn.softmax(outputs, axis=-1)
        if self.kind == "binary":
            return tf.sigmoid(tf.reshape(outputs, [-1]))
        return tf.reshape(outputs, [-1])

    @property
    def metric_name(self):
        return "rmse" if self.kind == "regression" else "accuracy"

    def make_metric(self, name=None):
        """Keras' own metric of the task's predictions (logits in, masked by sample_weight)."""
        name = name or f"{self.name}_{self.metric_name}"
        if self.kind == "regression":
            return keras.metrics.RootMeanSquaredError(name=name)
        if self.kind == "binary":
            return keras.metrics.BinaryAccuracy(name=name, threshold=0.0)  # on the logit
        return keras.metrics.SparseCategoricalAccuracy(name=name)


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
    if len({t.metric_name for t in found}) > 1:
        raise ValueError(f"Target tasks {[t.name for t in found]} mix accuracy and RMSE; their mean selects "
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
