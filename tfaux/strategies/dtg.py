"""DTG-AuxL: joint data-task generation for auxiliary learning (seed 001, the NeurIPS 2023 paper's
appendix; Alg. 1, Sec. 2).

A joint generator phi = (feature generator F, label generator G) makes one new auxiliary sample
per example i of the batch from i and a second sample j:

    j               shared-input setting: row pi(i) of the same batch, pi a permutation drawn
                    statelessly from the step (identical on every replica; appendix Sec. 4.3
                    "randomly shuffle the training batch"); different-input setting (the batch
                    carries an auxiliary dataset input, task_x[aux_input_key]): that input's
                    sample of row i (appendix Sec. 4.4-4.5).
    z~_i = F(z_i, z_j)                           the generated *feature* (z: live encoder features)
    y~_i = softmax(G(y_i, y_j) + b_i)            the generated *label*, on the primary simplex
    F(u) = W u + MLP(u),  u = [z_i ; z_j]        linear + non-linear ("wide & deep", appendix 5.5)
    G(v) = W' v + MLP'(v), v = [enc(labels of i) ; enc(labels of j)]
    b_i  = label_bias * sum of the pair's primary one-hot labels (the "label bias term")

A regression primary (Amazon ratings, appendix 4.3) gets a real-valued generated label in its own
label space, y~_i = G(v_i) + b_i with b_i = label_bias * (y_i + y_j) / 2 (the pair's mid-point, as F
starts at the features'; y_i alone without a partner label; default label_bias 1), learned by MSE.

The task model learns the primary task, the given auxiliaries and the generated task
(GENERATED, added by `extra_tasks`), whose head h_psi is one of the model's heads (psi is in theta:
trained by the lower optimizer, in the Hessian of the implicit gradient unless
hessian_scope="no_aux_heads", logged as `dtg_generated_loss`) and reads z~ through the protocol's
generated-input hook:

    L_t(theta, phi) = (1/B) sum_i [ sum_k m_ik l_ik + w_gen m_i,primary CE(y~_i, softmax(h_psi(z~_i))) ]

Upper level, every M lower steps (Alg. 1): phi moves along the implicit hypergradient (Eq. 12 / A5,
the model's Neumann solver) of the primary loss on a batch of the reordered training set
(`upper_data = "train"`), plus the explicit gradient of the instance regulariser.

Where the appendix is silent, the choices made here:
- h_psi has the primary task's head architecture (or head_fn's) and reads the generated feature
  z~ in the encoder's feature space, so every head architecture fits it.
- F and G share one parametrisation: a linear term (Dense) plus `nonlinear_terms` ReLU MLPs of
  `depth` layers (depth - 1 hidden layers of `width` units, then the output layer), default
  width 64, depth 3 (the middle of the appendix's grid {32, 64} x {2, 3, 4}). F's linear term
  starts at the mid-point (z_i + z_j) / 2; every other layer starts at Keras' defaults. F's layers
  read wide encoder features, so their kernels are stored as V / fan_in (FanInDense): the upper
  optimizer's step size then bounds the change of each generated feature by that fraction of the
  mean |input| whatever the width (measured with a plain kernel on MNIST, 5% of train, a random
  10-class auxiliary, ConvNet-4: one Adam 1e-2 step took the generated features' norm from 8 to
  265 and the generated-task loss from 2.7 to 619, and DTG-AuxL's test accuracy fell to 55% against
  STL's 92.5%).
- The label bias term is the pair's primary labels as logits: label_bias * (e_{y_i} + e_{y_j})
  (appendix 5.4: the generated labels keep "the original largest peaks provided by the label bias
  term" beside a collapsed peak); default label_bias = log C, so with zero learnable terms two
  distinct classes get C / (3C - 2) (about a third) of the mass each, one shared class
  C^2 / (C^2 + C - 1). In the different-input setting (and without the data generator) j has no
  primary label and only e_{y_i} is added: C / (2C - 1), about half.
- Label inputs: the labels of every task that reads batch["x"] (primary and shared-input
  auxiliaries; classification one-hot, soft as is, binary / regression as one value; per-pixel and
  consistency tasks are left out), each times its mask; for j, the same tasks at pi(i) (shared
  input) or the tasks reading task_x[aux_input_key] (different input).
- The instance regulariser (appendix 5.4 names its purpose, not its form): the negative entropy
  of the batch-mean of q_i = softmax(G(v_i)) (the learnable terms only, which is what collapses),
      L_reg = sum_c qbar_c log qbar_c,
  minimal (-log C) when the learnable terms spread over all classes and 0 when they put every
  input on one class. It is computed on the upper batch (a reordered training batch; the
  appendix's b_g,tau is the current lower batch, which `upper_objective` does not see).
- For a regression primary, collapse is y~ constant whatever the input; the regulariser is the
  shortfall of the generated labels' spread, L_reg = max(0, log Var(y) - log Var(y~)) over the
  batch's primary-labelled rows (0 while y~ spreads at least as much as the primary labels).
- Scale: Alg. 1 adds grad L_reg to the reference code's hypergradient, which omits Neumann's
  alpha (tfaux.upper). tfaux feeds the upper optimizer (dL_upper/dphi) / alpha, so the upper
  objective adds alpha * reg_weight * L_reg: the optimizer then sees the reference-scale implicit
  gradient plus reg_weight * grad L_reg, as in Alg. 1. reg_weight = 0.2 (MAXL's weight for the
  same kind of term; the paper's is not given).
- Only rows with a primary label get a generated loss and count in the regulariser.
- Upper update: Adam(1e-2), no clipping, no decay (the CUB and Amazon settings, appendix 4.1/4.3;
  CIFAR-100 and Pet use Adam 1e-3, CIFAR10-100 SGD 1e-2); M in {20, 30} and Neumann K = 3 are
  the model's defaults (upper_interval, solver).

Ablations (appendix 5.2-5.5): use_aux_labels=False (G sees only primary labels), generate_data=False
(z~_i = z_i and G sees only i's labels), linear=False (no linear term), linear=False with
nonlinear_terms=2 ("two nonlinear"), reg_weight=0 (no instance regularisation).
"""

