"""ARML: auxiliary task reweighting for minimum-data learning (Shi, Hoffman, Saenko, Darrell &
Xu, NeurIPS 2020; seed 003, Sec. 2.4, Alg. 1 and 2, Eq. A9 and A11).

theta is trained on  L = L_main + sum_k alpha_k L_k  (every target task weighted 1, L_main the
sum of the targets' losses), and every `interval` lower steps alpha takes one SGD step on the
score-matching surrogate (Eq. A11)

    J(alpha) = || g_main - sum_k alpha_k g_k ||^2,    g = all-replica batch gradients of the
                                                      shared parameters (heads excluded),
    grad_alpha J = -2 (b - G alpha),  b_k = g_k . g_main,  G_kj = g_k . g_j,

then is projected exactly (Euclidean, `tfaux.solvers.project_simplex`) onto
A = {sum_k alpha_k = K, alpha >= 0}, K auxiliary tasks; alpha starts at 1 each. (The
reference code shifts by (K - sum alpha) / K and clamps at 0, which is not the projection.)

algorithm=2 (default; Alg. 2, "simplified", the authors' recommendation in App. A.4 and what
    their code runs): alpha and theta are updated together for the whole run, no noise.
algorithm=1 (Alg. 1, two stages): while alpha has not converged, every lower step adds
    Langevin noise eta_t ~ N(0, 2 eps_t * temperature) to theta (Eq. A9; eps_t the lower
    learning rate) and alpha is updated; once converged, plain training with alpha fixed.
    Converged (the paper gives no test; ours): `patience` consecutive alpha updates that each
    move no weight by more than `tolerance`. temperature: Eq. A9 is written for the summed
    loss -log p^J; tfaux's loss is a mean over examples, so the same posterior needs noise of
    variance 2 eps / N (N training examples): the default temperature is 1 / N.
    The noise is drawn from a stateless generator keyed by (seed, step, variable), so every
    replica adds the same noise.

g_main comes from the main-task data T_m itself (Alg. 1: "main task data T_m, auxiliary task
data T_ak"): a second stream of labelled target examples (`main_data = "labelled"`, the
reshuffled training set restricted to them), since in a semi-supervised batch of 64 with 2%
labels about one example carries the main label. theta's main term comes from that stream too
(L = mean main loss on the labelled batch + sum_k alpha_k mean L_k on the training batch, as S4L
trains), so two percent of labels do not shrink the main task's share of the update to two
percent. Fed a single stream (plain `fit` on one dataset), both come from the training batch.

Defaults, the reference code's (as measured for the methods notes): interval 20, SGD with
learning rate 0.05 for alpha. Alpha and the convergence counters are state (saved with the
model, exact on resume). The per-task backward passes run only on the steps that update alpha
(their all-replica sum runs every step: a cross-replica reduction cannot sit inside a tf.cond).
"""

import keras
import numpy as np
import tensorflow as tf

from tfaux import distribute
from tfaux import task_gradients as tg
from tfaux.solvers import project_simplex
from tfaux.strategies.base import Strategy

ALGORITHMS = (1, 2)


