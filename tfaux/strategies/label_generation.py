"""Learned auxiliary labels: AuxiLearn (seed 002, Sec. 3.3), MAXL and MAXL-F (Liu et al. 2019).

A label-generator network g(x; phi), of the same backbone family as the task model and trained
from scratch, gives every example a soft label over C * psi auxiliary sub-classes (psi per
primary class, default 5), with MAXL's masked softmax: a softmax over the psi sub-classes of
the example's own primary class, every other entry exactly 0. The task model learns one extra
auxiliary task of kind "soft" on these labels through its own head (tfaux.Task):

    L_T(theta, phi) = (1/B) sum_i [ l_main(x_i, y_i; theta) + l_aux(f_aux(x_i; theta), g(x_i; phi)) ]

Unlabelled rows (primary mask 0) get the all-zero label, so their generated-label loss and its
gradients are exactly 0 (the masked softmax needs the primary class; there is none to use).

- AuxiLearn (`auxilearn_labels`): phi <- phi - Hypergradient(L_A, L_T) on the dev (auxiliary)
  set, L_A = mean main loss (seed 002, Eq. 4 and Alg. 1-2): the model's implicit hypergradient
  (Neumann, K = 3, alpha = the lower learning rate). Upper update: the AuxiLearn reference code's
  SGD(1e-3, momentum 0.9), weight decay 1e-4, clip 25 (tfaux.upper's scale); the paper tunes the
  generator's learning rate in {1e-3, 5e-4}, weight decay in {5e-4, 1e-4, 5e-5}, and M in {5, 15, 25}.
- MAXL (`maxl`): one-step look-ahead meta-gradient on the training set,
      theta+ = theta - alpha grad_theta L_T(theta, phi),
      phi <- phi - beta grad_phi [ L_main(theta+(phi)) + lambda sum_j pbar_j log pbar_j ],
  pbar the batch mean of the generated labels (the negative entropy of the sub-class marginal,
  lambda = 0.2: the MAXL reference code, lorenmt/maxl `model_vgg_maxl.py`, `model_entropy` and its
  update `mean(loss1) + 0.2 * mean(loss3)`). Realised as the Neumann series with K = 0 terms,
  -alpha grad_theta L_main . grad_phi grad_theta L_T, which is the look-ahead gradient with
  grad_theta L_main taken at theta rather than at theta+ (equal at a stationary theta, O(alpha)
  apart otherwise), alpha = the lower learning rate (MAXL's `vgg_lr`). The upper batch is a
  reordered training batch (`upper_data = "train"`), as MAXL meta-trains on the training data.
  Reference update: SGD(1e-3), weight decay 5e-4, no momentum, no clipping, on the true
  meta-gradient at alpha = 0.01; in tfaux.upper's scale g = gradient / alpha that is SGD(1e-5),
  weight decay 0.05. MAXL's focal loss and its 1e-8 mask floor are not reproduced (plain soft
  cross-entropy, exact zeros).
- MAXL-F (`maxl_f`): the same generator frozen at its random initialisation (single level).
"""

import keras
import tensorflow as tf

from tfaux import distribute, hypergrad, models
from tfaux.strategies.base import Strategy, serialize_callable
from tfaux.tasks import Task
from tfaux.upper import UpperSettings

BACKBONES = {
    "convnet4": lambda spec: models.convnet4(name="generator_convnet4"),
    "lenet": lambda spec: models.lenet(input_shape=tuple(spec.shape), name="generator_lenet"),
    "mlp": lambda spec: models.mlp_encoder(name="generator_mlp"),
    "resnet18": lambda spec: models.resnet18(stem="cifar" if spec.shape[0] <= 64 else "imagenet"),
    "vgg16": lambda spec: models.vgg16(name="generator_vgg16"),
}


def masked_softmax(logits, labels, num_classes, psi):
    """MAXL's masked softmax (Liu et al. 2019, Sec. 3.2): for primary class c = labels[i],
    y_aux[i, c*psi + j] = exp(z[i, c*psi + j]) / sum_k exp(z[i, c*psi + k]), every entry
    outside class c's block exactly 0. A label outside [0, C) gives the all-zero row."""
    blocks = tf.reshape(logits, [-1, num_classes, psi])
    own = tf.one_hot(tf.cast(tf.reshape(labels, [-1]), tf.int32), num_classes, dtype=blocks.dtype)
    return tf.reshape(tf.nn.softmax(blocks, axis=-1) * own[:, :, None], [-1, num_classes * psi])