import math

import keras
import tensorflow as tf

from tfaux import distribute
from tfaux.strategies.base import Strategy, serialize_callable
from tfaux.strategies.label_generation import marginal_negentropy
from tfaux.tasks import Task
from tfaux.upper import UpperSettings

GENERATED = "dtg_generated"  # the generated task's name and the input key of its features
_LABEL_KINDS = ("classification", "soft", "binary", "regression")


class FanInDense(keras.layers.Layer):
    """activation(u W + b) with W stored as V / fan_in (V starts at fan_in x Glorot, so W starts as
    a Dense layer's): an optimizer step of size eta on V moves each output by at most eta times
    the mean |u_j|, whatever the input width. (With W itself as the variable, Adam's first step
    moves each output by about eta * sum_j |u_j|: on ConvNet-4's 1,568-d features, lr 1e-2 took
    the generated features' norm from 8 to 265 in one upper step.)"""

    def __init__(self, units, activation=None, **kwargs):
        super().__init__(**kwargs)
        self.units, self.activation = int(units), keras.activations.get(activation)

    def build(self, input_shape):
        self.fan_in = int(input_shape[-1])
        glorot = keras.initializers.GlorotUniform()
        self.kernel = self.add_weight(shape=(self.fan_in, self.units), name="kernel",
                                      initializer=lambda shape, dtype=None: glorot(shape, dtype) * self.fan_in)
        self.bias = self.add_weight(shape=(self.units,), name="bias", initializer="zeros")

    def call(self, u):
        return self.activation(tf.matmul(u, self.kernel) / float(self.fan_in) + self.bias)


