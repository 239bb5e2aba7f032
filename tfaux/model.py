"""AuxiliaryModel: a shared encoder, one head per task, and a method that says how the tasks'
per-example losses become updates (seed 000, Alg. 1).

It is a Keras model: `fit` / `evaluate` / `predict` take Keras' data forms (tfaux.keras_data),
`compile` takes per-task losses, metrics and loss weights (tfaux.keras_compile), `save` /
`load_model` round-trip it (`get_config`), `export` writes the primary task's SavedModel, and
`from_keras` builds one from a functional multi-output model (tfaux.keras_split). train_step
runs the lower update theta <- theta - eta grad_theta L_t(theta, phi); the bi-level upper step
and the distributed train functions live in tfaux.trainer.

Several target (primary) tasks are allowed: each gets its own Keras metric, model
selection uses their mean (`primary_accuracy` / `primary_rmse`), and the first target is
the one `export` serves.
"""

import dataclasses

import keras
import tensorflow as tf

from tfaux import distribute, hypergrad, keras_compile, keras_data
from tfaux.strategies.base import UPPER_DATA, Context, Strategy, ThetaVariables
from tfaux.tasks import Task, ordered
from tfaux.trainer import Trainer
from tfaux.upper import UpperSettings

HESSIAN_SCOPES = ("all", "shared", "no_aux_heads")


def _heads_by_task(heads, tasks):
    """{task name: head layer} from a dict or a list in task order (None: none given)."""
    if heads is None:
        return {}
    if not isinstance(heads, dict):
        heads = list(heads)
        if len(heads) != len(tasks):
            raise ValueError(f"heads lists {len(heads)} layers for {len(tasks)} tasks {[t.name for t in tasks]}.")
        heads = {t.name: h for t, h in zip(tasks, heads)}
    unknown = sorted(set(heads) - {t.name for t in tasks})
    if unknown:
        raise ValueError(f"heads names tasks the model does not have: {unknown}.")
    return dict(heads)


def _zeros_batch(spec, batch=2):
    return tf.nest.map_structure(lambda s: tf.zeros((batch,) + tuple(s.shape), s.dtype), spec)


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
    weights: tf.Tensor = None  # [B, T] masks times sample weights (the losses are weighted by them)


# ---- dense (per-pixel) tasks: per-pixel loss maps beside the [B, T] loss matrix
def _task_loss(task, y, out, mask, loss_fn=None):
    """The task's [B] masked per-example losses (`loss_fn`: compile's loss for the task, else the
    task kind's) and, for a dense task, its [B, H, W] masked per-pixel losses (None otherwise);
    `mask`: the label mask times the sample weight."""
    if not task.is_dense:
        return (loss_fn or task.per_example_loss)(y, out) * mask, None
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


def _sample_weight(batch, name, mask):
    """[B] mask times the batch's sample weights of task `name` (Keras' sample_weight / class_weight)."""
    weight = batch.get("sample_weight", {}).get(name)
    return mask if weight is None else mask * tf.reshape(tf.cast(weight, tf.float32), [-1])


class StrategyEpochHook(keras.callbacks.Callback):
    """Calls `strategy.on_epoch_end(epoch)`; AuxiliaryModel.fit puts it first, so it runs
    before the callbacks that save the run (tfaux.backup.EpochBackup, checkpoints)."""

    def __init__(self, strategy):
        super().__init__()
        self.strategy = strategy

    def on_epoch_end(self, epoch, logs=None):
        self.strategy.on_epoch_end(epoch)


