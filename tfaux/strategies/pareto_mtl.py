"""Pareto-MTL (Lin, Zhen, Li, Zhang & Kwong 2019, "Pareto multi-task learning", NeurIPS),
following the authors' code (github.com/Xi-L/ParetoMTL, multiMNIST/train.py).

Preference vectors u_1..u_P split the loss space; the run for u_p solves
    min_theta l(theta) = (L_1, ..., L_K)   s.t.   G_j(theta) = (u_j - u_p)^T l(theta) <= 0, j != p
(Eq. 5-7), l the vector of the all-replica batch losses. Constraint j is active when
(u_j - u_p)^T l > 0 (the reference code's test, i.e. Eq. 11's threshold eps = 0; l scaled to
unit length, which does not change the sign; j = p never is).
With g_k the gradient of L_k w.r.t. ALL parameters (shared and heads, as the reference code):

- stage 1 (finding a feasible initial point, Sec. 4.2.1, Eq. 9): while some constraint is active,
  w = sum_{j active} beta_j (u_j - u_p), beta = argmin_{simplex} ||sum_j beta_j grad G_j||^2,
  grad G_j = sum_k (u_j - u_p)_k g_k (w not normalised, as the reference). It ends at the first
  step with no active constraint (that step already takes a stage-2 update; the reference skips
  it), for good, or after the warm-up budget: the reference's "at most 2 epochs" by default
  (`warmup_steps=None`), or `warmup_steps` lower steps.
- stage 2 (Sec. 4.2.2, Eq. 13-14 and Sec. 5): beta over the K task gradients and the active
  constraint gradients, beta = argmin_{simplex} ||sum_k beta_k g_k + sum_{j active} beta_j grad G_j||^2,
  mapped back to task weights w_k = beta_k + sum_j beta_j (u_j - u_p)_k, then w <- K w / sum_k |w_k|.

Every parameter then moves along grad sum_k w_k L_k (+ the regularization's gradient): the
shared ones along sum_k w_k g_k, head k along w_k grad L_k (the weights may be negative).
The weights come from `pareto_mtl_weights(gram, losses, preference_index, preferences,
warmup)`, a module-level function of the Gram matrix and the losses only, so it also runs on
raw gradients (apps.ptl_synthetic, seed 004 Sec. 5.1).

Preference vectors: K = 2: u_p = (cos t_p, sin t_p), t_p = p pi / (2 (P - 1)) (the reference's
circle_points; u_0 = (1, 0)). Since the sub-region of u_p holds the loss vectors most aligned
with u_p, a low p allows a large loss of task 0 (column 0, the first target) relative to task
1, and p = P - 1 keeps task 0's loss smallest. K > 2 (the paper gives no recipe for P vectors):
the Das-Dennis simplex lattice {a / H : a in N^K, sum a = H} with the fewest divisions H that
give >= P points, scaled to unit length, ordered by greedy farthest-point selection from
u_0 = e_1; the first P are used.

Defaults: the reference's 5 preference vectors; warm-up at most 2 epochs; preference=None picks
the vector that favours the first target most (the smallest u[0]: p = P - 1 for two tasks), since
tfaux trains for its target. The paper trains one model per preference; with p = 0 on
MovieLens-100K (rating + CTR) the rating RMSE was 1.24 against STL's 0.94.
"""

import itertools
import math

import keras
import numpy as np
import tensorflow as tf

from tfaux import distribute
from tfaux import task_gradients as tg
from tfaux.solvers import min_norm_element
from tfaux.strategies.base import Strategy

REFERENCE_WARMUP_EPOCHS = 2


def preference_vectors(num_tasks, num_preferences):
    """[P, K] unit preference vectors (see the module docstring)."""
    if num_tasks == 2:
        t = np.linspace(0.0, 0.5 * np.pi, num_preferences)
        return np.stack([np.cos(t), np.sin(t)], 1)
    divisions = 1
    while math.comb(divisions + num_tasks - 1, num_tasks - 1) < num_preferences:
        divisions += 1
    lattice = np.array(sorted((a for a in itertools.product(range(divisions + 1), repeat=num_tasks)
                               if sum(a) == divisions), reverse=True), dtype="float64")
    points = lattice / np.linalg.norm(lattice, axis=1, keepdims=True)
    chosen = [0]
    while len(chosen) < num_preferences:
        distance = np.min(np.linalg.norm(points[:, None] - points[chosen][None], axis=2), axis=1)
        chosen.append(int(np.argmax(distance)))
    return points[chosen]


def _restricted_min_norm(gram, rows, keep, **solver_options):
    """beta over the rows of `rows` ([R, K] combinations of the task gradients) kept by
    `keep` ([R] bool), minimising ||sum_r beta_r rows_r g||^2 on the simplex; the task
    weights sum_r beta_r rows_r ([K])."""
    picked = tf.boolean_mask(rows, keep)
    beta = min_norm_element(tf.matmul(picked, tf.matmul(gram, picked, transpose_b=True)), **solver_options)
    return tf.linalg.matvec(picked, beta, transpose_a=True)


def active_constraints(task_losses, preferences, preference_index):
    """[P] bool: (u_j - u_p)^T l > 0 for the losses l ([K]), preference vectors u ([P, K])
    and p = `preference_index` (l scaled to unit length first, as the reference code; j = p
    never is active)."""
    preferences = tf.convert_to_tensor(preferences)
    directions = preferences - preferences[preference_index]  # rows u_j - u_p
    task_losses = tf.cast(task_losses, directions.dtype)
    unit = task_losses / tf.maximum(tf.norm(task_losses), 1e-12)
    return tf.linalg.matvec(directions, unit) > 0.0