class WideDeep(keras.layers.Layer):
    """out = W u + b + sum_t MLP_t(u) (appendix 5.5: linear "memorisation" + non-linear
    "generalisation" term). linear: keep the linear term; nonlinear_terms: how many MLPs;
    depth: layers per MLP (depth - 1 layers of `width` units and `activation`, then a linear output
    layer); fan_in_scaled: FanInDense layers (for wide inputs, e.g. encoder features) instead of Dense."""

    def __init__(self, units, width=64, depth=3, linear=True, nonlinear_terms=1, activation="relu",
                 fan_in_scaled=False, **kwargs):
        super().__init__(**kwargs)
        dense = FanInDense if fan_in_scaled else keras.layers.Dense
        self.units = int(units)
        self.linear = dense(self.units, name="linear") if linear else None
        self.mlps = []
        for t in range(int(nonlinear_terms)):
            layers = [dense(width, activation=activation) for _ in range(int(depth) - 1)]
            layers.append(dense(self.units))
            self.mlps.append(keras.Sequential(layers, name=f"nonlinear_{t}"))

    def call(self, u):
        terms = ([self.linear(u)] if self.linear is not None else []) + [m(u) for m in self.mlps]
        return tf.add_n(terms)


def _encode(task, labels, mask):
    """One task's labels as [B, n] float inputs of the label generator, zero where masked."""
    if task.kind == "classification":
        y = tf.one_hot(tf.cast(tf.reshape(labels, [-1]), tf.int32), task.num_classes)
    elif task.kind == "soft":
        y = tf.cast(labels, tf.float32)
    else:
        y = tf.reshape(tf.cast(labels, tf.float32), [-1, 1])
    return y * tf.reshape(tf.cast(mask, tf.float32), [-1, 1])


def _activation_config(activation):
    """An activation as a config value: a Keras activation function by its name, else as
    `serialize_callable` gives it (a string as it is, a registered function serialized)."""
    try:
        if callable(activation) and keras.activations.get(activation.__name__) is activation:
            return activation.__name__
    except (AttributeError, ValueError):  # not one of Keras' activations
        pass
    return serialize_callable(activation, "activation")


def _variance(values, mask):
    """The all-replica variance of [B] values over the rows where mask is 1."""
    mask = tf.reshape(tf.cast(mask, tf.float32), [-1])
    sums = distribute.replica_sum(tf.stack([tf.reduce_sum(mask), tf.reduce_sum(values * mask),
                                            tf.reduce_sum(tf.square(values) * mask)]))
    count = tf.maximum(sums[0], 1.0)
    return tf.maximum(sums[2] / count - tf.square(sums[1] / count), 0.0)