@keras.saving.register_keras_serializable(package="tfaux")
class AuxiliaryModel(Trainer):
    """Multi-task model trained by a tfaux method through `model.fit`.

    encoder:        keras layer/model mapping a batch of inputs x to features [B, d].
    tasks:          list of tfaux.Task (one or more targets, role "primary"; the first is exported).
    method:         a tfaux.strategies.Strategy, or a method's name in tfaux.strategies.METHODS.
    input_spec:     nest of tf.TensorSpec of ONE example's x (no batch dim); builds the model.
    num_examples:   training-set size (N-JTDS keeps one weight per example).
    upper_interval: M, lower steps per upper step. On the exact path (hvp_chunks = 1) a due step
                    is one pass (`fused_step`): its lower step and the hypergradient share L_t's
                    forward and backward, and its lower update uses phi before that upper update.
    solver:         hypergrad.Neumann(terms=K, alpha) or hypergrad.ConjugateGradient(...);
                    Neumann's alpha=None means the lower optimizer's learning rate. A method
                    that fixes its own (`method.solver`, e.g. MAXL's Neumann(terms=0)) overrides it.
    hessian_scope:  "all" (every theta), "shared" (encoder only) or "no_aux_heads".
    hvp_chunks:     N > 1 averages each Hessian-vector product over N interleaved sub-batches,
                    one at a time (tfaux.hypergrad): the upper step keeps about 1/N of the
                    tensors alive, for one more gradient per product; BatchNorm and batch
                    statistics then see sub-batches. 1 (default): the whole batch, exactly.
    upper:          tfaux.upper.UpperSettings: optimizer, learning rate, clip norm and weight
                    decay of phi, in the reference code's scale (hypergradient / alpha);
                    default: the method's reference settings (`method.upper_defaults`).
    heads:          optional {task name: layer} (or a list in task order): the task's head, instead
                    of the one `Task.make_head` builds (e.g. the output branches of a Keras model,
                    `from_keras`).
    """

    def __init__(self, encoder, tasks, method, input_spec, num_examples=None, upper_interval=20,
                 solver=None, hessian_scope="all", upper=None, hvp_chunks=1, heads=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(method, str):
            from tfaux import strategies
            method = strategies.get(method)
        if not isinstance(method, Strategy):
            raise ValueError(f"method must be a tfaux.strategies.Strategy or a method name, got {type(method).__name__}.")
        if hessian_scope not in HESSIAN_SCOPES:
            raise ValueError(f"hessian_scope must be one of {HESSIAN_SCOPES}, got '{hessian_scope}'.")
        if int(hvp_chunks) < 1:
            raise ValueError(f"hvp_chunks must be >= 1, got {hvp_chunks}.")
        if int(upper_interval) < 1:
            raise ValueError(f"upper_interval must be >= 1, got {upper_interval}.")
        if method.upper_data not in UPPER_DATA:
            raise ValueError(f"{type(method).__name__}.upper_data must be one of {UPPER_DATA}.")
        self.encoder = encoder
        self.user_tasks = list(tasks)  # the user's order: a list y follows it
        tasks = ordered(tasks)
        extra = list(method.extra_tasks(tasks))
        if any(t.is_primary for t in extra):
            raise ValueError(f"{type(method).__name__} may only add auxiliary tasks.")
        self.tasks = ordered(tasks + extra)
        self.num_targets = sum(1 for t in self.tasks if t.is_primary)
        self.targets = self.tasks[:self.num_targets]
        self.primary = self.tasks[0]
        self.generated = {t.name for t in extra}
        if method.generated_input_keys and type(method).generated_input is Strategy.generated_input:
            raise ValueError(f"{type(method).__name__} lists generated_input_keys "
                             f"{list(method.generated_input_keys)} but does not override generated_input.")
        given_heads = _heads_by_task(heads, self.user_tasks)
        self.heads = [given_heads.get(t.name) or t.make_head() for t in self.tasks]
        self.method = method
        self.input_spec_nest = input_spec
        self.num_examples = num_examples
        self.upper_interval = int(upper_interval)
        self.model_solver = solver
        self.solver = method.solver or solver or hypergrad.Neumann(terms=3)  # a method's own solver wins
        self.hessian_scope = hessian_scope
        self.hvp_chunks = int(hvp_chunks)
        if self.hvp_chunks > 1 and not isinstance(self.solver, hypergrad.IterativeSolver):
            raise ValueError(f"hvp_chunks={self.hvp_chunks} needs an IterativeSolver (Neumann or ConjugateGradient), "
                             f"got {type(self.solver).__name__}.")
        self.upper_settings = upper
        self.upper = upper or method.upper_defaults
        if not isinstance(self.upper, UpperSettings):
            raise ValueError(f"upper must be a tfaux.upper.UpperSettings, got {type(self.upper).__name__}.")
        self.upper_optimizer = None
        features = self.encoder(_zeros_batch(input_spec))
        for head in self.heads:
            head(features)
        method.setup_inputs(input_spec)
        method.setup(self.tasks, int(features.shape[-1]), num_examples)
        self.active = method.active_tasks()
        self.theta = self._theta_variables()
        self.loss_fns, self.user_metrics = {}, []
        self._build_trackers()
        self.built = True

    @classmethod
    def from_keras(cls, model, primary, method="equal", tasks=None, shared=None, **kwargs):
        """An AuxiliaryModel from a functional multi-output Keras model: its shared trunk (up to the
        last tensor every output depends on, or layer `shared`) is the encoder and each output's
        branch a task head (tfaux.keras_split). primary: the target output's name (or a list);
        tasks: optional {output name: kind or Task} where the output layer does not tell;
        kwargs: the constructor's (num_examples, upper_interval, ...)."""
        from tfaux import keras_split

        encoder, made, heads = keras_split.split(model, primary, tasks, shared)
        return cls(encoder, made, method, input_spec=keras_split.input_spec(model), heads=heads, **kwargs)

    def _theta_variables(self):
        """theta as the layers' trainable flags say now (Keras reads them at compile time too)."""
        return ThetaVariables(shared=list(self.encoder.trainable_variables),
                              heads=[list(h.trainable_variables) for h in self.heads],
                              strategy=list(self.method.lower_variables))

    @property
    def frozen_state(self):
        """Non-trainable variables of the encoder and heads (BatchNorm statistics, frozen layers)."""
        return list(self.encoder.non_trainable_variables) + [
            v for h in self.heads for v in h.non_trainable_variables]

    # ------------------------------------------------------------------ saving
    def get_config(self):
        """Everything `from_config` needs to rebuild the model (weights are saved apart)."""
        user = {t.name for t in self.user_tasks}
        ser = keras.saving.serialize_keras_object
        return {**super().get_config(),
                "encoder": ser(self.encoder),
                "tasks": [t.get_config() for t in self.user_tasks],
                "heads": {t.name: ser(h) for t, h in zip(self.tasks, self.heads) if t.name in user},
                "method": ser(self.method),
                "input_spec": tf.nest.map_structure(
                    lambda s: {"shape": list(s.shape), "dtype": s.dtype.name}, self.input_spec_nest),
                "num_examples": self.num_examples, "upper_interval": self.upper_interval,
                "solver": ser(self.model_solver) if self.model_solver is not None else None,
                "hessian_scope": self.hessian_scope,
                "upper": ser(self.upper_settings) if self.upper_settings is not None else None,
                "hvp_chunks": self.hvp_chunks}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        de = keras.saving.deserialize_keras_object
        spec = config.pop("input_spec")
        is_leaf = lambda s: isinstance(s, dict) and set(s) == {"shape", "dtype"}  # noqa: E731
        if is_leaf(spec):
            input_spec = tf.TensorSpec(spec["shape"], spec["dtype"])
        else:
            input_spec = {k: tf.TensorSpec(s["shape"], s["dtype"]) for k, s in spec.items()}
        return cls(encoder=de(config.pop("encoder")), tasks=[Task.from_config(t) for t in config.pop("tasks")],
                   method=de(config.pop("method")), input_spec=input_spec,
                   heads={k: de(h) for k, h in config.pop("heads").items()},
                   solver=de(config.pop("solver")) if config.get("solver") else config.pop("solver", None),
                   upper=de(config.pop("upper")) if config.get("upper") else config.pop("upper", None),
                   **config)

    # ------------------------------------------------------------------ set-up
    def _build_trackers(self):
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.task_loss_trackers = [keras.metrics.Mean(name=f"{t.name}_loss") for t in self.tasks]
        self.weight_trackers = ([keras.metrics.Mean(name=f"{t.name}_weight") for t in self.tasks]
                                if self.method.logs_weights else [])
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
                + [m for _, m, _ in self.user_metrics] + self.task_loss_trackers + self.weight_trackers)

    @property
    def selection_metric(self):
        """(log key, mode) of the validation metric that selects theta (seed 000, Eq. 1): the
        target's metric, or with several targets the mean of theirs."""
        return f"val_{self.selection_name}", ("min" if self.primary.kind == "regression" else "max")

    def compile(self, optimizer="adam", loss=None, metrics=None, loss_weights=None, weighted_metrics=None,
                upper_optimizer=None, jit_compile=False, run_eagerly=False, steps_per_execution=1, **kwargs):
        """keras.Model.compile, per task (tfaux.keras_compile): `loss` replaces a task's default
        per-example loss; `metrics` (weighted by the label mask) and `weighted_metrics` (also by
        sample_weight) are logged as `<task>_<metric>`; `loss_weights` are fixed task weights, for
        methods that take them (`Equal`). The layers' `trainable` flags are read here, as Keras does.
        upper_optimizer: optimizer of phi, fed the reference-scale hypergradient (tfaux.upper);
        default `self.upper.make_optimizer()`, the method's reference one.
        jit_compile: XLA for every method alike (False by default, so that no method runs
        under XLA where another does not; Keras' "auto" would pick it for some only)."""
        if jit_compile == "auto":
            raise ValueError("AuxiliaryModel.compile needs jit_compile=True or False ('auto' would compile "
                             "some methods and not others).")
        if kwargs:
            raise ValueError(f"AuxiliaryModel.compile does not take {sorted(kwargs)}.")
        super().compile(optimizer=optimizer, jit_compile=jit_compile, run_eagerly=run_eagerly,
                        steps_per_execution=steps_per_execution)
        weights = keras_compile.loss_weights_by_task(loss_weights, self.user_tasks)
        if weights is not None:
            self.method.set_loss_weights(weights)
        self.loss_fns = keras_compile.task_losses(loss, self.user_tasks)
        with self.distribute_strategy.scope():
            self.user_metrics = keras_compile.task_metrics(metrics, weighted_metrics, self.tasks)
        self.theta = self._theta_variables()
        if not self.optimizer.built:
            self.optimizer.build(self.theta.trained)
        if self.method.bilevel:
            self.upper_optimizer = keras.optimizers.get(upper_optimizer) if upper_optimizer else \
                self.upper.make_optimizer()
            if not self.upper_optimizer.built:
                self.upper_optimizer.build(self.method.upper_variables)
        self._compile_arguments = dict(
            optimizer=self.optimizer, loss=loss, loss_weights=loss_weights, metrics=metrics,
            weighted_metrics=weighted_metrics, upper_optimizer=self.upper_optimizer, jit_compile=jit_compile,
            run_eagerly=run_eagerly, steps_per_execution=steps_per_execution)

    def get_compile_config(self):
        """compile()'s arguments, serialized (saved in a .keras file)."""
        arguments = getattr(self, "_compile_arguments", {})
        return {k: keras.saving.serialize_keras_object(v) for k, v in arguments.items()}

    def compile_from_config(self, config):
        """compile() again from `get_compile_config()` (loading a .keras file): the optimizers
        are rebuilt on the same variables, so their saved state loads into them."""
        self.compile(**{k: keras.saving.deserialize_keras_object(v) for k, v in config.items()})

    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None, validation_split=0.0,
            validation_data=None, shuffle=True, class_weight=None, sample_weight=None, dev_data=None,
            dev_split=None, dev_batch_size=None, **kwargs):
        """keras.Model.fit on any Keras data form (tfaux.keras_data), with the method's
        once-per-epoch hook run before `callbacks`.

        In-memory x, y: ids are row positions; `validation_split` takes the last rows (as Keras);
        a bi-level method's dev split is `dev_data` (x, y) or carved from the training rows,
        stratified (`dev_split`: a fraction or a count; default `keras_data.default_dev_size`).
        dev_batch_size: dev examples per upper step; default the whole dev split up to 1,024
        (seed 000, Alg. 1 sums L_dev over all of D_dev). A tf.data stream of (x, y[, w]) batches
        is converted batch by batch; a bi-level method then needs `dev_data`."""
        data, validation_data = keras_data.training_data(
            self, x, y, batch_size=batch_size, validation_split=validation_split, validation_data=validation_data,
            shuffle=shuffle, class_weight=class_weight, sample_weight=sample_weight, dev_data=dev_data,
            dev_split=dev_split, dev_batch_size=dev_batch_size,
            validation_batch_size=kwargs.get("validation_batch_size"))
        return super().fit(data, epochs=epochs, verbose=verbose, validation_data=validation_data, shuffle=False,
                           callbacks=[StrategyEpochHook(self.method), *(callbacks or [])], **kwargs)

    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", sample_weight=None, steps=None, **kwargs):
        """keras.Model.evaluate on any Keras data form (tfaux.keras_data)."""
        data = keras_data.evaluation_data(self, x, y, sample_weight, batch_size)
        if data is not None:
            x, y, sample_weight, batch_size = data, None, None, None
        return super().evaluate(x, y, batch_size=batch_size, verbose=verbose, sample_weight=sample_weight,
                                steps=steps, **kwargs)

    def predict(self, x, *args, **kwargs):
        return super().predict(keras_data.inputs(self, x), *args, **kwargs)

    def export(self, filepath, format="tf_saved_model", verbose=None, input_signature=None, vocabularies=None,
               dtype=None):
        """The primary task's SavedModel (tfaux.export_primary): raw inputs in, {"scores",
        "prediction"} out; auxiliary heads and the method are not part of it. vocabularies, dtype:
        as export_primary's (raw ids served for index inputs; the served dtype of an image input)."""
        from tfaux.export import export_primary

        if format != "tf_saved_model" or input_signature is not None:
            raise ValueError("AuxiliaryModel.export writes a SavedModel of the primary task whose signature is the "
                             "model's input_spec; other formats and signatures are not supported.")
        return export_primary(self, filepath, vocabularies=vocabularies, dtype=dtype, verbose=bool(verbose))

    def predict_step(self, data):
        """{task: raw head output} of a batch (a tfaux batch's "x", or Keras' (x, ...))."""
        if keras_data.is_batch(data):
            data = data["train"] if "train" in data else data
            return self(data["x"], training=False)
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return self(x, training=False)

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
            raise keras_data.DataFormError(f"Training and evaluation need labels y beside x. Accepted: "
                                           f"{keras_data.ACCEPTED}.")
        labels = dict(batch["labels"])
        if self.generated:
            labels.update(self.method.generated_labels(batch, training, self._step()))
            batch = dict(batch, mask={**batch.get("mask", {}), **self.method.generated_masks(batch)})
        run = [True] * len(self.tasks) if all_tasks else self.active
        encoded = {}
        losses, masks, weights, features, outputs = [], [], [], [], []
        maps = []  # dense tasks' per-pixel losses
        for task, head, active in zip(self.tasks, self.heads, run):
            if task.name not in labels:
                raise ValueError(f"Batch has no labels for task '{task.name}'.")
            y = labels[task.name]
            mask = _mask(batch, task.name, y)
            if not active:
                zeros = tf.zeros_like(mask)
                losses.append(zeros), masks.append(zeros), weights.append(zeros), outputs.append(None)
                features.append(None)
                maps.append(None)
                continue
            out = head(self._encoded(batch, task.input_key, encoded, training), training=training)
            if task.kind == "consistency":  # its "label": the same head on batch["x"]'s features
                y = head(self._encoded(batch, None, encoded, training), training=training)
            weight = _sample_weight(batch, task.name, mask)
            loss, pixels = _task_loss(task, y, out, weight, self.loss_fns.get(task.name))
            losses.append(loss), maps.append(pixels)
            masks.append(mask), weights.append(weight)
            features.append(encoded[task.input_key])
            outputs.append(out)
        some = next(f for f in features if f is not None)
        features = [tf.zeros_like(some) if f is None else f for f in features]
        return Forward(tf.stack(losses, 1), tf.stack(masks, 1), tf.stack(features, 1), outputs, encoded, labels,
                       task_losses=losses, loss_maps=_loss_maps(maps, run), weights=tf.stack(weights, 1))

    def _encoded(self, batch, key, encoded, training):
        """The features the input `key` reads, computed once per batch and kept in `encoded`: the
        encoder's of batch["x"] (key None) or batch["task_x"][key], or, for a key the strategy
        generates (`strategy.generated_input_keys`), its `generated_input` from those."""
        if key not in encoded:
            if key in self.method.generated_input_keys:
                encode = lambda k: self._encoded(batch, k, encoded, training)  # noqa: E731
                encoded[key] = self.method.generated_input(key, encode, batch, self._step(), training)
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
        return self.method.lower_loss(f.losses, self._context(batch, f, regularization)) + regularization

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
            loss = (self.loss_fns.get(task.name) or task.per_example_loss)(y, out)
            total += tf.reduce_sum(loss * _sample_weight(batch, task.name, mask)) / tf.maximum(count, 1.0)
        return total / float(self.num_targets)

    # ------------------------------------------------------------------ metrics
    def _update_metrics(self, forward, objective):
        self.loss_tracker.update_state(objective)
        for k, tracker in enumerate(self.task_loss_trackers):
            count = tf.reduce_sum(forward.masks[:, k])
            tracker.update_state(tf.reduce_sum(forward.losses[:, k]) / tf.maximum(count, 1.0), sample_weight=count)
        for k, (task, metric) in enumerate(zip(self.targets, self.target_metrics)):
            y, out = forward.labels[task.name], task.logits(forward.outputs[k])
            if task.kind in ("binary", "regression"):
                y, out = tf.reshape(tf.cast(y, tf.float32), [-1, 1]), tf.reshape(out, [-1, 1])
            for m in [metric, *self.extra_target_metrics[k]]:  # as Keras' `metrics`: not sample-weighted
                m.update_state(y, out, sample_weight=forward.masks[:, k])
        for k, metric, weighted in self.user_metrics:
            task, out = self.tasks[k], forward.outputs[k]
            if out is not None:  # a head the method does not run (STL's auxiliaries)
                y, prediction = keras_compile.keras_shapes(task, forward.labels[task.name], task.prediction(out))
                metric.update_state(y, prediction, sample_weight=(forward.weights if weighted else forward.masks)[:, k])

    def _metric_logs(self, metrics):
        logs = {m.name: m.result() for m in metrics}
        if self.num_targets > 1:  # model selection: mean over the targets that had labelled examples
            results = tf.stack([m.result() for m in self.target_metrics])
            seen = tf.stack([tf.cast(m.count > 0, results.dtype) for m in self.target_metrics])
            logs[self.selection_name] = tf.reduce_sum(results * seen) / tf.maximum(tf.reduce_sum(seen), 1.0)
        return logs

    def _logs(self):
        logs = self._metric_logs(self.metrics)
        if self.method.bilevel:
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
        if self.method.main_data == "labelled" and "dev" in data:
            context.main_objective = self.dev_objective(data["dev"]) * float(self.num_targets)
        return forward, context, self.method.lower_loss(forward.losses, context) + regularization

    def _apply_lower(self, grads, forward, context, objective):
        """theta <- the lower optimizer's update, then the strategy's hook and the metrics."""
        used = [(g, v) for g, v in zip(grads, self.theta.trained) if g is not None]  # STL: aux heads idle
        self.optimizer.apply([g for g, _ in used], [v for _, v in used])
        self.method.after_lower_step(context)
        self._update_metrics(forward, objective * float(distribute.num_replicas()))
        if self.weight_trackers:
            weights = self.method.example_weights(context)
            masks = forward.masks
            for k, tracker in enumerate(self.weight_trackers):
                count = tf.reduce_sum(masks[:, k])
                tracker.update_state(tf.reduce_sum(weights[:, k] * masks[:, k]) / tf.maximum(count, 1.0),
                                     sample_weight=count)

    def train_step(self, data):
        data = keras_data.from_keras_element(self.user_tasks, data)
        with tf.GradientTape(persistent=self.method.persistent_tape) as tape:
            forward, context, objective = self._lower_pass(data)
        grads = self.method.lower_gradients(tape, objective, forward.losses, context, self.theta)
        del tape
        self._apply_lower(grads, forward, context, objective)
        return self._logs()

    def test_step(self, data):
        data = keras_data.from_keras_element(self.user_tasks, data)
        batch = data["train"] if "train" in data else data
        forward = self.forward(batch, training=False, all_tasks=True)
        counts = tf.maximum(tf.reduce_sum(forward.masks[:, :self.num_targets], 0), 1.0)
        target_losses = tf.reduce_sum(forward.losses[:, :self.num_targets], 0) / counts
        self._update_metrics(forward, tf.reduce_mean(target_losses))
        return self._metric_logs([m for m in self.metrics if m not in self.weight_trackers])
