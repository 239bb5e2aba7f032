"""The one protocol every method implements (protocol v2).

A strategy turns the per-example, per-task loss matrix l[i, k] (columns 0..n-1 are the
target (primary) tasks, column 0 the exported one) into a parameter update for theta,
and, if it has variables of its own, says how they are learned:

- loss-weighting methods override `lower_loss` (or just `example_weights`);
- gradient-space methods override `lower_gradients` (helpers: tfaux.task_gradients);
- bi-level methods set `bilevel = True`; AuxiliaryModel then updates their upper
  variables every `upper_interval` steps by the implicit hypergradient of
  `upper_objective` (default: the dev loss of the targets, tfaux.hypergrad) plus its
  direct dL_upper/dphi term, on the dev stream or, with `upper_data = "train"`, on a
  reordered copy of the training set.

A strategy's variables come in three kinds:
- upper (phi): `add_weight` (trainable), moved by the hypergradient only;
- lower: `add_lower_weight`, trained with theta by the lower optimizer, from the gradients
  `lower_gradients` returns for them (default: of the lower objective);
- state: `add_state` (non-trainable, e.g. loss histories), saved with the model and by
  tfaux.backup.EpochBackup, so resume stays exact. State is assigned from values every replica
  agrees on (all-replica sums), and only the first replica's write is kept.

A single-level method may set `main_data = "labelled"`: it is then fed
`data.train_with_reordered(batch)` (a second stream of labelled target examples, the training
set reshuffled), and its Context carries `main_objective`, the live target losses on that
batch, summed (ARML's main-task gradient from T_m itself, not from the few labelled rows of a
semi-supervised batch).

Hooks, each run exactly once: `after_lower_step(context)` after every lower update,
`after_upper_step()` after every upper update, `on_epoch_end(epoch)` at the end of every
epoch (before the callbacks that save the run). `extra_tasks` / `generated_labels` add
tasks whose labels the strategy produces (e.g. a learned auxiliary-label head); such a task
may read features the strategy produces too (`generated_input_keys` / `generated_input`, e.g.
DTG-AuxL's generated samples): its head is then one of the model's, in theta like any other.

Strategies are Keras layers so that their variables are saved with the model's weights, and
registered Keras serializables whose `get_config` is their constructor arguments, so that a model's
config can rebuild them (`from_config`).
"""

import dataclasses
import inspect

import keras
import tensorflow as tf

from tfaux import distribute
from tfaux.upper import UpperSettings

UPPER_DATA = ("dev", "train")


@dataclasses.dataclass
class Context:
    """What a strategy may look at for one batch.

    losses:          [B, T] per-example task losses, detached (constant w.r.t. theta), zero where masked.
    masks:           [B, T] 1 where the example has a label for the task.
    features:        [B, T, d] encoder feature of example i for task k, detached.
    ids:             [B] example ids (index in the training split).
    live_losses:     [B, T] the same losses, differentiable w.r.t. theta (on the lower tape).
    live_task_losses: the T columns of live_losses as separate [B] tensors (masked), for
                     per-task gradients that back-propagate through their own head only.
    representations: {input key: [B, d] live shared representation Z}; key None is batch["x"].
    task_keys:       input key of every task (task k reads representations[task_keys[k]]).
    labels:          {task name: labels of the batch} (generated ones included).
    step:            lower steps taken so far (int64), a seed for step-dependent draws.
    learning_rate:   the lower optimizer's current learning rate.
    regularization:  this replica's share of the model's regularization losses (live).
    num_targets:     how many leading columns are target tasks.
    scratch:         per-replica, per-step values a strategy passes from `lower_gradients` to
                     `after_lower_step` (both receive this same Context).
    main_objective:  with `main_data = "labelled"` and a two-stream batch: this replica's share of the
                     sum of the targets' mean losses on the labelled batch, live w.r.t. theta; else None.
    variables:       the task model's ThetaVariables; `after_lower_step` may move theta after the
                     optimizer's step (e.g. ARML's Langevin noise), with the same value on every replica.
    loss_maps:       [B, H, W, T] per-pixel losses (zero at invalid pixels and where masked), live
                     w.r.t. theta, when every active task is dense with one H, W (else None); the sum
                     of a column over an example's valid pixels / their count is live_losses[:, k]
                     (the loss images of seed 002's ConvNet combiner).
    """

    losses: tf.Tensor
    masks: tf.Tensor
    features: tf.Tensor
    ids: tf.Tensor
    live_losses: tf.Tensor = None
    live_task_losses: list = None
    representations: dict = None
    task_keys: list = None
    labels: dict = None
    step: tf.Tensor = None
    learning_rate: tf.Tensor = None
    regularization: tf.Tensor = 0.0
    num_targets: int = 1
    scratch: dict = dataclasses.field(default_factory=dict)
    variables: object = None
    main_objective: tf.Tensor = None
    loss_maps: tf.Tensor = None

    @property
    def global_batch(self):
        return distribute.global_batch_size(tf.shape(self.losses)[0])


