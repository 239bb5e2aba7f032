"""PTL: learning with privileged tasks (Song et al., ICCV 2021; seed 004, Sec. 4, Alg. 1).

Target tasks I_t (role "primary") and privileged tasks I_p (the auxiliaries). The shared
parameters move along d = sum_m lam_m g_m, the solution of the dual problem (Eq. 12/14)

    min_{alpha, beta} 1/2 || sum_m alpha_m g_m + sum_{i in I_t, j in I_p} beta_ij (g_i - g_j) ||^2
    s.t. sum_m alpha_m = 1, alpha >= 0, alpha_j <= C1 (j in I_p), 0 <= beta_ij <= C2,
         sum_i beta_ij <= alpha_j (j in I_p),

solved exactly by `tfaux.solvers.privileged_min_norm`; every task head takes its own task's
gradient (Alg. 1). C1 bounds how much a privileged task may steer the shared update (the
"slack descent" of Eq. 6): with constraint10=True, C1 = 0 is MGDA over the target tasks
alone, C1 >= 1 MGDA over all tasks.

constraint10: True (default) solves Eq. 12 as the paper writes it, with constraint (10)
    sum_i beta_ij <= alpha_j. There the "direction correction" beta is absorbed by alpha
    (lam ranges over the capped simplex whatever C2 is), so C2 is accepted, recorded, and
    does not change the update: the paper's reported effect of C2 (Fig. 6b) is not
    reproducible from Eq. 12 as written.
    False solves the exact Lagrangian dual of the paper's primal Problem (11), which has no
    constraint (10) (strong duality: Theorem 1 holds for the update exactly). Then C2 acts:
    a privileged task's weight lam_j = alpha_j - sum_i beta_ij may go negative (by at most
    C2 per target), bending the update away from the privileged gradients towards "every
    target descends at least as fast as every privileged task" (Eq. 8): the paper's
    direction correction, the mechanism it credits for Fig. 6b. It acts only where a
    privileged gradient outruns a target along it, i.e. without conflict (two tasks: exactly
    when <g_t, g_p> > ||g_t||^2); larger C2 never increases the total priority violation
    sum_ij max(0, <g_i - g_j, d>) nor ||d|| (a target's own rate <g_i, d> may drop: the
    priority is relative). C2 = 0 gives the default's update.

space: "representation" (the paper's default: gradients w.r.t. the shared representation,
    as MGDA-UB) or "parameters" (w.r.t. every shared parameter).
c1: default 0.17, the best value of the paper's C1 ablation (CIFAR-100, Fig. 6a).
c2: default 0 (no direction correction); the paper's C2 ablation (Fig. 6b, C1 = 0.1) peaks at
    0.82 -- meaningful only with constraint10=False.
"""

import keras
import numpy as np

from tfaux.solvers import privileged_min_norm
from tfaux.strategies.mgda import MGDA


@keras.saving.register_keras_serializable(package="tfaux")
class PTL(MGDA):
    """Privileged multiple-gradient descent: MGDA whose privileged tasks weigh at most C1."""

    def __init__(self, c1=0.17, c2=0.0, space="representation", normalize="none", constraint10=True, **kwargs):
        super().__init__(space=space, tasks="all", normalize=normalize, **kwargs)
        if not (float(c1) >= 0 and float(c2) >= 0):
            raise ValueError(f"PTL needs c1 >= 0 and c2 >= 0, got c1={c1}, c2={c2}.")
        if not constraint10 and not np.isfinite(float(c2)):
            raise ValueError(f"PTL needs a finite c2 with constraint10=False, got c2={c2}.")
        self.c1, self.c2 = float(c1), float(c2)
        self.constraint10 = bool(constraint10)

    def combination_weights(self, gram):
        targets = [k < self.num_targets for k in range(self.num_tasks)]
        return privileged_min_norm(gram, targets, self.c1, self.c2, constraint10=self.constraint10)[2]

    def get_config(self):
        config = {**super().get_config(), "c1": self.c1, "c2": self.c2, "constraint10": self.constraint10}
        config.pop("tasks")
        return config
