"""MGDA / MGDA-UB / MOOMTL / t-MOOMTL (Sener & Koltun 2018, "Multi-task learning as
multi-objective optimization", NeurIPS; t-MOOMTL as in seed 004, Sec. 5).

Shared parameters move along the min-norm element of the convex hull of the task gradients
(Sec. 3.2 and Alg. 2 of the paper):

    alpha = argmin_{alpha >= 0, sum_k alpha_k = 1} || sum_k alpha_k g_k ||^2,
    shared update direction  sum_k alpha_k grad_shared L_k   (+ the regularization's gradient),

and each task head k takes its own task's gradient grad_head_k L_k, unscaled (Alg. 2; the
authors' code scales the heads by alpha_k too). alpha comes from tfaux.solvers (K = 2: the
closed form alpha_1 = clip((g_2 - g_1)^T g_2 / ||g_1 - g_2||^2, 0, 1)).

space="parameters" (MGDA / MOOMTL): g_k = the all-replica gradient of L_k w.r.t. all shared
    parameters.
space="representation" (MGDA-UB, Sec. 3.3): g_k = dL_k/dZ, Z the shared representation of
    the batch (Gram of the per-example rows, summed over replicas; tasks that read different
    inputs have orthogonal blocks); the shared parameters then get grad sum_k alpha_k L_k.
tasks="all": every task (MOOMTL). tasks="targets": t-MOOMTL, "only learning the target tasks
    with MOOMTL" (seed 004): MGDA over the target tasks alone; the auxiliary tasks are not
    learned at all (their heads are not even run, as in STL).
normalize: the authors' optional gradient normalisation before the solver ("not included in
    the paper"): "none" g_k, "l2" g_k / ||g_k||, "loss" g_k / L_k, "loss+" g_k / (L_k ||g_k||).
    Only alpha sees it; the update uses the raw gradients, as in their code. Default "none",
    the paper's algorithm (their sample CelebA config uses "loss+").
"""

import keras
import tensorflow as tf

from tfaux import distribute
from tfaux import task_gradients as tg
from tfaux.solvers import min_norm_element
from tfaux.strategies.base import Strategy

SPACES = ("parameters", "representation")
TASK_SETS = ("all", "targets")
NORMALIZATIONS = ("none", "l2", "loss", "loss+")


def normalized_gram(gram, losses, normalize):
    """G_jk / (n_j n_k) with n_k = 1, ||g_k||, L_k or L_k ||g_k|| (zero scales count as 1)."""
    if normalize == "none":
        return gram
    norms = tf.sqrt(tf.maximum(tf.linalg.diag_part(gram), 0.0))
    scale = {"l2": norms, "loss": losses, "loss+": losses * norms}[normalize]
    scale = tf.where(scale > 0, scale, tf.ones_like(scale))
    return gram / (scale[:, None] * scale[None, :])


@keras.saving.register_keras_serializable(package="tfaux")
class MGDA(Strategy):
    """MGDA (Sener & Koltun 2018): shared update along the min-norm convex combination of the
    task gradients; heads take their own gradients. See the module docstring for the options."""

    persistent_tape = True

    def __init__(self, space="parameters", tasks="all", normalize="none", **kwargs):
        super().__init__(**kwargs)
        if space not in SPACES:
            raise ValueError(f"MGDA space must be one of {SPACES}, got '{space}'.")
        if tasks not in TASK_SETS:
            raise ValueError(f"MGDA tasks must be one of {TASK_SETS}, got '{tasks}'.")
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"MGDA normalize must be one of {NORMALIZATIONS}, got '{normalize}'.")
        self.space = space
        self.task_set = tasks
        self.normalize = normalize

    def balanced_tasks(self):
        """Indices of the tasks MGDA balances."""
        return list(range(self.num_targets if self.task_set == "targets" else self.num_tasks))

    def active_tasks(self):
        return [k in self.balanced_tasks() for k in range(self.num_tasks)]

    def _representation_gram(self, grads, context, tasks):
        """Gram of the per-example dL_k/dZ; tasks reading different inputs are orthogonal."""
        keys = [context.task_keys[k] for k in tasks]
        if len(set(keys)) == 1:  # one shared input: a single Gram
            return tg.gram(grads)
        entries = [[tf.zeros([]) for _ in tasks] for _ in tasks]
        for key in dict.fromkeys(keys):
            group = [i for i, other in enumerate(keys) if other == key]
            block = tg.gram([grads[i] for i in group])
            for a, i in enumerate(group):
                for b, j in enumerate(group):
                    entries[i][j] = block[a, b]
        return tf.stack([tf.stack(row) for row in entries])

    def solve(self, tape, objectives, context, variables):
        """(alpha over `balanced_tasks()`, this replica's per-task shared gradients or None)."""
        tasks = self.balanced_tasks()
        losses = distribute.replica_sum(tf.stop_gradient(tf.stack([objectives[k] for k in tasks])))
        if self.space == "parameters":
            per_task = tg.shared_gradients(tape, objectives, variables, tasks)
            flat = tg.replica_flat(per_task)
            gram = tf.matmul(flat, flat, transpose_b=True)
        else:
            per_task = None
            gram = self._representation_gram(tg.representation_gradients(tape, objectives, context, tasks),
                                             context, tasks)
        return self.combination_weights(normalized_gram(gram, losses, self.normalize)), per_task

    def combination_weights(self, gram):
        """alpha from the Gram matrix of the balanced tasks' gradients: the min-norm element."""
        return min_norm_element(gram)

    def lower_gradients(self, tape, loss, losses, context, variables):
        del loss, losses
        objectives = tg.task_objectives(tape, context)
        tasks = self.balanced_tasks()
        alpha, per_task = self.solve(tape, objectives, context, variables)
        if per_task is not None:
            shared = [tf.add_n([alpha[i] * per_task[i][j] for i in range(len(tasks))])
                      for j in range(len(variables.shared))]
        else:  # MGDA-UB: one more backward pass, of sum_k alpha_k L_k
            with tape:
                combination = tf.add_n([alpha[i] * objectives[k] for i, k in enumerate(tasks)])
            shared = tg.gradients(tape, combination, variables.shared)
        return tg.combined(tape, objectives, context, variables, shared)

    def get_config(self):
        return {**super().get_config(), "space": self.space, "tasks": self.task_set,
                "normalize": self.normalize}
