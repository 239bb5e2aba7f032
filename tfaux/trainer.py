"""The training loop of an AuxiliaryModel: Keras' train / test functions under tf.distribute,
and the bi-level upper step (seed 000, Alg. 1).

Every `upper_interval` lower steps (before that step's lower update, on the same fresh training
batch and on one dev batch) phi takes one step along the implicit hypergradient of the method's
upper objective (tfaux.hypergrad), fed to the upper optimizer in the reference scale
(tfaux.upper). The gating runs in cross-replica context, since a replica function may not
synchronise inside control flow. Under MultiWorkerMirroredStrategy, the train and test
functions return the first replica's logs (Keras' own reduce fails there).

`Trainer` is the base of `tfaux.AuxiliaryModel`, which supplies the network, the losses and
metrics: `lower_objective`, `_lower_pass`, `_apply_lower`, `train_step`, `_logs`, `method`,
`theta`, `solver`, `upper`, `upper_interval`, `hvp_chunks`, `hessian_scope`, `frozen_state`.
"""

import keras
import tensorflow as tf

from tfaux import distribute, hypergrad, keras_data
from tfaux.strategies.base import Strategy


def _first_replica(strategy, value):
    """A value that is identical on every replica, read from the first one."""
    return tf.nest.map_structure(lambda v: strategy.experimental_local_results(v)[0], value)


def _multi_worker(strategy):
    """Whether `strategy` is a MultiWorkerMirroredStrategy over several workers."""
    return (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            and strategy.extended._in_multi_worker_mode())


class Trainer(keras.Model):
    """Keras' training machinery for a multi-task model with a tfaux method (module docstring)."""

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
        phi = self.method.upper_variables
        saved = [tf.identity(v) for v in self.frozen_state]
        hyper, dev_loss = hypergrad.implicit_hypergradient(
            self.lower_objective, lambda: self.method.upper_objective(self, dev),
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
        return (self.method.bilevel and self.hvp_chunks == 1
                and type(self.method).lower_gradients is Strategy.lower_gradients)

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
        phi = self.method.upper_variables
        saved = [tf.identity(v) for v in self.frozen_state]
        v, direct, dev_loss = hypergrad.dev_gradient(lambda: self.method.upper_objective(self, data["dev"]),
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
                 for x, v in zip(g, self.method.upper_variables)]
        return g, norm

    def _apply_upper_gradient(self, grads):
        self.upper_optimizer.apply(distribute.for_optimizer(grads), self.method.upper_variables)

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
            self.method.after_upper_step()
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
        if not self.method.bilevel:
            if not _multi_worker(self.distribute_strategy):
                return super().make_train_function(force)
            if self.train_function is None or force:
                self.train_function = self._first_replica_function(self.train_step)
            return self.train_function
        if self.train_function is not None and not force:
            return self.train_function
        if self.steps_per_execution != 1:
            raise ValueError("Bi-level strategies need compile(steps_per_execution=1).")
        strategy = self.distribute_strategy

        def one_step(data):
            if not (isinstance(data, dict) and "train" in data and "dev" in data):
                raise keras_data.DataFormError(keras_data.unpaired_message(self.method))
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
