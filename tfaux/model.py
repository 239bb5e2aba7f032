"""AuxiliaryModel: a shared encoder, one head per task, and a strategy that says
how the tasks' per-example losses become updates (seed 000, Alg. 1).

train_step runs the lower update theta <- theta - eta grad_theta L_t(theta, phi).
For bi-level strategies, every `upper_interval` steps (before that step's lower
update, on the same fresh training batch and on one dev batch) phi takes one
step along the implicit hypergradient of the strategy's upper objective (default: the
mean dev loss of the target tasks). Feed `fit` with `data.train_with_dev(batch_size)` (or
`data.train_with_reordered` when `strategy.upper_data == "train"`), whose batches are
{"train": ..., "dev": ...}.

Several target (primary) tasks are allowed: each gets its own Keras metric, model
selection uses their mean (`primary_accuracy` / `primary_rmse`), and the first target is
the one `tfaux.export_primary` serves.
"""

import dataclasses

import keras
import tensorflow as tf

from tfaux import distribute, hypergrad
from tfaux.strategies.base import UPPER_DATA, Context, Strategy, ThetaVariables
from tfaux.tasks import ordered
from tfaux.upper import UpperSettings

HESSIAN_SCOPES = ("all", "shared", "no_aux_heads")


def _zeros_batch(spec, batch=2):
    return tf.nest.map_structure(lambda s: tf.zeros((batch,) + tuple(s.shape), s.dtype), spec)


def _first_replica(strategy, value):
    """A value that is identical on every replica, read from the first one."""
    return tf.nest.map_structure(lambda v: strategy.experimental_local_results(v)[0], value)


def _multi_worker(strategy):
    """Whether `strategy` is a MultiWorkerMirroredStrategy over several workers."""
    return (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            and strategy.extended._in_multi_worker_mode())


@dataclasses.dataclass
class Forward:
    """One forward pass over a batch: [B, T] losses (zero where masked) and masks, [B, T, d]
    features of every task, raw head outputs (None for skipped heads), {input key: shared
    representation}, the labels used (the batch's plus the strategy's generated ones), and the
    [B] loss vector of every task before stacking (a per-task gradient taken from a column of
    `losses` would back-propagate zeros through every other head)."""

    losses: tf.Tensor
    masks: tf.Tensor
    features: tf.Tensor
    outputs: list
    representations: dict
    labels: dict
    task_losses: list = None
    loss_maps: tf.Tensor = None  # [B, H, W, T] per-pixel losses of dense tasks (Context.loss_maps)


# ---- dense (per-pixel) tasks: per-pixel loss maps beside the [B, T] loss matrix
def _task_loss(task, y, out, mask):
    """The task's [B] masked per-example losses and, for a dense task, its [B, H, W] masked
    per-pixel losses (None otherwise)."""
    if not task.is_dense:
        return task.per_example_loss(y, out) * mask, None
    pixels, loss = task.dense_losses(y, out)
    return loss * mask, pixels * tf.reshape(mask, [-1, 1, 1])


def _loss_maps(maps, run):
    """[B, H, W, T] stack of the active tasks' per-pixel losses (zeros for inactive tasks) when
    every active task has one of the same static H, W; else None."""
    live = [m for m, active in zip(maps, run) if active]
    if not live or any(m is None for m in live):
        return None
    sizes = {tuple(m.shape[1:3]) for m in live}
    if len(sizes) != 1 or None in next(iter(sizes)):
        return None
    return tf.stack([tf.zeros_like(live[0]) if m is None else m for m in maps], -1)


def _mask(batch, name, labels):
    """[B] float mask of task `name` in the batch (all ones when the batch has none)."""
    mask = batch.get("mask", {}).get(name)
    mask = tf.ones(tf.shape(labels)[:1], tf.float32) if mask is None else tf.cast(mask, tf.float32)
    return tf.reshape(mask, [-1])


class StrategyEpochHook(keras.callbacks.Callback):
    """Calls `strategy.on_epoch_end(epoch)`; AuxiliaryModel.fit puts it first, so it runs
    before the callbacks that save the run (tfaux.backup.EpochBackup, checkpoints)."""

    def __init__(self, strategy):
        super().__init__()
        self.strategy = strategy

    def on_epoch_end(self, epoch, logs=None):
        self.strategy.on_epoch_end(epoch)


