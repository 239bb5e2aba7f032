"""AuxiliaryModel: a shared encoder, one head per task, and a strategy that says
how the tasks' per-example losses become updates (seed 000, Alg. 1).

train_step runs the lower update theta <- theta - eta grad_theta L_t(theta, phi).
For bi-level strategies, every `upper_interval` steps (before that step's lower
update, on the same fresh training batch and on one dev batch) phi takes one
step along the implicit hypergradient of the dev primary loss. Feed `fit` with
`data.train_with_dev(batch_size)`, whose batches are {"train": ..., "dev": ...}.
"""

import keras
import tensorflow as tf

from tfaux import distribute, hypergrad
from tfaux.strategies.base import Context, ThetaVariables
from tfaux.tasks import ordered
from tfaux.upper import UpperSettings

HESSIAN_SCOPES = ("all", "shared", "no_aux_heads")


def _zeros_batch(spec, batch=2):
    return tf.nest.map_structure(lambda s: tf.zeros((batch,) + tuple(s.shape), s.dtype), spec)


def _first_replica(strategy, value):
    """A value that is identical on every replica, read from the first one."""
    return tf.nest.map_structure(lambda v: strategy.experimental_local_results(v)[0], value)


class AuxiliaryModel(keras.Model):
    """Multi-task model trained by a tfaux strategy through `model.fit`.

    encoder:        keras layer/model mapping a batch of inputs x to features [B, d].
    tasks:          list of tfaux.Task (exactly one primary).
    strategy:       a tfaux.strategies.Strategy.
    input_spec:     nest of tf.TensorSpec of ONE example's x (no batch dim); builds the model.
    num_examples:   training-set size (N-JTDS keeps one weight per example).
    upper_interval: M, lower steps per upper step.
    solver:         hypergrad.Neumann(terms=K, alpha) or hypergrad.ConjugateGradient(...);
                    Neumann's alpha=None means the lower optimizer's learning rate.
    hessian_scope:  "all" (every theta), "shared" (encoder only) or "no_aux_heads".
    upper:          tfaux.upper.UpperSettings: optimizer, learning rate, clip norm and weight
                    decay of phi, in the reference code's scale (hypergradient / alpha);
                    default: the strategy's reference settings (`strategy.upper_defaults`).
    """

    def __init__(self, encoder, tasks, strategy, input_spec, num_examples=None, upper_interval=20,
                 solver=None, hessian_scope="all", upper=None, **kwargs):
        super().__init__(**kwargs)
        if hessian_scope not in HESSIAN_SCOPES:
            raise ValueError(f"hessian_scope must be one of {HESSIAN_SCOPES}, got '{hessian_scope}'.")
        if int(upper_interval) < 1:
            raise ValueError(f"upper_interval must be >= 1, got {upper_interval}.")
        self.encoder = encoder
        self.tasks = ordered(tasks)
        self.primary = self.tasks[0]
        self.heads = [t.make_head() for t in self.tasks]
        self.scheduler = strategy
        self.input_spec_nest = input_spec
        self.upper_interval = int(upper_interval)
        self.solver = solver or hypergrad.Neumann(terms=3)
        self.hessian_scope = hessian_scope
        self.upper = upper or strategy.upper_defaults
        if not isinstance(self.upper, UpperSettings):
            raise ValueError(f"upper must be a tfaux.upper.UpperSettings, got {type(self.upper).__name__}.")
        self.upper_optimizer = None
        features = self.encoder(_zeros_batch(input_spec))
        for head in self.heads:
            head(features)
        strategy.setup(self.tasks, int(features.shape[-1]), num_examples)
        self.active = strategy.active_tasks()
        self.theta = ThetaVariables(shared=list(self.encoder.trainable_variables),
                                    heads=[list(h.trainable_variables) for h in self.heads])
        self._build_trackers()
        self.built = True

    # ------------------------------------------------------------------ set-up
    def _build_trackers(self):
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.task_loss_trackers = [keras.metrics.Mean(name=f"{t.name}_loss") for t in self.tasks]
        self.weight_trackers = ([keras.metrics.Mean(name=f"{t.name}_weight") for t in self.tasks]
                                if self.scheduler.logs_weights else [])
        if self.primary.kind == "regression":
            self.primary_metric = keras.metrics.RootMeanSquaredError(name="primary_rmse")
        else:
            self.primary_metric = keras.metrics.Mean(name="primary_accuracy")
        self.dev_loss = self.add_weight(shape=(), initializer="zeros", trainable=False, name="dev_loss")
        self.hypergrad_norm = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                              name="hypergrad_norm")
        self.upper_skipped = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                             name="upper_skipped")

    @property
    def metrics(self):
        return [self.loss_tracker, self.primary_metric] + self.task_loss_trackers + self.weight_trackers

    @property
    def selection_metric(self):
        """(log key, mode) of the validation metric that selects theta (seed 000, Eq. 1)."""
        if self.primary.kind == "regression":
            return "val_primary_rmse", "min"
        return "val_primary_accuracy", "max"

    def compile(self, optimizer="adam", upper_optimizer=None, **kwargs):
        """upper_optimizer: optimizer of phi, fed the reference-scale hypergradient
        (tfaux.upper); default `self.upper.make_optimizer()`, the method's reference one."""
        super().compile(optimizer=optimizer, **kwargs)
        self.optimizer.build(self.theta.all)
        if self.scheduler.bilevel:
            self.upper_optimizer = upper_optimizer or self.upper.make_optimizer()
            self.upper_optimizer.build(self.scheduler.trainable_weights)

    # ------------------------------------------------------------------ forward
    def call(self, inputs, training=False):
        """Every head on the encoder features of `inputs`: {task name: raw output}."""
        features = self.encoder(inputs, training=training)
        return {t.name: head(features, training=training) for t, head in zip(self.tasks, self.heads)}

    def primary_prediction(self, inputs):
        """The primary head's raw output and the task's prediction (probabilities / value)."""
        outputs = self.heads[0](self.encoder(inputs, training=False), training=False)
        return {"scores": outputs, "prediction": self.primary.prediction(outputs)}

    def task_losses(self, batch, training, all_tasks=False):
        """Per-example loss matrix [B, T] (zero where masked), masks, features [B, T, d], outputs."""
        if "labels" not in batch or "x" not in batch:
            raise ValueError("Batches must be dicts with 'x' and 'labels' (the tfaux data contract).")
        run = [True] * len(self.tasks) if all_tasks else self.active
        encoded = {}
        losses, masks, features, outputs = [], [], [], []
        for task, head, active in zip(self.tasks, self.heads, run):
            if task.name not in batch["labels"]:
                raise ValueError(f"Batch has no labels for task '{task.name}'.")
            y = batch["labels"][task.name]
            mask = batch.get("mask", {}).get(task.name)
            mask = tf.ones_like(y, tf.float32) if mask is None else tf.cast(mask, tf.float32)
            mask = tf.reshape(mask, [-1])
            if not active:
                zeros = tf.zeros_like(mask)
                losses.append(zeros), masks.append(zeros), outputs.append(None)
                features.append(None)
                continue
            key = task.input_key
            if key not in encoded:
                x = batch["x"] if key is None else batch["task_x"][key]
                encoded[key] = self.encoder(x, training=training)
            out = head(encoded[key], training=training)
            losses.append(task.per_example_loss(y, out) * mask)
            masks.append(mask)
            features.append(encoded[key])
            outputs.append(out)
        some = next(f for f in features if f is not None)
        features = [tf.zeros_like(some) if f is None else f for f in features]
        return tf.stack(losses, 1), tf.stack(masks, 1), tf.stack(features, 1), outputs

    def _context(self, batch, losses, masks, features):
        ids = batch.get("id", tf.zeros_like(masks[:, 0], tf.int64))
        return Context(losses=tf.stop_gradient(losses), masks=masks,
                       features=tf.stop_gradient(features), ids=tf.reshape(ids, [-1]))

    def _regularization(self):
        terms = self.encoder.losses + [l for h in self.heads for l in h.losses]
        if not terms:
            return 0.0
        return tf.add_n(terms) / float(distribute.num_replicas())

    def lower_objective(self, batch, training=True):
        """L_t(theta, phi) for one batch, as this replica's contribution."""
        losses, masks, features, _ = self.task_losses(batch, training)
        context = self._context(batch, losses, masks, features)
        return self.scheduler.lower_loss(losses, context) + self._regularization()

    def dev_objective(self, batch):
        """L_dev: mean primary loss of the dev batch, as this replica's contribution."""
        features = self.encoder(batch["x"], training=True)
        out = self.heads[0](features, training=True)
        y = batch["labels"][self.primary.name]
        mask = tf.reshape(tf.cast(batch.get("mask", {}).get(self.primary.name, tf.ones_like(y)), tf.float32), [-1])
        count = distribute.replica_sum(tf.reduce_sum(mask))
        return tf.reduce_sum(self.primary.per_example_loss(y, out) * mask) / tf.maximum(count, 1.0)

    # ------------------------------------------------------------------ metrics
    def _update_metrics(self, batch, losses, masks, outputs, objective):
        self.loss_tracker.update_state(objective)
        for k, tracker in enumerate(self.task_loss_trackers):
            count = tf.reduce_sum(masks[:, k])
            tracker.update_state(tf.reduce_sum(losses[:, k]) / tf.maximum(count, 1.0), sample_weight=count)
        y = tf.reshape(batch["labels"][self.primary.name], [-1])
        out, mask = outputs[0], masks[:, 0]
        if self.primary.kind == "regression":
            self.primary_metric.update_state(y, tf.reshape(out, [-1]), sample_weight=mask)
        else:
            if self.primary.kind == "classification":
                predicted = tf.argmax(out, -1, output_type=tf.int32)
                hit = tf.cast(tf.equal(predicted, tf.cast(y, tf.int32)), tf.float32)
            else:
                hit = tf.cast(tf.equal(tf.cast(tf.reshape(out, [-1]) > 0, tf.float32), tf.cast(y, tf.float32)),
                              tf.float32)
            self.primary_metric.update_state(hit, sample_weight=mask)

    def _logs(self):
        logs = {m.name: m.result() for m in self.metrics}
        if self.scheduler.bilevel:
            logs.update(dev_loss=tf.identity(self.dev_loss), hypergrad_norm=tf.identity(self.hypergrad_norm),
                        upper_skipped=tf.identity(self.upper_skipped))
        return logs

    # ------------------------------------------------------------------ steps
    def train_step(self, data):
        batch = data["train"] if "train" in data else data
        with tf.GradientTape(persistent=self.scheduler.persistent_tape) as tape:
            losses, masks, features, outputs = self.task_losses(batch, training=True)
            context = self._context(batch, losses, masks, features)
            objective = self.scheduler.lower_loss(losses, context) + self._regularization()
        grads = self.scheduler.lower_gradients(tape, objective, losses, context, self.theta)
        del tape
        used = [(g, v) for g, v in zip(grads, self.theta.all) if g is not None]  # STL: aux heads idle
        self.optimizer.apply([g for g, _ in used], [v for _, v in used])
        self._update_metrics(batch, losses, masks, outputs, objective * float(distribute.num_replicas()))
        if self.weight_trackers:
            weights = self.scheduler.example_weights(context)
            for k, tracker in enumerate(self.weight_trackers):
                count = tf.reduce_sum(masks[:, k])
                tracker.update_state(tf.reduce_sum(weights[:, k] * masks[:, k]) / tf.maximum(count, 1.0),
                                     sample_weight=count)
        return self._logs()

    def test_step(self, data):
        batch = data["train"] if "train" in data else data
        losses, masks, _, outputs = self.task_losses(batch, training=False, all_tasks=True)
        count = tf.maximum(tf.reduce_sum(masks[:, 0]), 1.0)
        self._update_metrics(batch, losses, masks, outputs, tf.reduce_sum(losses[:, 0]) / count)
        return {m.name: m.result() for m in self.metrics if m not in self.weight_trackers}

    # ------------------------------------------------------------------ upper level
    def hessian_variables(self):
        if self.hessian_scope == "shared":
            return list(self.theta.shared)
        if self.hessian_scope == "no_aux_heads":
            return list(self.theta.shared) + list(self.theta.heads[0])
        return self.theta.all

    def upper_alpha(self):
        """alpha of the Neumann series and of the reference scale (tfaux.upper): the
        solver's own alpha when it has one, else the lower learning rate."""
        alpha = getattr(self.solver, "alpha", None)
        if alpha is not None:
            return tf.constant(alpha, tf.float32)
        return tf.cast(self.optimizer.learning_rate, tf.float32)

    def hypergradient(self, batch, dev):
        """Replica step: the all-replica (true) implicit hypergradient dL_dev/dphi and this
        replica's dev loss."""
        phi = self.scheduler.trainable_weights
        hyper, dev_loss = hypergrad.implicit_hypergradient(
            lambda: self.lower_objective(batch), lambda: self.dev_objective(dev),
            self.hessian_variables(), phi, self.solver, alpha=self.upper_alpha(),
            reduce=distribute.replica_sum)
        return distribute.replica_sum(hyper), dev_loss

    def upper_gradient(self, hyper):
        """What the upper optimizer is fed (tfaux.upper): g = hyper / alpha, clipped to
        `upper.clipnorm`, plus `upper.weight_decay` * phi; and ||g|| before clipping."""
        g = [h / self.upper_alpha() for h in hyper]
        norm = tf.linalg.global_norm(g)
        if self.upper.clipnorm:
            g, _ = tf.clip_by_global_norm(g, self.upper.clipnorm, use_norm=norm)
        if self.upper.weight_decay:
            g = [x + self.upper.weight_decay * tf.convert_to_tensor(v)
                 for x, v in zip(g, self.scheduler.trainable_weights)]
        return g, norm

    def _apply_upper_gradient(self, grads):
        self.upper_optimizer.apply(distribute.for_optimizer(grads), self.scheduler.trainable_weights)

    def upper_step(self, batch, dev):
        """Cross-replica: one phi update; a non-finite hypergradient skips it with a warning.
        Logs `hypergrad_norm`, the norm of g (reference scale) before clipping."""
        strategy = self.distribute_strategy
        hyper, dev_loss = strategy.run(self.hypergradient, args=(batch, dev))
        grads, norm = strategy.run(self.upper_gradient, args=(hyper,))
        norm = _first_replica(strategy, norm)
        finite = tf.math.is_finite(norm)

        def apply():
            strategy.run(self._apply_upper_gradient, args=(grads,))
            self.scheduler.after_upper_update()
            return tf.constant(True)

        def skip():
            tf.print("WARNING: tfaux skipped an upper step: the hypergradient is not finite (norm", norm, ").")
            self.upper_skipped.assign_add(1.0)
            return tf.constant(False)

        tf.cond(finite, apply, skip)
        self.hypergrad_norm.assign(norm)
        self.dev_loss.assign(strategy.reduce(tf.distribute.ReduceOp.SUM, dev_loss, axis=None))
        return tf.constant(True)

    def make_train_function(self, force=False):
        """Keras' train function, plus the every-M-steps upper step for bi-level
        strategies. The upper step is gated in cross-replica context, since a
        replica function may not synchronise inside control flow."""
        if not self.scheduler.bilevel:
            return super().make_train_function(force)
        if self.train_function is not None and not force:
            return self.train_function
        if self.steps_per_execution != 1:
            raise ValueError("Bi-level strategies need compile(steps_per_execution=1).")
        strategy = self.distribute_strategy

        def one_step(data):
            if not (isinstance(data, dict) and "train" in data and "dev" in data):
                raise ValueError(f"{type(self.scheduler).__name__} is bi-level: feed fit with "
                                 "data.train_with_dev(batch_size), batches of {'train': ..., 'dev': ...}.")
            step = self.optimizer.iterations
            due = tf.logical_and(step > 0, tf.equal(step % self.upper_interval, 0))
            tf.cond(due, lambda: self.upper_step(data["train"], data["dev"]), lambda: tf.constant(False))
            return _first_replica(strategy, strategy.run(self.train_step, args=(data,)))

        if not self.run_eagerly:
            one_step = tf.function(one_step, reduce_retracing=True)

        def function(iterator):
            return one_step(next(iterator))

        self.train_function = function
        return function