@keras.saving.register_keras_serializable(package="tfaux")
class DTGAuxL(Strategy):
    """DTG-AuxL's joint generator, generated task and instance regulariser (module docstring).

    width, depth:     the generators' MLPs (appendix grid {32, 64} x {2, 3, 4}).
    label_bias:       scale of the label bias term (None: log C; 0: none).
    reg_weight:       weight of the instance regulariser (0: the "w/o instance reg" ablation).
    use_aux_labels:   False: the label generator sees only primary labels ("w/o aux").
    generate_data:    False: the generated task reads i's own feature and G only i's labels ("w/o data").
    linear:           False: no linear term ("w/o linear").
    nonlinear_terms:  MLP terms (linear=False, nonlinear_terms=2: "two nonlinear").
    activation:       the MLPs' hidden activation (default ReLU; a smooth one, e.g. tanh, makes the
                      lower objective twice differentiable in theta, as implicit differentiation assumes).
    generated_weight: weight of the generated task's loss in L_t.
    aux_input_key:    the input key of an auxiliary dataset (different-input setting, tfaux
                      pipelines' --aux_dataset: "aux"); used when some task reads it.
    head_fn:          optional callable returning the generated task's head (default: the
                      primary task's architecture, C outputs).
    seed:             folded into the stateless in-batch permutation.
    pair_group:       partners come from groups of this many consecutive rows (None: the replica's
                      whole batch); set to a divisor of the per-replica batch, it makes a run on R
                      replicas pair (and train) exactly as on one device (`permutation`).
    """

    bilevel = True
    upper_data = "train"
    upper_defaults = UpperSettings(optimizer="adam", learning_rate=1e-2, momentum=0.0, weight_decay=0.0,
                                   clipnorm=0.0)
    callable_args = ("head_fn", "activation")  # in get_config: registered Keras serializables (serialize_callable)

    def __init__(self, width=64, depth=3, label_bias=None, reg_weight=0.2, use_aux_labels=True,
                 generate_data=True, linear=True, nonlinear_terms=1, generated_weight=1.0,
                 aux_input_key="aux", head_fn=None, seed=0, activation="relu", pair_group=None, **kwargs):
        super().__init__(**kwargs)
        if int(width) < 1 or int(depth) < 1:
            raise ValueError(f"width and depth must be >= 1, got {width} and {depth}.")
        if int(nonlinear_terms) < 0 or (not linear and int(nonlinear_terms) == 0):
            raise ValueError("The generators need a linear term or at least one non-linear term.")
        if not reg_weight >= 0.0 or not generated_weight >= 0.0:
            raise ValueError("reg_weight and generated_weight must be >= 0.")
        if label_bias is not None and not label_bias >= 0.0:
            raise ValueError(f"label_bias must be None (log C) or >= 0, got {label_bias}.")
        if pair_group is not None and int(pair_group) < 2:
            raise ValueError(f"pair_group must be None (the whole batch) or >= 2, got {pair_group}.")
        if head_fn is not None and not callable(head_fn):
            raise ValueError("head_fn must be a callable returning the generated task's head layer.")
        self.width, self.depth, self.label_bias = int(width), int(depth), label_bias
        self.reg_weight, self.generated_weight = float(reg_weight), float(generated_weight)
        self.use_aux_labels, self.generate_data = bool(use_aux_labels), bool(generate_data)
        self.linear, self.nonlinear_terms = bool(linear), int(nonlinear_terms)
        self.aux_input_key, self.head_fn, self.seed = aux_input_key, head_fn, int(seed)
        self.pair_group = None if pair_group is None else int(pair_group)
        keras.activations.get(activation)  # an unknown name fails here, in Keras' words
        self.activation = activation

    # ------------------------------------------------------------------ tasks and set-up
    def extra_tasks(self, tasks):
        """The generated task: soft labels on the primary simplex, read from the generated features
        (key GENERATED; batch["x"]'s own features without the data generator), with the primary
        task's head architecture (or head_fn's)."""
        primary = tasks[0]
        if primary.kind not in ("classification", "regression"):
            raise ValueError(f"DTG-AuxL generates labels in the primary label space: it needs a classification "
                             f"or regression primary task; '{primary.name}' is {primary.kind}.")
        if GENERATED in {t.name for t in tasks}:
            raise ValueError(f"DTG-AuxL: a task is already named '{GENERATED}'.")
        kind = "soft" if primary.kind == "classification" else "regression"
        return [Task(GENERATED, kind=kind, num_classes=int(primary.num_classes),
                     head_units=tuple(primary.head_units), head_fn=self.head_fn or primary.head_fn,
                     input_key=GENERATED if self.generate_data else None)]

    @property
    def generated_input_keys(self):
        return (GENERATED,) if self.generate_data else ()

    def setup(self, tasks, feature_dim, num_examples):
        super().setup(tasks, feature_dim, num_examples)
        primary = self.tasks[0]
        self.regression = primary.kind == "regression"
        self.num_classes = 1 if self.regression else int(primary.num_classes)  # G's outputs
        self.generated_column = [t.name for t in self.tasks].index(GENERATED)
        default_bias = 1.0 if self.regression else math.log(self.num_classes)
        self.bias_scale = default_bias if self.label_bias is None else float(self.label_bias)
        self.different_input = any(t.input_key == self.aux_input_key for t in self.tasks)
        usable = [k for k, t in enumerate(self.tasks) if t.kind in _LABEL_KINDS and t.name != GENERATED]
        own = [k for k in usable if self.tasks[k].input_key is None]
        if not self.use_aux_labels:
            own = [k for k in own if self.tasks[k].is_primary][:1]
        if not self.generate_data:
            other = []
        elif self.different_input:
            other = [k for k in usable if self.tasks[k].input_key == self.aux_input_key and self.use_aux_labels]
        else:
            other = list(own)
        self.own_columns, self.other_columns = own, other
        width = sum(self._label_width(self.tasks[k]) for k in own + other)
        terms = dict(width=self.width, depth=self.depth, linear=self.linear, nonlinear_terms=self.nonlinear_terms,
                     activation=self.activation)
        self.label_generator = WideDeep(self.num_classes, name="label_generator", **terms)
        self.label_generator(tf.zeros((2, width)))
        self.feature_generator = None
        if self.generate_data:
            self.feature_generator = WideDeep(feature_dim, name="feature_generator", fan_in_scaled=True, **terms)
            self.feature_generator(tf.zeros((2, 2 * feature_dim)))
            if self.linear:  # start at the mid-point (z_i + z_j) / 2: W = V / fan_in = [I/2; I/2]
                eye = tf.eye(feature_dim) * (0.5 * 2 * feature_dim)
                self.feature_generator.linear.kernel.assign(tf.concat([eye, eye], 0))

    @staticmethod
    def _label_width(task):
        return task.num_classes if task.kind in ("classification", "soft") else 1

    # ------------------------------------------------------------------ pairing
    def permutation(self, size, step, stream=0):
        """The in-batch partner pi of the shared-input setting, drawn statelessly from (seed, step,
        stream) (stream 0: lower batches, 1: upper batches), the same on every replica: a
        permutation of this replica's rows range(size); with pair_group = g, a permutation within
        each group of g consecutive rows, drawn per group of the global batch, so that R replicas of
        B / R rows (g dividing B / R) pair every example as one device with B rows does."""
        key = tf.stack([tf.cast(self.seed, tf.int64), tf.cast(step, tf.int64) * 2 + stream])
        if not self.pair_group:
            return tf.random.experimental.stateless_shuffle(tf.range(size), seed=key)
        g = self.pair_group
        groups = (size + g - 1) // g
        draws = tf.random.stateless_uniform([groups * distribute.num_replicas(), g], seed=key)
        first = distribute.replica_id() * groups
        own = tf.reshape(draws[first:first + groups], [-1])[:size]
        return tf.argsort(own + tf.cast(tf.range(size) // g, tf.float32) * 2.0, stable=True)

    # ------------------------------------------------------------------ the label generator
    def _label_inputs(self, labels, mask_of, perm):
        """v = [enc(labels of i) ; enc(labels of j)] and the label bias b (module docstring)."""
        primary = self.tasks[0]
        own = [_encode(self.tasks[k], labels[self.tasks[k].name], mask_of(k)) for k in self.own_columns]
        if self.different_input or not self.generate_data:
            other = [_encode(self.tasks[k], labels[self.tasks[k].name], mask_of(k)) for k in self.other_columns]
        else:
            other = [tf.gather(y, perm) for y in own]
        y_i = _encode(primary, labels[primary.name], mask_of(0))
        if self.different_input or not self.generate_data:
            bias = y_i
        else:  # classification: e_{y_i} + e_{y_j}; regression: the pair's mid-point
            bias = (y_i + tf.gather(y_i, perm)) * (0.5 if self.regression else 1.0)
        return tf.concat(own + other, -1), self.bias_scale * bias

    def batch_labels(self, batch, step, stream=1):
        """(y~, q, primary mask) of a raw batch, partners from `permutation`: classification y~ =
        softmax(G(v) + b) [B, C] and q = softmax(G(v)); regression y~ = G(v) + b [B] and q = y~. A
        task whose labels the batch lacks (e.g. a primary-only dev batch) counts as masked."""
        masks, size = batch.get("mask", {}), tf.shape(batch["labels"][self.tasks[0].name])[0]
        labels = dict(batch["labels"])
        for k in self.own_columns + self.other_columns:
            labels.setdefault(self.tasks[k].name, tf.zeros([size], tf.int32))

        def mask_of(k):
            name = self.tasks[k].name
            if name not in batch["labels"]:
                return tf.zeros([size], tf.float32)
            return tf.reshape(tf.cast(masks[name], tf.float32), [-1]) if name in masks else tf.ones([size], tf.float32)

        perm = self.permutation(size, step, stream)
        v, bias = self._label_inputs(labels, mask_of, perm)
        logits = self.label_generator(v)
        if self.regression:
            value = tf.reshape(logits + bias, [-1])
            return value, value, mask_of(0)
        return tf.nn.softmax(logits + bias, -1), tf.nn.softmax(logits, -1), mask_of(0)

    # ------------------------------------------------------------------ lower level
    def generated_input(self, key, encode, batch, step, training):
        """z~ = F([z_i ; z_j]), live w.r.t. theta and phi; j: the in-batch partner pi(i) of the step's
        lower permutation, or row i of the auxiliary dataset's input (different-input setting)."""
        del key, training
        z = encode(None)
        if self.different_input:
            z_j = encode(self.aux_input_key)
        else:
            z_j = tf.gather(z, self.permutation(tf.shape(z)[0], step, 0))
        return self.feature_generator(tf.concat([z, z_j], -1))

    def generated_labels(self, batch, training, step):
        """{GENERATED: y~}, partners from the step's lower permutation."""
        del training
        return {GENERATED: self.batch_labels(batch, step, stream=0)[0]}

    def generated_masks(self, batch):
        """The generated task's mask is the primary's: rows without a primary label have no y~."""
        mask = batch.get("mask", {}).get(self.tasks[0].name)
        return {} if mask is None else {GENERATED: mask}

    def example_weights(self, context):
        """1 for every given task, generated_weight for the generated one."""
        weights = [1.0] * self.num_tasks
        weights[self.generated_column] = self.generated_weight
        return tf.ones_like(context.losses) * tf.constant(weights, context.losses.dtype)

    # ------------------------------------------------------------------ upper level
    def instance_regularizer(self, batch, step):
        """This replica's share of L_reg over the batch's primary-labelled rows (all replicas):
        classification sum_c qbar_c log qbar_c, qbar the mean of q = softmax(G(v)); regression
        max(0, log Var(y) - log Var(y~)), the shortfall of the generated labels' spread."""
        _, q, mask = self.batch_labels(batch, step, stream=1)
        if not self.regression:
            return marginal_negentropy(q, mask)
        primary = tf.reshape(tf.cast(batch["labels"][self.tasks[0].name], tf.float32), [-1])
        shortfall = tf.math.log(_variance(primary, mask) + 1e-8) - tf.math.log(_variance(q, mask) + 1e-8)
        return tf.nn.relu(shortfall) / float(distribute.num_replicas())

    def upper_objective(self, model, batch):
        """L_p(theta; b'_p) + alpha * reg_weight * L_reg(phi; b'_p) (alpha: tfaux.upper's scale, so
        that the upper optimizer sees grad L_p's reference scale + reg_weight * grad L_reg, Alg. 1)."""
        objective = model.dev_objective(batch)
        if self.reg_weight:
            step = model.optimizer.iterations if getattr(model, "optimizer", None) is not None else 0
            objective += model.upper_alpha() * self.reg_weight * self.instance_regularizer(batch, step)
        return objective

    def get_config(self):
        return {**super().get_config(), "width": self.width, "depth": self.depth, "label_bias": self.label_bias,
                "reg_weight": self.reg_weight, "use_aux_labels": self.use_aux_labels,
                "generate_data": self.generate_data, "linear": self.linear,
                "nonlinear_terms": self.nonlinear_terms, "generated_weight": self.generated_weight,
                "aux_input_key": self.aux_input_key, "head_fn": serialize_callable(self.head_fn, "head_fn"),
                "seed": self.seed, "activation": _activation_config(self.activation),
                "pair_group": self.pair_group}