def marginal_negentropy(soft_labels, mask):
    """-H(pbar) = sum_j pbar_j log pbar_j, pbar = mean of the generated labels of the labelled
    rows over all replicas (MAXL's `model_entropy`); returns this replica's share."""
    mask = tf.cast(tf.reshape(mask, [-1, 1]), soft_labels.dtype)
    total = distribute.replica_sum(tf.reduce_sum(soft_labels * mask, axis=0))
    count = distribute.replica_sum(tf.reduce_sum(mask))
    pbar = total / tf.maximum(count, 1.0)
    return tf.reduce_sum(tf.math.xlogy(pbar, pbar)) / float(distribute.num_replicas())


@keras.saving.register_keras_serializable(package="tfaux")
class LabelGenerator(Strategy):
    """A generator g(x; phi) of soft auxiliary labels for one extra "soft" task (base of the
    three methods; bi-level, updated by the model's hypergradient of `upper_objective`).

    psi:            auxiliary sub-classes per primary class.
    backbone:       the generator's backbone: None (tfaux.models.for_input of the inputs, a fresh
                    network of the task model's default family), a name in BACKBONES, or a
                    callable input_spec -> keras layer.
    head_units:     hidden widths of the generator's MLP head (None: the primary task's head_units).
    aux_head_fn:    optional callable returning the task model's head of the generated task
                    (default: the primary task's head_units, then Dense(C * psi)).
    entropy_weight: lambda of MAXL's lambda * sum_j pbar_j log pbar_j in the upper objective.
    task_name:      name of the generated task.

    In `get_config`, a callable backbone or aux_head_fn must be a registered Keras serializable
    (base.serialize_callable).
    """

    bilevel = True
    callable_args = ("backbone", "aux_head_fn")
    upper_defaults = UpperSettings(learning_rate=1e-3, momentum=0.9, weight_decay=1e-4, clipnorm=25.0)

    def __init__(self, psi=5, backbone=None, head_units=None, aux_head_fn=None, entropy_weight=0.0,
                 task_name="generated", **kwargs):
        super().__init__(**kwargs)
        if int(psi) < 1:
            raise ValueError(f"psi (sub-classes per primary class) must be >= 1, got {psi}.")
        if isinstance(backbone, str) and backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {sorted(BACKBONES)} or a callable, got '{backbone}'.")
        if backbone is not None and not isinstance(backbone, str) and not callable(backbone):
            raise ValueError(f"backbone must be None, a name in {sorted(BACKBONES)} or a callable.")
        if aux_head_fn is not None and not callable(aux_head_fn):
            raise ValueError("aux_head_fn must be a callable returning the generated task's head layer.")
        if not entropy_weight >= 0.0:
            raise ValueError(f"entropy_weight must be >= 0, got {entropy_weight}.")
        self.psi, self.backbone, self.entropy_weight = int(psi), backbone, float(entropy_weight)
        self.head_units = None if head_units is None else tuple(head_units)
        self.aux_head_fn, self.task_name = aux_head_fn, task_name

    # ------------------------------------------------------------------ tasks and network
    def extra_tasks(self, tasks):
        """One auxiliary task of kind "soft" over C * psi classes, C = the first target's classes."""
        primary = tasks[0]
        if primary.kind != "classification":
            raise ValueError(f"{type(self).__name__} needs a classification primary task; "
                             f"'{primary.name}' is {primary.kind}.")
        if self.task_name in {t.name for t in tasks}:
            raise ValueError(f"{type(self).__name__}: a task is already named '{self.task_name}' (set task_name).")
        self.primary_name, self.num_classes = primary.name, int(primary.num_classes)
        self.generator_units = tuple(primary.head_units if self.head_units is None else self.head_units)
        return [Task(self.task_name, kind="soft", num_classes=self.num_classes * self.psi,
                     head_units=tuple(primary.head_units), head_fn=self.aux_head_fn)]

    def setup_inputs(self, input_spec):
        """Build g(x; phi): the backbone, then ReLU MLP head_units, then Dense(C * psi) logits."""
        if callable(self.backbone):
            body = self.backbone(input_spec)
        else:
            body = BACKBONES[self.backbone](input_spec) if self.backbone else models.for_input(input_spec)
        layers = [keras.layers.Dense(u, activation="relu") for u in self.generator_units]
        layers.append(keras.layers.Dense(self.num_classes * self.psi, name="generator_logits"))
        self.generator_body, self.generator_head = body, keras.Sequential(layers, name="generator_head")
        zeros = tf.nest.map_structure(lambda s: tf.zeros((2,) + tuple(s.shape), s.dtype), input_spec)
        self.generator_head(self.generator_body(zeros))

    def logits(self, x, training=False):
        """z = g(x; phi) before the mask: [B, C * psi]."""
        return self.generator_head(self.generator_body(x, training=training), training=training)

    def generate(self, batch, training=False):
        """The generated soft labels of a batch, [B, C * psi]: the masked softmax of g(x; phi) at each
        row's primary class, zero on rows without a primary label; live w.r.t. phi."""
        labels = tf.reshape(batch["labels"][self.primary_name], [-1])
        soft = masked_softmax(self.logits(batch["x"], training), labels, self.num_classes, self.psi)
        mask = batch.get("mask", {}).get(self.primary_name)
        if mask is None:
            return soft
        return soft * tf.cast(tf.reshape(mask, [-1, 1]), soft.dtype)

    def generated_labels(self, batch, training, step):
        del step
        return {self.task_name: self.generate(batch, training)}

    # ------------------------------------------------------------------ upper level
    def upper_objective(self, model, batch):
        """L_main on the upper batch, plus MAXL's lambda * sum_j pbar_j log pbar_j of the labels the
        generator gives that batch (its direct term; lambda = 0 leaves the plain dev loss)."""
        objective = model.dev_objective(batch)
        if self.entropy_weight:
            mask = batch.get("mask", {}).get(self.primary_name)
            soft = self.generate(batch, training=True)
            mask = tf.ones(tf.shape(soft)[:1]) if mask is None else mask
            objective += self.entropy_weight * marginal_negentropy(soft, mask)
        return objective

    def get_config(self):
        return {**super().get_config(), "psi": self.psi, "backbone": serialize_callable(self.backbone, "backbone"),
                "head_units": self.head_units, "aux_head_fn": serialize_callable(self.aux_head_fn, "aux_head_fn"),
                "entropy_weight": self.entropy_weight, "task_name": self.task_name}