def serialize_callable(value, argument):
    """A constructor argument that may be a callable, as a config value: None and strings as they
    are, a registered Keras function or an object of a registered Keras class as its serialized
    dict (`keras.saving.serialize_keras_object`); any other callable raises a ValueError."""
    if value is None or isinstance(value, str):
        return value
    target = value if inspect.isfunction(value) else type(value)
    if keras.saving.get_registered_object(keras.saving.get_registered_name(target)) is not target:
        raise ValueError(f"Cannot serialize argument '{argument}' ({value!r}): pass a string name or a "
                         "callable registered with keras.saving.register_keras_serializable.")
    return keras.saving.serialize_keras_object(value)


def deserialize_callable(value):
    """The inverse of `serialize_callable`."""
    return keras.saving.deserialize_keras_object(value) if isinstance(value, dict) else value


@keras.saving.register_keras_serializable(package="tfaux")
class Strategy(keras.layers.Layer):
    """Base: every labelled (example, task) pair weighted 1 (subclasses change this).

    `get_config` returns the constructor arguments (subclasses add theirs to this Layer config);
    arguments named in `callable_args` may be callables, serialized by `serialize_callable`."""

    bilevel = False
    persistent_tape = False
    logs_weights = False  # whether example_weights is the schedule (logged per task while training)
    upper_defaults = UpperSettings()  # bi-level methods: the reference code's update of phi (tfaux.upper)
    upper_data = "dev"  # bi-level methods: "dev" split or "train" (a reordered copy of the training set)
    main_data = None  # single-level methods: "labelled" adds a stream of labelled target examples
    solver = None  # bi-level methods whose definition fixes the inverse-Hessian approximation (e.g. MAXL's
    #                one-step look-ahead, hypergrad.Neumann(terms=0)); set, it replaces the model's solver

    callable_args = ()

    def get_config(self):
        return super().get_config()

    @classmethod
    def from_config(cls, config):
        config = {k: deserialize_callable(v) if k in cls.callable_args else v for k, v in config.items()}
        return super().from_config(config)

    needs_ids = False  # keeps one parameter per training example: batches must carry example ids

    def set_loss_weights(self, weights):
        """compile(loss_weights={task: w}): fixed task weights, for methods that take them."""
        raise ValueError(f"{type(self).__name__} sets its own task weights; compile(loss_weights=...) applies to "
                         "method 'equal' (fixed weights) only.")

    def setup_inputs(self, input_spec):
        """Called once, before `setup`, with the nest of tf.TensorSpec of one example's x (no batch
        dim), for a strategy whose own network reads the inputs (e.g. a label generator g(x; phi))."""
        del input_spec

    def setup(self, tasks, feature_dim, num_examples):
        """Create the strategy's variables. tasks: targets first; num_examples: training-set size."""
        self.tasks = list(tasks)
        self.num_tasks = len(self.tasks)
        self.num_targets = sum(1 for t in self.tasks if t.is_primary)
        self.built = True

    @property
    def second_stream(self):
        """The stream fed next to the training batches as batch["dev"]: "dev" (the dev split),
        "train" (a reordered copy of the training set, labelled target examples) or None."""
        if self.bilevel:
            return self.upper_data
        return "train" if self.main_data == "labelled" else None

    # ------------------------------------------------------------------ variables
    def add_lower_weight(self, **kwargs):
        """A variable trained with theta by the lower optimizer (e.g. Uncertainty's log sigma^2)."""
        weight = self.add_weight(trainable=True, **kwargs)
        self._lower_ids = getattr(self, "_lower_ids", set()) | {id(weight)}
        return weight

    def add_state(self, shape=(), name=None, initializer="zeros", dtype="float32"):
        """Non-trainable state (histories, running averages), saved with the model."""
        return self.add_weight(shape=shape, name=name, initializer=initializer, dtype=dtype, trainable=False,
                               aggregation="only_first_replica")

    @property
    def lower_variables(self):
        ids = getattr(self, "_lower_ids", set())
        return [w for w in self.trainable_weights if id(w) in ids]

    @property
    def upper_variables(self):
        """phi: the variables the hypergradient moves."""
        ids = getattr(self, "_lower_ids", set())
        return [w for w in self.trainable_weights if id(w) not in ids]

    # ------------------------------------------------------------------ tasks
    def extra_tasks(self, tasks):
        """Auxiliary tasks this strategy adds to `tasks` (their labels: `generated_labels`)."""
        del tasks
        return []

    def generated_labels(self, batch, training, step):
        """{extra task name: labels for the batch}, live w.r.t. the strategy's variables; step: lower
        steps taken so far (int64), the key of step-dependent draws."""
        del batch, training, step
        return {}

    def generated_masks(self, batch):
        """{extra task name: [B] mask} of generated tasks that not every row has (default: all rows)."""
        del batch
        return {}

    # input keys whose features `generated_input` makes; a task with such an input_key reads them
    generated_input_keys = ()

    def generated_input(self, key, encode, batch, step, training):
        """[B, d] features of the generated input `key`, live w.r.t. theta and phi. encode(k): the
        batch's encoder features of input k (None: batch["x"], else batch["task_x"][k]),
        computed once per batch; step as in `generated_labels`."""
        del encode, batch, step, training
        raise ValueError(f"{type(self).__name__} lists '{key}' in generated_input_keys but does not override "
                         "generated_input.")

    def active_tasks(self):
        """Boolean per task: whether its head must run at all (STL skips auxiliaries)."""
        return [True] * self.num_tasks

    # ------------------------------------------------------------------ lower level
    def example_weights(self, context):
        """w[i, k] >= 0 of each (example, task) pair; [B, T]."""
        return tf.ones_like(context.losses)

    def lower_loss(self, losses, context):
        """L_t = (1/B) sum_i sum_k m_ik w_ik l_ik  (seed 000, Eq. 3/4 form). With the labelled
        stream (`main_data = "labelled"`), the targets' term is that batch's mean target loss
        (context.main_objective, weight 1, as S4L trains) and the sum runs over the auxiliaries."""
        weighted = self.example_weights(context) * losses * context.masks
        if context.main_objective is None:
            return tf.reduce_sum(weighted) / context.global_batch
        return context.main_objective + tf.reduce_sum(weighted[:, self.num_targets:]) / context.global_batch

    def lower_gradients(self, tape, loss, losses, context, variables):
        """Gradients for `variables.trained`: theta (shared first, then heads), then the
        strategy's lower variables. `loss` already includes the regularization."""
        del losses, context
        return tape.gradient(loss, variables.trained)

    def after_lower_step(self, context):
        """Runs once after every lower update (replica context; write state from all-replica values)."""
        del context

    # ------------------------------------------------------------------ upper level
    def upper_objective(self, model, batch):
        """L_upper on one upper batch, as this replica's share (default: mean target dev loss).
        A term that depends on phi directly adds its gradient to the hypergradient."""
        return model.dev_objective(batch)

    def after_upper_step(self):
        """Runs once after every upper update (cross-replica), e.g. a projection of phi."""
        return None

    def on_epoch_end(self, epoch):
        """Runs once at the end of every epoch (eager), before the run is saved."""
        del epoch


@dataclasses.dataclass
class ThetaVariables:
    """The task model's variables, grouped the way gradient-space methods need, plus the
    strategy's lower variables (trained with them)."""

    shared: list
    heads: list  # one list of variables per task, in task order
    strategy: list = dataclasses.field(default_factory=list)

    @property
    def all(self):
        """theta: shared, then every head."""
        return self.shared + [v for head in self.heads for v in head]

    @property
    def trained(self):
        """What the lower optimizer updates: theta, then the strategy's lower variables."""
        return self.all + list(self.strategy)