class AuxiliaryModel(keras.Model):
    """Multi-task model trained by a tfaux strategy through `model.fit`.

    encoder:        keras layer/model mapping a batch of inputs x to features [B, d].
    tasks:          list of tfaux.Task (one or more targets, role "primary"; the first is exported).
    strategy:       a tfaux.strategies.Strategy.
    input_spec:     nest of tf.TensorSpec of ONE example's x (no batch dim); builds the model.
    num_examples:   training-set size (N-JTDS keeps one weight per example).
    upper_interval: M, lower steps per upper step. On the exact path (hvp_chunks = 1) a due step
                    is one pass (`fused_step`): its lower step and the hypergradient share L_t's
                    forward and backward, and its lower update uses phi before that upper update.
    solver:         hypergrad.Neumann(terms=K, alpha) or hypergrad.ConjugateGradient(...);
                    Neumann's alpha=None means the lower optimizer's learning rate. A strategy
                    that fixes its own (`strategy.solver`, e.g. MAXL's Neumann(terms=0)) overrides it.
    hessian_scope:  "all" (every theta), "shared" (encoder only) or "no_aux_heads".
    hvp_chunks:     N > 1 averages each Hessian-vector product over N interleaved sub-batches,
                    one at a time (tfaux.hypergrad): the upper step keeps about 1/N of the
                    tensors alive, for one more gradient per product; BatchNorm and batch
                    statistics then see sub-batches. 1 (default): the whole batch, exactly.
    upper:          tfaux.upper.UpperSettings: optimizer, learning rate, clip norm and weight
                    decay of phi, in the reference code's scale (hypergradient / alpha);
                    default: the strategy's reference settings (`strategy.upper_defaults`).
    """

    def __init__(self, encoder, tasks, strategy, input_spec, num_examples=None, upper_interval=20,
                 solver=None, hessian_scope="all", upper=None, hvp_chunks=1, **kwargs):
        super().__init__(**kwargs)
        if hessian_scope not in HESSIAN_SCOPES:
            raise ValueError(f"hessian_scope must be one of {HESSIAN_SCOPES}, got '{hessian_scope}'.")
        if int(hvp_chunks) < 1:
            raise ValueError(f"hvp_chunks must be >= 1, got {hvp_chunks}.")
        if int(upper_interval) < 1:
            raise ValueError(f"upper_interval must be >= 1, got {upper_interval}.")
        if strategy.upper_data not in UPPER_DATA:
            raise ValueError(f"{type(strategy).__name__}.upper_data must be one of {UPPER_DATA}.")
        self.encoder = encoder
        tasks = ordered(tasks)
        extra = list(strategy.extra_tasks(tasks))
        if any(t.is_primary for t in extra):
            raise ValueError(f"{type(strategy).__name__} may only add auxiliary tasks.")
        self.tasks = ordered(tasks + extra)
        self.num_targets = sum(1 for t in self.tasks if t.is_primary)
        self.targets = self.tasks[:self.num_targets]
        self.primary = self.tasks[0]
        self.generated = {t.name for t in extra}
        if strategy.generated_input_keys and type(strategy).generated_input is Strategy.generated_input:
            raise ValueError(f"{type(strategy).__name__} lists generated_input_keys "
                             f"{list(strategy.generated_input_keys)} but does not override generated_input.")
        self.heads = [t.make_head() for t in self.tasks]
        self.scheduler = strategy
        self.input_spec_nest = input_spec
        self.upper_interval = int(upper_interval)
        self.solver = strategy.solver or solver or hypergrad.Neumann(terms=3)  # a method's own solver wins
        self.hessian_scope = hessian_scope
        self.hvp_chunks = int(hvp_chunks)
        if self.hvp_chunks > 1 and not isinstance(self.solver, hypergrad.IterativeSolver):
            raise ValueError(f"hvp_chunks={self.hvp_chunks} needs an IterativeSolver (Neumann or ConjugateGradient), "
                             f"got {type(self.solver).__name__}.")
        self.upper = upper or strategy.upper_defaults
        if not isinstance(self.upper, UpperSettings):
            raise ValueError(f"upper must be a tfaux.upper.UpperSettings, got {type(self.upper).__name__}.")
        self.upper_optimizer = None
        features = self.encoder(_zeros_batch(input_spec))
        for head in self.heads:
            head(features)
        strategy.setup_inputs(input_spec)
        strategy.setup(self.tasks, int(features.shape[-1]), num_examples)
        self.active = strategy.active_tasks()
        self.theta = ThetaVariables(shared=list(self.encoder.trainable_variables),
                                    heads=[list(h.trainable_variables) for h in self.heads],
                                    strategy=list(strategy.lower_variables))
        self.frozen_state = list(self.encoder.non_trainable_variables) + [
            v for h in self.heads for v in h.non_trainable_variables]
        self._build_trackers()
        self.built = True

    # ------------------------------------------------------------------ set-up
    def _build_trackers(self):
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.task_loss_trackers = [keras.metrics.Mean(name=f"{t.name}_loss") for t in self.tasks]
        self.weight_trackers = ([keras.metrics.Mean(name=f"{t.name}_weight") for t in self.tasks]
                                if self.scheduler.logs_weights else [])
        self.selection_name = f"primary_{self.primary.metric_name}"
        if self.num_targets == 1:
            self.target_metrics = [self.primary.make_metric(self.selection_name)]
        else:
            self.target_metrics = [t.make_metric() for t in self.targets]
        self.extra_target_metrics = [t.make_extra_metrics("primary" if self.num_targets == 1 else None)
                                     for t in self.targets]  # e.g. pixel accuracy of a segmentation target
        self.dev_loss = self.add_weight(shape=(), initializer="zeros", trainable=False, name="dev_loss")
        self.hypergrad_norm = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                              name="hypergrad_norm")
        self.upper_skipped = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                             name="upper_skipped")

    @property
    def metrics(self):
        return ([self.loss_tracker] + self.target_metrics + [m for ms in self.extra_target_metrics for m in ms]
                + self.task_loss_trackers + self.weight_trackers)

    @property
    def selection_metric(self):
        """(log key, mode) of the validation metric that selects theta (seed 000, Eq. 1): the
        target's metric, or with several targets the mean of theirs."""
        return f"val_{self.selection_name}", ("min" if self.primary.kind == "regression" else "max")

    def compile(self, optimizer="adam", upper_optimizer=None, jit_compile=False, **kwargs):
        """upper_optimizer: optimizer of phi, fed the reference-scale hypergradient
        (tfaux.upper); default `self.upper.make_optimizer()`, the method's reference one.
        jit_compile: XLA for every method alike (False by default, so that no method runs
        under XLA where another does not; Keras' "auto" would pick it for some only)."""
        if jit_compile == "auto":
            raise ValueError("AuxiliaryModel.compile needs jit_compile=True or False ('auto' would compile "
                             "some methods and not others).")
        super().compile(optimizer=optimizer, jit_compile=jit_compile, **kwargs)
        self.optimizer.build(self.theta.trained)
        if self.scheduler.bilevel:
            self.upper_optimizer = upper_optimizer or self.upper.make_optimizer()
            self.upper_optimizer.build(self.scheduler.upper_variables)

    def fit(self, *args, callbacks=None, **kwargs):
        """keras.Model.fit, with the strategy's once-per-epoch hook run before `callbacks`."""
        return super().fit(*args, callbacks=[StrategyEpochHook(self.scheduler), *(callbacks or [])], **kwargs)

    def _get_metrics_result_or_logs(self, logs):
        """The logs of an epoch (fit) or of evaluate, their metric values read from the metrics
        in cross-replica context: over every replica, as one process with the global batch would
        log them (a step's logs are one replica's share). The same on one device."""
        if not isinstance(logs, dict):
            return logs
        return {**logs, **{k: v for k, v in self._metric_logs(self.metrics).items() if k in logs}}

    def _first_replica_function(self, step):
        """A train / test function running `step` on every replica and returning the first
        replica's logs. Keras' own averages scalar logs with strategy.reduce(axis=0), which fails
        under MultiWorkerMirroredStrategy; the epoch's logs come from the metrics anyway."""
        strategy = self.distribute_strategy
        if self.steps_per_execution != 1:
            raise ValueError("--distribute=multi_worker needs compile(steps_per_execution=1).")

        def one_step(data):
            return _first_replica(strategy, strategy.run(step, args=(data,)))

        if not self.run_eagerly:
            one_step = tf.function(one_step, reduce_retracing=True, jit_compile=bool(self.jit_compile))
        return lambda iterator: one_step(next(iterator))

    def make_test_function(self, force=False):
        if not _multi_worker(self.distribute_strategy):
            return super().make_test_function(force)
        if self.test_function is None or force:
            self.test_function = self._first_replica_function(self.test_step)
        return self.test_function

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Keras' build before fit / evaluate under a tf.distribute strategy, skipped when the model
        and its optimizer are built (here at construction and compile): Keras all-reduces a whole
        first batch to learn its shapes, which fails for nested batches under
        MultiWorkerMirroredStrategy (and costs a collective per tensor)."""
        if (self.optimizer is not None and self.optimizer.built
                and all(layer.built for layer in self._flatten_layers())):
            return
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    # ------------------------------------------------------------------ forward
    def call(self, inputs, training=False):
        """Every head on the encoder features of `inputs`: {task name: raw output}."""
        features = self.encoder(inputs, training=training)
        return {t.name: head(features, training=training) for t, head in zip(self.tasks, self.heads)}

    def primary_prediction(self, inputs):
        """The primary head's raw output and the task's prediction (probabilities / value)."""
        outputs = self.heads[0](self.encoder(inputs, training=False), training=False)
        return {"scores": outputs, "prediction": self.primary.prediction(outputs)}

    def forward(self, batch, training, all_tasks=False):
        """The batch through the encoder (once per input key) and every active head: a Forward."""
        if "labels" not in batch or "x" not in batch:
            raise ValueError("Batches must be dicts with 'x' and 'labels' (the tfaux data contract).")
        labels = dict(batch["labels"])
        if self.generated:
            labels.update(self.scheduler.generated_labels(batch, training, self._step()))
            batch = dict(batch, mask={**batch.get("mask", {}), **self.scheduler.generated_masks(batch)})
        run = [True] * len(self.tasks) if all_tasks else self.active
        encoded = {}
        losses, masks, features, outputs = [], [], [], []
        maps = []  # dense tasks' per-pixel losses
        for task, head, active in zip(self.tasks, self.heads, run):
            if task.name not in labels:
                raise ValueError(f"Batch has no labels for task '{task.name}'.")
            y = labels[task.name]
            mask = _mask(batch, task.name, y)
            if not active:
                zeros = tf.zeros_like(mask)
                losses.append(zeros), masks.append(zeros), outputs.append(None)
                features.append(None)
                maps.append(None)
                continue
            out = head(self._encoded(batch, task.input_key, encoded, training), training=training)
            if task.kind == "consistency":  # its "label": the same head on batch["x"]'s features
                y = head(self._encoded(batch, None, encoded, training), training=training)
            loss, pixels = _task_loss(task, y, out, mask)
            losses.append(loss), maps.append(pixels)
            masks.append(mask)
            features.append(encoded[task.input_key])
            outputs.append(out)
        some = next(f for f in features if f is not None)
        features = [tf.zeros_like(some) if f is None else f for f in features]
        return Forward(tf.stack(losses, 1), tf.stack(masks, 1), tf.stack(features, 1), outputs, encoded, labels,
                       task_losses=losses, loss_maps=_loss_maps(maps, run))

    def _encoded(self, batch, key, encoded, training):
        """The features the input `key` reads, computed once per batch and kept in `encoded`: the
        encoder's of batch["x"] (key None) or batch["task_x"][key], or, for a key the strategy
        generates (`strategy.generated_input_keys`), its `generated_input` from those."""
        if key not in encoded:
            if key in self.scheduler.generated_input_keys:
                encode = lambda k: self._encoded(batch, k, encoded, training)  # noqa: E731
                encoded[key] = self.scheduler.generated_input(key, encode, batch, self._step(), training)
            else:
                encoded[key] = self.encoder(batch["x"] if key is None else batch["task_x"][key], training=training)
        return encoded[key]

    def _step(self):
        """Lower steps taken so far (int64): the key of a strategy's step-dependent draws."""
        optimizer = getattr(self, "optimizer", None)
        return tf.cast(optimizer.iterations if optimizer is not None else 0, tf.int64)

    def task_losses(self, batch, training, all_tasks=False):
        """Per-example loss matrix [B, T] (zero where masked), masks, features [B, T, d], outputs."""
        f = self.forward(batch, training, all_tasks)
        return f.losses, f.masks, f.features, f.outputs

    def _context(self, batch, forward, regularization=0.0):
        ids = batch.get("id", tf.zeros_like(forward.masks[:, 0], tf.int64))
        optimizer = getattr(self, "optimizer", None)
        rate = tf.cast(optimizer.learning_rate, tf.float32) if optimizer is not None else tf.constant(0.0)
        return Context(losses=tf.stop_gradient(forward.losses), masks=forward.masks,
                       features=tf.stop_gradient(forward.features), ids=tf.reshape(ids, [-1]),
                       live_losses=forward.losses, live_task_losses=forward.task_losses,
                       representations=forward.representations,
                       task_keys=[t.input_key for t in self.tasks], labels=forward.labels,
                       step=self._step(), learning_rate=rate, regularization=regularization,
                       num_targets=self.num_targets, variables=self.theta, loss_maps=forward.loss_maps)

    def context(self, batch, training=False):
        """Forward pass and the strategy's Context of a batch (for diagnostics)."""
        f = self.forward(batch, training)
        return f, self._context(batch, f)

    def _regularization(self):
        terms = self.encoder.losses + [l for h in self.heads for l in h.losses]
        if not terms:
            return 0.0
        return tf.add_n(terms) / float(distribute.num_replicas())

    def lower_objective(self, batch, training=True):
        """L_t(theta, phi) for one batch, as this replica's contribution."""
        f = self.forward(batch, training)
        regularization = self._regularization()
        return self.scheduler.lower_loss(f.losses, self._context(batch, f, regularization)) + regularization

    def dev_objective(self, batch):
        """L_dev: mean over the target tasks of each one's mean loss on the dev batch, as
        this replica's contribution."""
        encoded, total = {}, 0.0
        for task, head in zip(self.targets, self.heads):
            if task.name not in batch["labels"]:
                raise ValueError(f"Dev batch has no labels for target task '{task.name}'.")
            out = head(self._encoded(batch, task.input_key, encoded, training=True), training=True)
            y = batch["labels"][task.name]
            mask = _mask(batch, task.name, y)
            count = distribute.replica_sum(tf.reduce_sum(mask))
            total += tf.reduce_sum(task.per_example_loss(y, out) * mask) / tf.maximum(count, 1.0)
        return total / float(self.num_targets)

    # ------------------------------------------------------------------ metrics
    def _update_metrics(self, forward, objective):
        self.loss_tracker.update_state(objective)
        for k, tracker in enumerate(self.task_loss_trackers):
            count = tf.reduce_sum(forward.masks[:, k])
            tracker.update_state(tf.reduce_sum(forward.losses[:, k]) / tf.maximum(count, 1.0), sample_weight=count)
        for k, (task, metric) in enumerate(zip(self.targets, self.target_metrics)):
            y, out = forward.labels[task.name], forward.outputs[k]
            if task.kind in ("binary", "regression"):
                y, out = tf.reshape(tf.cast(y, tf.float32), [-1, 1]), tf.reshape(out, [-1, 1])
            for m in [metric, *self.extra_target_metrics[k]]:
                m.update_state(y, out, sample_weight=forward.masks[:, k])

    def _metric_logs(self, metrics):
        logs = {m.name: m.result() for m in metrics}
        if self.num_targets > 1:  # model selection: mean over the targets that had labelled examples
            results = tf.stack([m.result() for m in self.target_metrics])
            seen = tf.stack([tf.cast(m.count > 0, results.dtype) for m in self.target_metrics])
            logs[self.selection_name] = tf.reduce_sum(results * seen) / tf.maximum(tf.reduce_sum(seen), 1.0)
        return logs

    def _logs(self):
        logs = self._metric_logs(self.metrics)
        if self.scheduler.bilevel:
            logs.update(dev_loss=tf.identity(self.dev_loss), hypergrad_norm=tf.identity(self.hypergrad_norm),
                        upper_skipped=tf.identity(self.upper_skipped))
        return logs

    # ------------------------------------------------------------------ steps
    def _lower_pass(self, data):
        """One lower step's forward: (forward, context, L_t with its regularization), on a tape."""
        batch = data["train"] if "train" in data else data
        forward = self.forward(batch, training=True)
        regularization = self._regularization()
        context = self._context(batch, forward, regularization)
        if self.scheduler.main_data == "labelled" and "dev" in data:
            context.main_objective = self.dev_objective(data["dev"]) * float(self.num_targets)
        return forward, context, self.scheduler.lower_loss(forward.losses, context) + regularization

    def _apply_lower(self, grads, forward, context, objective):
        """theta <- the lower optimizer's update, then the strategy's hook and the metrics."""
        used = [(g, v) for g, v in zip(grads, self.theta.trained) if g is not None]  # STL: aux heads idle
        self.optimizer.apply([g for g, _ in used], [v for _, v in used])
        self.scheduler.after_lower_step(context)
        self._update_metrics(forward, objective * float(distribute.num_replicas()))
        if self.weight_trackers:
            weights = self.scheduler.example_weights(context)
            masks = forward.masks
            for k, tracker in enumerate(self.weight_trackers):
                count = tf.reduce_sum(masks[:, k])
                tracker.update_state(tf.reduce_sum(weights[:, k] * masks[:, k]) / tf.maximum(count, 1.0),
                                     sample_weight=count)

    def train_step(self, data):
        with tf.GradientTape(persistent=self.scheduler.persistent_tape) as tape:
            forward, context, objective = self._lower_pass(data)
        grads = self.scheduler.lower_gradients(tape, objective, forward.losses, context, self.theta)
        del tape
        self._apply_lower(grads, forward, context, objective)
        return self._logs()

    def test_step(self, data):
        batch = data["train"] if "train" in data else data
        forward = self.forward(batch, training=False, all_tasks=True)
        counts = tf.maximum(tf.reduce_sum(forward.masks[:, :self.num_targets], 0), 1.0)
        target_losses = tf.reduce_sum(forward.losses[:, :self.num_targets], 0) / counts
        self._update_metrics(forward, tf.reduce_mean(target_losses))
        return self._metric_logs([m for m in self.metrics if m not in self.weight_trackers])

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
        """Replica step: the all-replica (true) hypergradient dL_upper/dphi (implicit term plus
        direct term) and this replica's upper loss. The encoder and heads run in training
        mode, but their non-trainable state (BatchNorm moving statistics) is put back: the
        upper step must not move it with dev batches."""
        phi = self.scheduler.upper_variables
        saved = [tf.identity(v) for v in self.frozen_state]
        hyper, dev_loss = hypergrad.implicit_hypergradient(
            self.lower_objective, lambda: self.scheduler.upper_objective(self, dev),
            self.hessian_variables(), phi, self.solver, alpha=self.upper_alpha(),
            reduce=distribute.replica_sum, train_batch=batch, chunks=self.hvp_chunks)
        return self._restored(saved, distribute.replica_sum(hyper), dev_loss)

    def _restored(self, saved, hyper, dev_loss):
        """(hyper, dev_loss), once the frozen state is put back to `saved`."""
        with tf.control_dependencies(hyper + [dev_loss]):
            for v, value in zip(self.frozen_state, saved):
                v.assign(value)
        return [tf.identity(h) for h in hyper], tf.identity(dev_loss)

    @property
    def fuses_lower_step(self):
        """Whether a due step runs as `fused_step`: the exact path (hvp_chunks = 1) of a strategy
        whose lower gradient is the plain gradient of L_t (the protocol's default)."""
        return (self.scheduler.bilevel and self.hvp_chunks == 1
                and type(self.scheduler).lower_gradients is Strategy.lower_gradients)

    def fused_step(self, data):
        """Replica step of a due step on the exact path: the lower step and the hypergradient share
        one forward and backward pass of L_t on the training batch, recorded on the nested tape
        (one gradient fewer than an upper step followed by a lower step). The hypergradient is
        taken at theta before this lower update, and this lower update uses phi before the upper
        update. Returns what `hypergradient` returns; the BatchNorm statistics move with the
        training batch only, as in a lower step."""
        theta = self.hessian_variables()
        with tf.GradientTape(persistent=True) as outer:
            with tf.GradientTape() as tape:
                forward, context, objective = self._lower_pass(data)
            grads = tape.gradient(objective, self.theta.trained)
        position = {id(v): k for k, v in enumerate(self.theta.trained)}
        grad_theta = hypergrad.zeros_for_none([grads[position[id(v)]] for v in theta], theta)
        phi = self.scheduler.upper_variables
        saved = [tf.identity(v) for v in self.frozen_state]
        v, direct, dev_loss = hypergrad.dev_gradient(lambda: self.scheduler.upper_objective(self, data["dev"]),
                                                     theta, phi, distribute.replica_sum)
        hyper = hypergrad.hypergradient_on_tape(outer, grad_theta, theta, phi, v, direct, self.solver,
                                                alpha=self.upper_alpha(), reduce=distribute.replica_sum)
        del outer
        hyper, dev_loss = self._restored(saved, distribute.replica_sum(hyper), dev_loss)
        with tf.control_dependencies(hyper):
            self._apply_lower(grads, forward, context, objective)
        return hyper, dev_loss

    def upper_gradient(self, hyper):
        """What the upper optimizer is fed (tfaux.upper): g = hyper / alpha, clipped to
        `upper.clipnorm`, plus `upper.weight_decay` * phi; and ||g|| before clipping."""
        g = [h / self.upper_alpha() for h in hyper]
        norm = tf.linalg.global_norm(g)
        if self.upper.clipnorm:
            g, _ = tf.clip_by_global_norm(g, self.upper.clipnorm, use_norm=norm)
        if self.upper.weight_decay:
            g = [x + self.upper.weight_decay * tf.convert_to_tensor(v)
                 for x, v in zip(g, self.scheduler.upper_variables)]
        return g, norm

    def _apply_upper_gradient(self, grads):
        self.upper_optimizer.apply(distribute.for_optimizer(grads), self.scheduler.upper_variables)

    def upper_step(self, batch, dev):
        """Cross-replica: one phi update from `hypergradient` (see `update_phi`)."""
        return self.update_phi(*self.distribute_strategy.run(self.hypergradient, args=(batch, dev)))

    def update_phi(self, hyper, dev_loss):
        """Cross-replica: one phi update from per-replica hypergradients; a non-finite one skips it
        with a warning. Logs `hypergrad_norm`, the norm of g (reference scale) before clipping."""
        strategy = self.distribute_strategy
        grads, norm = strategy.run(self.upper_gradient, args=(hyper,))
        norm = _first_replica(strategy, norm)
        finite = tf.math.is_finite(norm)

        def apply():
            strategy.run(self._apply_upper_gradient, args=(grads,))
            self.scheduler.after_upper_step()
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
            if not _multi_worker(self.distribute_strategy):
                return super().make_train_function(force)
            if self.train_function is None or force:
                self.train_function = self._first_replica_function(self.train_step)
            return self.train_function
        if self.train_function is not None and not force:
            return self.train_function
        if self.steps_per_execution != 1:
            raise ValueError("Bi-level strategies need compile(steps_per_execution=1).")
        upper_stream = "data.train_with_dev(batch_size)" if self.scheduler.upper_data == "dev" else \
            "data.train_with_reordered(batch_size)"
        strategy = self.distribute_strategy

        def one_step(data):
            if not (isinstance(data, dict) and "train" in data and "dev" in data):
                raise ValueError(f"{type(self.scheduler).__name__} is bi-level: feed fit with "
                                 f"{upper_stream}, batches of {{'train': ..., 'dev': ...}}.")
            step = self.optimizer.iterations
            due = tf.logical_and(step > 0, tf.equal(step % self.upper_interval, 0))

            def lower():
                return _first_replica(strategy, strategy.run(self.train_step, args=(data,)))

            if self.fuses_lower_step:
                def fused():
                    self.update_phi(*strategy.run(self.fused_step, args=(data,)))
                    return _first_replica(strategy, strategy.run(self._logs))

                return tf.cond(due, fused, lower)
            tf.cond(due, lambda: self.upper_step(data["train"], data["dev"]), lambda: tf.constant(False))
            return lower()

        if not self.run_eagerly:
            one_step = tf.function(one_step, reduce_retracing=True, jit_compile=bool(self.jit_compile))

        def function(iterator):
            return one_step(next(iterator))

        self.train_function = function
        return function