@keras.saving.register_keras_serializable(package="tfaux")
class AuxiLearnLabels(LabelGenerator):
    """AuxiLearn's learned auxiliary labels (seed 002, Sec. 3.3): phi by the implicit hypergradient
    of the main loss on the dev (auxiliary) set, no entropy term."""


@keras.saving.register_keras_serializable(package="tfaux")
class MAXL(LabelGenerator):
    """MAXL (Liu et al. 2019): one-step look-ahead meta-gradient (Neumann K = 0) on training
    batches, plus 0.2 * sum_j pbar_j log pbar_j against collapsed sub-class usage."""

    solver = hypergrad.Neumann(terms=0)
    upper_data = "train"
    upper_defaults = UpperSettings(learning_rate=1e-5, momentum=0.0, weight_decay=0.05, clipnorm=0.0)

    def __init__(self, psi=5, backbone=None, head_units=None, aux_head_fn=None, entropy_weight=0.2,
                 task_name="generated", **kwargs):
        super().__init__(psi=psi, backbone=backbone, head_units=head_units, aux_head_fn=aux_head_fn,
                         entropy_weight=entropy_weight, task_name=task_name, **kwargs)


@keras.saving.register_keras_serializable(package="tfaux")
class FrozenLabelGenerator(LabelGenerator):
    """MAXL-F (seed 002, Sec. 5.4): the generator stays at its random initialisation; single level."""

    bilevel = False