def pareto_mtl_weights(gram, losses, preference_index, preferences, warmup, **solver_options):
    """Pareto-MTL's [K] task weights w (module docstring) from the Gram matrix of the task
    gradients ([K, K], G_kl = g_k . g_l), the task losses l ([K]), the preference index p
    and vectors u ([P, K]), and `warmup` (bool, may be a tensor): whether stage 1 may still
    run. Stage 1 (warmup and some constraint active): w = sum_{j active} beta_j (u_j - u_p),
    beta the min-norm point over the active grad G_j, not normalised. Otherwise stage 2:
    beta over the K task gradients and the active grad G_j, w_k = beta_k + sum_j beta_j
    (u_j - u_p)_k, then w <- K w / sum_k |w_k|. The update direction is sum_k w_k g_k.
    Works on raw gradients and losses (e.g. a synthetic problem) as in the strategy.
    `solver_options` (iterations, tolerance) go to min_norm_element; the strategy uses its
    defaults."""
    gram = tf.convert_to_tensor(gram)
    preferences = tf.cast(preferences, gram.dtype)
    num_tasks = int(preferences.shape[1])
    directions = preferences - preferences[preference_index]  # rows u_j - u_p
    active = active_constraints(losses, preferences, preference_index)
    stage1 = tf.logical_and(warmup, tf.reduce_any(active))

    def initial():
        return _restricted_min_norm(gram, directions, active, **solver_options)

    def main():
        rows = tf.concat([tf.eye(num_tasks, dtype=gram.dtype), directions], 0)
        keep = tf.concat([tf.ones([num_tasks], tf.bool), active], 0)
        w = _restricted_min_norm(gram, rows, keep, **solver_options)
        return tf.math.divide_no_nan(tf.cast(num_tasks, gram.dtype) * w, tf.reduce_sum(tf.abs(w)))

    return tf.cond(stage1, initial, main)


@keras.saving.register_keras_serializable(package="tfaux")
class ParetoMTL(Strategy):
    """Pareto-MTL for preference vector u_p (p = `preference` of `num_preferences`)."""

    persistent_tape = True

    def __init__(self, num_preferences=5, preference=None, warmup_steps=None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(num_preferences, int) or num_preferences < 1:
            raise ValueError(f"ParetoMTL num_preferences must be an integer >= 1, got {num_preferences!r}.")
        if preference is not None and (not isinstance(preference, int) or not 0 <= preference < num_preferences):
            raise ValueError(f"ParetoMTL preference must be None or an integer in [0, {num_preferences}), "
                             f"got {preference!r}.")
        if warmup_steps is not None and (not isinstance(warmup_steps, int) or warmup_steps < 0):
            raise ValueError(f"ParetoMTL warmup_steps must be None or an integer >= 0, got {warmup_steps!r}.")
        self.num_preferences = num_preferences
        self.preference = preference
        self.warmup_steps = warmup_steps

    def setup(self, tasks, feature_dim, num_examples):
        super().setup(tasks, feature_dim, num_examples)
        if self.num_tasks < 2:
            raise ValueError("ParetoMTL needs at least 2 tasks.")
        vectors = preference_vectors(self.num_tasks, self.num_preferences)
        self.preference_index = (int(np.argmin(vectors[:, 0])) if self.preference is None  # favours task 0
                                 else self.preference)
        self.preferences = tf.constant(vectors, tf.float32)
        self.directions = self.preferences - self.preferences[self.preference_index]  # rows u_j - u_p
        self.feasible = self.add_state(name="feasible")  # 1 once stage 1 found a feasible point
        self.epochs_done = self.add_state(name="epochs_done")

    # ------------------------------------------------------------------ constraints
    def active_constraints(self, task_losses):
        """[P] bool: (u_j - u_p)^T l > 0, from the all-replica task losses l."""
        return active_constraints(task_losses, self.preferences, self.preference_index)

    def _all_replica_losses(self, context):
        totals = tf.reduce_sum(context.losses * context.masks, 0) / context.global_batch
        return distribute.replica_sum(totals)

    def in_warmup(self, step):
        """Whether stage 1 may still run at lower step `step`."""
        if self.warmup_steps is None:
            budget = self.epochs_done < REFERENCE_WARMUP_EPOCHS
        else:
            budget = step < self.warmup_steps
        return tf.logical_and(self.feasible < 0.5, budget)

    # ------------------------------------------------------------------ weights
    def task_weights(self, gram, task_losses, step):
        """[K] weights w from the all-replica Gram of the task gradients and the losses."""
        return pareto_mtl_weights(gram, task_losses, self.preference_index, self.preferences, self.in_warmup(step))

    def lower_gradients(self, tape, loss, losses, context, variables):
        del loss, losses
        objectives = tg.task_objectives(tape, context)
        tasks = range(self.num_tasks)
        per_task = [tg.gradients(tape, objectives[k], variables.all) for k in tasks]
        flat = tg.replica_flat(per_task)
        gram = tf.matmul(flat, flat, transpose_b=True)
        w = self.task_weights(gram, self._all_replica_losses(context), context.step)
        n = len(variables.shared)
        shared = [tf.add_n([w[k] * per_task[k][j] for k in tasks]) for j in range(n)]
        return tg.combined(tape, objectives, context, variables, shared, task_weights=w)

    def after_lower_step(self, context):
        none_active = tf.logical_not(tf.reduce_any(self.active_constraints(self._all_replica_losses(context))))
        self.feasible.assign(tf.maximum(self.feasible, tf.cast(none_active, tf.float32)))

    def on_epoch_end(self, epoch):
        self.epochs_done.assign(float(epoch + 1))

    def get_config(self):
        return {**super().get_config(), "num_preferences": self.num_preferences,
                "preference": self.preference, "warmup_steps": self.warmup_steps}
