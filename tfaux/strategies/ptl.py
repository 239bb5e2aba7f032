"""PTL: learning with privileged tasks (Song et al., ICCV 2021; seed 004, Sec. 4, Alg. 1).

Target tasks I_t (role "primary") and privileged tasks I_p (the auxiliaries). The shared
parameters move along d = sum_m lam_m g_m, the solution of the dual problem (Eq. 12/14)

    min_{alpha, beta} 1/2 || sum_m alpha_m g_m + sum_{i in I_t, j in I_p} beta_ij (g_i - g_j) ||^2
    s.t. sum_m alpha_m = 1, alpha >= 0, alpha_j <= C1 (j in I_p), 0 <= beta_ij <= C2,
         sum_i beta_ij <= alpha_j (j in I_p),

solved exactly by `tfaux.solvers.privileged_min_norm`; every task head takes its own task's
gradient (Alg. 1). C1 bounds how much a privileged task may steer the shared update (the
"slack descent" of Eq. 6): C1 = 0 is MGDA over the target tasks alone, C1 >= 1 MGDA over
all tasks. With constraint (10) the "direction correction" beta is absorbed by alpha
(lam ranges over the capped simplex whatever C2 is), so C2 is accepted, recorded, and does
not change the update; the paper's reported effect of C2 (Fig. 6b) is not reproducible from
Eq. 12 as written.

space: "representation" (the paper's default: gradients w.r.t. the shared representation,
    as MGDA-UB) or "parameters" (w.r.t. every shared parameter).
c1: default 0.17, the best value of the paper's C1 ablation (CIFAR-100, Fig. 6a).
"""

from tfaux.solvers import privileged_min_norm
from tfaux.strategies.mgda import MGDA


class PTL(MGDA):
    """Privileged multiple-gradient descent: MGDA whose privileged tasks weigh at most C1."""

    def __init__(self, c1=0.17, c2=0.0, space="representation", normalize="none", **kwargs):
        super().__init__(space=space, tasks="all", normalize=normalize, **kwargs)
        if not (float(c1) >= 0 and float(c2) >= 0):
            raise ValueError(f"PTL needs c1 >= 0 and c2 >= 0, got c1={c1}, c2={c2}.")
        self.c1, self.c2 = float(c1), float(c2)

    def combination_weights(self, gram):
        targets = [k < self.num_targets for k in range(self.num_tasks)]
        return privileged_min_norm(gram, targets, self.c1, self.c2)[2]

    def get_config(self):
        config = {**super().get_config(), "c1": self.c1, "c2": self.c2}
        config.pop("tasks")
        return config