@keras.saving.register_keras_serializable(package="tfaux")
class ARML(Strategy):
    """Auxiliary weights alpha on {sum alpha = K, alpha >= 0}, matched every `interval` steps
    to the main gradient (Eq. A11); see the module docstring for the options."""

    persistent_tape = True
    logs_weights = True
    main_data = "labelled"

    def __init__(self, interval=20, weight_lr=0.05, algorithm=2, temperature=None, tolerance=1e-3, patience=10,
                 seed=0, **kwargs):
        super().__init__(**kwargs)
        if int(interval) != interval or interval < 1:
            raise ValueError(f"ARML interval must be a whole number of steps >= 1, got {interval!r}.")
        if not weight_lr >= 0:
            raise ValueError(f"ARML weight_lr must be >= 0, got {weight_lr!r}.")
        if algorithm not in ALGORITHMS:
            raise ValueError(f"ARML algorithm must be 1 (two stages, Langevin) or 2 (simplified), got {algorithm!r}.")
        if temperature is not None and not temperature >= 0:
            raise ValueError(f"ARML temperature must be >= 0, got {temperature!r}.")
        if not tolerance > 0 or int(patience) != patience or patience < 1:
            raise ValueError(f"ARML needs tolerance > 0 and a whole patience >= 1, got {tolerance!r}, {patience!r}.")
        self.interval, self.weight_lr, self.algorithm = int(interval), float(weight_lr), int(algorithm)
        self.temperature, self.tolerance, self.patience, self.seed = temperature, float(tolerance), int(patience), int(seed)

    def setup(self, tasks, feature_dim, num_examples):
        super().setup(tasks, feature_dim, num_examples)
        self.num_aux = self.num_tasks - self.num_targets
        default = 1.0 / float(num_examples) if num_examples else 1.0
        self.noise_temperature = default if self.temperature is None else self.temperature  # Eq. A9's noise
        self.alpha = self.add_state(shape=(self.num_aux,), name="alpha", initializer="ones")
        self.stable_updates = self.add_state(name="stable_updates")  # algorithm 1: updates in a row that moved little
        self.converged = self.add_state(name="converged")             # algorithm 1: 1 once alpha has converged

    # ------------------------------------------------------------------ lower level
    def example_weights(self, context):
        task_weights = tf.concat([tf.ones([self.num_targets]), tf.convert_to_tensor(self.alpha)], 0)
        return tf.ones_like(context.losses) * task_weights[None, :]

    def updating(self):
        """Whether alpha is still learned (always with algorithm 2; until converged with 1)."""
        return tf.logical_or(self.algorithm == 2, self.converged < 0.5)

    def lower_gradients(self, tape, loss, losses, context, variables):
        grads = tape.gradient(loss, variables.trained)
        objectives = tg.task_objectives(tape, context)
        due = tf.logical_and(tf.equal((context.step + 1) % self.interval, 0), self.updating())

        size = sum(int(np.prod(v.shape)) for v in variables.shared)
        main_objective = context.main_objective  # the labelled stream (T_m), else the batch's targets
        if main_objective is None:
            with tape:
                main_objective = tf.add_n(objectives[:self.num_targets])
        tasks = [main_objective] + objectives[self.num_targets:]

        def shared_flat():  # this replica's share; the all-reduce must stay outside the cond
            return tf.stack([tg.flat(g) for g in tg.shared_gradients(tape, tasks, variables, range(len(tasks)))])

        flat = distribute.replica_sum(tf.cond(due, shared_flat, lambda: tf.zeros([1 + self.num_aux, size])))
        main, aux = flat[0], flat[1:]
        context.scratch["arml"] = (due, tf.linalg.matvec(aux, main), tf.matmul(aux, aux, transpose_b=True))
        return grads

    def alpha_step(self, alpha, b, gram):
        """One projected SGD step on J (Eq. A11): Proj_A(alpha + 2 lr (b - G alpha))."""
        return project_simplex(alpha + 2.0 * self.weight_lr * (b - tf.linalg.matvec(gram, alpha)),
                               total=float(self.num_aux))

    def after_lower_step(self, context):
        due, b, gram = context.scratch["arml"]
        old = tf.convert_to_tensor(self.alpha)
        new = tf.where(due, self.alpha_step(old, b, gram), old)
        self.alpha.assign(new)
        if self.algorithm == 1:
            if self.noise_temperature > 0:  # Langevin phase (Eq. A9): before this step's convergence test
                self.add_langevin_noise(context)
            small = tf.reduce_max(tf.abs(new - old)) <= self.tolerance
            stable = tf.where(due, tf.where(small, self.stable_updates + 1.0, 0.0), self.stable_updates)
            self.stable_updates.assign(stable)
            self.converged.assign(tf.where(stable >= float(self.patience), 1.0, self.converged))

    def add_langevin_noise(self, context):
        """theta += eta, eta ~ N(0, 2 eps_t temperature) while alpha has not converged; the draw is
        a function of (seed, step, variable index), the same on every replica."""
        scale = tf.sqrt(2.0 * context.learning_rate * self.noise_temperature) * (1.0 - self.converged)
        for index, variable in enumerate(context.variables.all):
            seed = tf.stack([tf.cast(self.seed, tf.int64) * 1_000_003 + context.step, tf.constant(index, tf.int64)])
            noise = tf.random.stateless_normal(tf.shape(variable), seed=seed, dtype=variable.dtype)
            variable.assign_add(tf.cast(scale, variable.dtype) * noise)

    def get_config(self):
        return {**super().get_config(), "interval": self.interval, "weight_lr": self.weight_lr,
                "algorithm": self.algorithm, "temperature": self.temperature, "tolerance": self.tolerance,
                "patience": self.patience, "seed": self.seed}
