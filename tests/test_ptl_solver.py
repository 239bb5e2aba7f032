"""tfaux.solvers.privileged_min_norm (PTL, seed 004: Song et al., ICCV 2021) against a generic
QP solver (cvxpy + Clarabel on the paper's full (alpha, beta) problem, Eq. 12, and on the
Lagrangian dual of its primal (11), i.e. Eq. 12 without constraint (10): constraint10=False),
MGDA and the two-task closed forms, and Theorem 1 of the paper (primal certificate by an LP
in cvxpy)."""

import numpy as np
import pytest
import tensorflow as tf

from tfaux import solvers

cp = pytest.importorskip("cvxpy")

_CLARABEL = dict(solver="CLARABEL", tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10, max_iter=500)
# Without constraint (10) and with a large C2 (a large, degenerate box for beta) Clarabel stalls
# at "optimal_inaccurate" under 1e-10; 1e-9 still agrees with our solver to ~1e-10.
_CLARABEL_DUAL = dict(_CLARABEL, tol_gap_abs=1e-9, tol_gap_rel=1e-9, tol_feas=1e-9)


def _gradients(t, d, seed):
    """T x D gradients, D > T (independent g: lam and d* unique), a common component
    (so tasks partly agree) and norms spread over two orders of magnitude."""
    rng = np.random.default_rng(seed)
    g = rng.normal(size=(t, d)) + rng.uniform(0.0, 2.0) * rng.normal(size=d)
    return g * rng.uniform(0.1, 10.0, size=(t, 1))


def _split(t, n_targets, seed):
    targets = np.zeros(t, bool)
    targets[np.random.default_rng(seed).permutation(t)[:n_targets]] = True
    return targets


def _effective(alpha, beta, targets):
    """lam_i = alpha_i + sum_j beta_ij (i in I_t),  lam_j = alpha_j - sum_i beta_ij (j in I_p)."""
    lam = np.array(alpha, dtype=float)
    lam[targets] += beta.sum(axis=1)
    lam[~targets] -= beta.sum(axis=0)
    return lam


def _reference(g, targets, c1, c2, constraint10=True):
    """Eq. (12) of seed 004 literally, in (alpha, beta), by a generic conic solver; without
    constraint (10) (sum_i beta_ij <= alpha_j) if not ``constraint10``."""
    it, ip = np.flatnonzero(targets), np.flatnonzero(~targets)
    alpha = cp.Variable(len(targets))
    cons = [cp.sum(alpha) == 1, alpha >= 0]
    direction = g.T @ alpha
    if len(ip):
        beta = cp.Variable((len(it), len(ip)))
        cons += [alpha[ip] <= c1, beta >= 0, beta <= c2]
        cons += [cp.sum(beta, axis=0) <= alpha[ip]] if constraint10 else []
        direction = direction + sum(g[i] * cp.sum(beta[a, :]) for a, i in enumerate(it)) \
            - sum(g[j] * cp.sum(beta[:, b]) for b, j in enumerate(ip))
    problem = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(direction)), cons)
    problem.solve(**(_CLARABEL if constraint10 else _CLARABEL_DUAL))
    assert problem.status == "optimal", problem.status
    beta_value = beta.value if len(ip) else np.zeros((len(it), 0))
    return problem.value, _effective(alpha.value, beta_value, targets)


def _assert_feasible(alpha, beta, targets, c1, c2, tol=1e-6, constraint10=True):
    ip = ~targets
    assert beta.shape == (targets.sum(), ip.sum())
    assert abs(alpha.sum() - 1.0) <= tol and np.all(alpha >= -tol)
    assert np.all(alpha[ip] <= c1 + tol)
    assert np.all(beta >= -tol) and np.all(beta <= c2 + tol)
    if constraint10:
        assert np.all(beta.sum(axis=0) <= alpha[ip] + tol)


# (T, number of targets, C1, C2): 2-40 tasks, C1 = 0, small, binding, >= 1; C2 = 0 to large.
CASES = [(2, 1, 0.0, 0.0), (2, 1, 0.1, 0.5), (2, 1, 5.0, 5.0), (3, 1, 0.2, 0.1), (3, 2, 0.3, 10.0),
         (5, 1, 0.05, 1.0), (5, 3, 0.0, 1.0), (5, 4, 1.0, 0.0), (8, 2, 0.3, 0.0), (10, 5, 0.02, 0.3),
         (10, 9, 0.4, 2.0), (20, 10, 0.05, 0.05), (20, 3, 0.2, 1.0), (20, 15, 3.0, 10.0),
         (40, 20, 0.01, 0.5), (40, 5, 0.1, 0.0), (40, 36, 0.5, 1.0)]


@pytest.mark.parametrize("t,n_targets,c1,c2", CASES)
def test_matches_generic_qp_solver(t, n_targets, c1, c2):
    seed = 1000 * t + 10 * n_targets + int(100 * c1)
    g = _gradients(t, 2 * t + 3, seed)
    targets = _split(t, n_targets, seed)
    f_ref, lam_ref = _reference(g, targets, c1, c2)
    alpha, beta, lam = (x.numpy() for x in solvers.privileged_min_norm(tf.constant(g @ g.T), targets, c1, c2))
    assert alpha.dtype == beta.dtype == lam.dtype == np.float64
    _assert_feasible(alpha, beta, targets, c1, c2)
    np.testing.assert_allclose(lam, _effective(alpha, beta, targets), rtol=0, atol=1e-12)
    f = 0.5 * np.sum((g.T @ lam) ** 2)
    scale = np.max(np.sum(g * g, axis=1))
    assert abs(f - f_ref) <= 1e-5 * f_ref + 1e-12 * scale, (f, f_ref)
    np.testing.assert_allclose(lam, lam_ref, rtol=0, atol=1e-4)


@pytest.mark.parametrize("t,n_targets", [(5, 5), (12, 12), (12, 4), (30, 7)])
def test_without_privilege_is_mgda_over_targets(t, n_targets):
    """|I_p| = 0, or C1 = 0 (then also C2 is moot): MGDA's min-norm element of the targets."""
    g = _gradients(t, 2 * t + 3, seed=t + n_targets)
    targets = _split(t, n_targets, seed=t)
    gram = g @ g.T
    mgda = solvers.min_norm_element(tf.constant(gram[np.ix_(targets, targets)])).numpy()
    dynamic = tf.function(lambda gram, c1: solvers.privileged_min_norm(gram, targets, c1, 1.0)[2])
    for c2 in (0.0, 1.0):
        _, beta, lam = solvers.privileged_min_norm(tf.constant(gram), targets, 0.0, c2)
        np.testing.assert_array_equal(lam.numpy()[targets], mgda)
        np.testing.assert_array_equal(lam.numpy()[~targets], 0.0)
        assert not np.any(beta.numpy())
    # C1 = 0 only known at run time: the general (capped-simplex) path, same answer.
    lam = dynamic(tf.constant(gram), tf.constant(0.0, tf.float64)).numpy()
    np.testing.assert_allclose(lam[targets], mgda, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(lam[~targets], 0.0)


@pytest.mark.parametrize("c1", [0.0, 0.05, 0.3, 0.7, 2.0])
def test_two_tasks_closed_form(c1):
    """One target t, one privileged p: lam_p = clip((g_t - g_p).g_t / ||g_t - g_p||^2, 0, min(C1, 1))
    (the 1-D quadratic on lam_p in [0, min(C1, 1)]); lam_t = 1 - lam_p."""
    rng = np.random.default_rng(int(100 * c1))
    for trial in range(4):
        g = rng.normal(size=(2, 6)) * [[1.0], [rng.uniform(0.2, 5.0)]]
        g[1] += trial * g[0]  # from conflicting to agreeing tasks
        for targets in ([True, False], [False, True]):
            t, p = (0, 1) if targets[0] else (1, 0)
            lam_p = np.clip((g[t] - g[p]) @ g[t] / np.sum((g[t] - g[p]) ** 2), 0.0, min(c1, 1.0))
            lam = solvers.privileged_min_norm(tf.constant(g @ g.T), targets, c1, 1.0)[2].numpy()
            np.testing.assert_allclose(lam[[t, p]], [1.0 - lam_p, lam_p], rtol=0, atol=1e-12)


def _primal_certificate(g, targets, c1, c2, d, constraint10=True):
    """Primal of Eq. (12) at a fixed direction d (an LP, solved by cvxpy):

        min  v + C1 sum_j xi_j + C2 sum_ij eta_ij
        s.t. <g_i, d> <= v                            i in I_t
             <g_j, d> + zeta_j <= v + xi_j            j in I_p
             <g_i, d> <= <g_j, d> + eta_ij + zeta_j   i in I_t, j in I_p
             xi, eta, zeta >= 0.

    With zeta = 0 this is the paper's Problem (11); zeta_j is the primal variable of the
    dual constraint (10), sum_i beta_ij <= alpha_j (its Lagrangian gives C1 - alpha_j >= 0,
    C2 - beta_ij >= 0, alpha_j - sum_i beta_ij >= 0, sum alpha = 1 and
    d = -(sum alpha g + sum beta (g_i - g_j)): exactly Eq. 12). Without ``constraint10``,
    zeta = 0: Problem (11) itself at fixed d."""
    it, ip = np.flatnonzero(targets), np.flatnonzero(~targets)
    s = g @ d
    v, xi = cp.Variable(), cp.Variable(len(ip), nonneg=True)
    eta, zeta = cp.Variable((len(it), len(ip)), nonneg=True), cp.Variable(len(ip), nonneg=True)
    cons = [s[it] <= v, s[ip] + zeta <= v + xi] + ([] if constraint10 else [zeta == 0])
    cons += [s[i] <= s[j] + eta[a, b] + zeta[b] for a, i in enumerate(it) for b, j in enumerate(ip)]
    problem = cp.Problem(cp.Minimize(v + c1 * cp.sum(xi) + c2 * cp.sum(eta)), cons)
    problem.solve(solver="CLARABEL")
    assert problem.status == "optimal", problem.status
    return problem.value, v.value, xi.value, eta.value


def _assert_theorem_1(g, targets, c1, c2, constraint10=True):
    """Theorem 1 (2) at d* = -sum_m lam_m g_m (see test_theorem_1); returns lam."""
    lam = solvers.privileged_min_norm(tf.constant(g @ g.T), targets, c1, c2, constraint10=constraint10)[2].numpy()
    d = -g.T @ lam
    norm2 = d @ d
    assert norm2 > 1e-6 * np.max(np.sum(g * g, axis=1))  # d* != 0 on these instances
    value, v, xi, eta = _primal_certificate(g, targets, c1, c2, d, constraint10)
    tol = 1e-6 * np.max(np.sum(g * g, axis=1))
    # Strong duality: primal v + C1 sum xi + C2 sum eta + ||d||^2 / 2 = dual -||d||^2 / 2.
    assert abs(value + norm2) <= tol, (value, -norm2)
    bound = -norm2 - c1 * xi.sum() - c2 * eta.sum()
    assert abs(v - bound) <= tol
    assert bound < 0
    derivative = g @ d
    assert np.all(derivative[targets] <= bound + tol)
    assert np.all(derivative[targets] < 0)
    assert np.all(derivative[~targets] <= bound + xi + tol)
    descends = bound + xi < -tol
    assert np.all(derivative[~targets][descends] < 0)
    return lam


@pytest.mark.parametrize("t,n_targets,c1,c2", [(2, 1, 0.2, 1.0), (4, 2, 0.1, 0.5), (6, 3, 0.0, 2.0),
                                               (8, 3, 0.15, 0.0), (10, 6, 2.0, 0.3)])
def test_theorem_1(t, n_targets, c1, c2):
    """Theorem 1 (2) of seed 004, d* = -sum_m lam_m g_m the primal direction (theta moves along d*):
        i in I_t:  <g_i, d*> <= v* = -||d*||^2 - C1 sum_j xi*_j - C2 sum_ij eta*_ij
        j in I_p:  <g_j, d*> <= v* + xi*_j
    with (v*, xi*, eta*) the primal optimum at d*; the equality for v* is strong duality, so
    it also certifies that our dual point is optimal. v* < 0: every target task descends; a
    privileged task descends where v* + xi*_j < 0 (the theorem's condition)."""
    for trial in range(3):
        seed = 31 * t + trial
        _assert_theorem_1(_gradients(t, 2 * t + 3, seed), _split(t, n_targets, seed), c1, c2)


@pytest.mark.parametrize("t,n_targets,c1,c2", [(3, 1, 0.2, 1.0), (5, 2, 0.1, 0.5), (6, 3, 0.0, 2.0),
                                               (8, 3, 0.15, 0.05), (10, 6, 2.0, 0.3), (12, 4, 0.1, 50.0)])
def test_theorem_1_for_problem_11(t, n_targets, c1, c2):
    """constraint10=False is the exact Lagrangian dual of Problem (11) (no zeta): the same
    certificate, with the LP of (11) itself at d*, holds exactly -- and the instances are
    ones where the correction acts (some lam_j < 0, so the answer is not Eq. 12's)."""
    bent = 0
    for trial in range(3):
        seed = 31 * t + trial
        g, targets = _gradients(t, 2 * t + 3, seed), _split(t, n_targets, seed)
        g[~targets] += 0.5 * g[targets].mean(axis=0)  # privileged tasks agree with the targets
        lam = _assert_theorem_1(g, targets, c1, c2, constraint10=False)
        bent += lam[~targets].min() < -1e-6
    assert bent >= 1


def test_theorem_1_pareto_critical():
    """Theorem 1 (1): 0 in the hull of the target gradients gives d* = 0 whatever C1, C2."""
    rng = np.random.default_rng(5)
    a = rng.normal(size=9)
    g = np.stack([a, -2.0 * a, rng.normal(size=9), rng.normal(size=9)])
    for c1, c2 in ((0.0, 0.0), (0.3, 1.0), (1.0, 10.0)):
        for constraint10 in (True, False):
            lam = solvers.privileged_min_norm(tf.constant(g @ g.T), [True, True, False, False], c1, c2,
                                              constraint10=constraint10)[2].numpy()
            assert np.linalg.norm(g.T @ lam) <= 1e-6 * np.linalg.norm(a)


def test_problem_11_with_c2_zero():
    """With C2 = 0 the paper's primal (11) itself (a QP in d) has d* = -sum lam_m g_m."""
    g = _gradients(7, 17, seed=11)
    targets = _split(7, 3, seed=11)
    c1 = 0.1
    d, v, xi = cp.Variable(17), cp.Variable(), cp.Variable(4, nonneg=True)
    cons = [g[targets] @ d <= v, g[~targets] @ d <= v + xi]
    cp.Problem(cp.Minimize(v + c1 * cp.sum(xi) + 0.5 * cp.sum_squares(d)), cons).solve(**_CLARABEL)
    lam = solvers.privileged_min_norm(tf.constant(g @ g.T), targets, c1, 0.0)[2].numpy()
    np.testing.assert_allclose(-g.T @ lam, d.value, rtol=0, atol=1e-5 * np.abs(d.value).max())


@pytest.mark.parametrize("constraint10", [True, False])
def test_tf_function_matches_eager(constraint10):
    g = _gradients(12, 27, seed=3)
    targets = _split(12, 5, seed=3)
    gram = tf.constant(g @ g.T)
    eager = solvers.privileged_min_norm(gram, targets, 0.1, 0.5, constraint10=constraint10)
    graph = tf.function(lambda x: solvers.privileged_min_norm(x, targets, 0.1, 0.5, constraint10=constraint10))(gram)
    for a, b in zip(eager, graph):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=0, atol=1e-10)


@pytest.mark.parametrize("constraint10", [True, False])
def test_replica_context(two_devices, constraint10):
    g = _gradients(6, 15, seed=4)
    targets = [True, False, True, False, False, True]
    expected = solvers.privileged_min_norm(tf.constant(g @ g.T), targets, 0.2, 0.5, constraint10=constraint10)[2]

    @tf.function
    def step(grads):
        return two_devices.run(lambda x: solvers.privileged_combination(x, targets, 0.2, 0.5, constraint10)[0],
                               args=(grads,))

    for lam in two_devices.experimental_local_results(step(tf.constant(g))):
        np.testing.assert_allclose(lam.numpy(), expected.numpy(), rtol=0, atol=1e-10)


@pytest.mark.parametrize("constraint10", [True, False])
def test_combination_and_float32(constraint10):
    g = _gradients(6, 15, seed=8)
    targets = [False, True, True, False, False, True]
    lam, d = solvers.privileged_combination([tf.constant(x, tf.float32) for x in g], targets, 0.1, 1.0,
                                            constraint10=constraint10)
    assert lam.dtype == d.dtype == tf.float32
    _, lam_ref = _reference(g, np.array(targets), 0.1, 1.0, constraint10)
    np.testing.assert_allclose(lam.numpy(), lam_ref, rtol=0, atol=1e-4)
    np.testing.assert_allclose(d.numpy(), g.T @ lam.numpy(), rtol=1e-5, atol=1e-5)


def test_rejects_invalid_arguments():
    gram = tf.eye(3, dtype=tf.float64)
    with pytest.raises(ValueError):
        solvers.privileged_min_norm(gram, [False, False, False], 0.5)
    with pytest.raises(ValueError):
        solvers.privileged_min_norm(gram, [True, False, False], -0.1)
    with pytest.raises(ValueError):
        solvers.privileged_min_norm(gram, [True, False], 0.1)
    with pytest.raises(ValueError, match="c2"):
        solvers.privileged_min_norm(gram, [True, False, False], 0.1, -1.0, constraint10=False)
    with pytest.raises(ValueError, match="finite"):
        solvers.privileged_min_norm(gram, [True, False, False], 0.1, float("inf"), constraint10=False)


# ------------------------------------------------------------------------------------------
# constraint10=False: the Lagrangian dual of the paper's primal (11) (Eq. 12 without (10))
# ------------------------------------------------------------------------------------------


def _agreeing(t, n_targets, seed):
    """_gradients with the privileged tasks pulled towards the targets' mean gradient (where the
    direction correction acts: a privileged gradient outruns the targets along them)."""
    g, targets = _gradients(t, 2 * t + 3, seed), _split(t, n_targets, seed)
    g[~targets] += np.random.default_rng(seed).uniform(0.0, 1.0) * g[targets].mean(axis=0)
    return g, targets


# (T, number of targets, C1, C2): 2-30 tasks (up to 225 pairs), C1 = 0 to >= 1, C2 small to huge.
DUAL_CASES = [(2, 1, 0.1, 0.5), (2, 1, 5.0, 5.0), (3, 1, 0.2, 0.1), (3, 2, 0.3, 10.0), (5, 1, 0.05, 1.0),
              (5, 3, 0.0, 1.0), (5, 4, 1.0, 0.5), (8, 2, 0.3, 100.0), (10, 5, 0.02, 0.3), (10, 9, 0.4, 2.0),
              (20, 10, 0.05, 0.05), (20, 3, 0.2, 1.0), (20, 15, 3.0, 1000.0), (30, 15, 0.1, 0.5),
              (30, 5, 0.1, 100.0)]


@pytest.mark.parametrize("t,n_targets,c1,c2", DUAL_CASES)
def test_dual_of_problem_11_matches_generic_qp_solver(t, n_targets, c1, c2):
    """constraint10=False against cvxpy on the same (alpha, beta) problem: feasible (1e-6),
    lam = map(alpha, beta), objective to 1e-5 relative, lam to 1e-4; never above Eq. 12's
    objective (a larger feasible set)."""
    seed = 1000 * t + 10 * n_targets + int(100 * c1)
    g, targets = _agreeing(t, n_targets, seed)
    f_ref, lam_ref = _reference(g, targets, c1, c2, constraint10=False)
    alpha, beta, lam = (x.numpy() for x in solvers.privileged_min_norm(tf.constant(g @ g.T), targets, c1, c2,
                                                                        constraint10=False))
    assert alpha.dtype == beta.dtype == lam.dtype == np.float64
    _assert_feasible(alpha, beta, targets, c1, c2, constraint10=False)
    np.testing.assert_allclose(lam, _effective(alpha, beta, targets), rtol=0, atol=1e-12)
    f = 0.5 * np.sum((g.T @ lam) ** 2)
    scale = np.max(np.sum(g * g, axis=1))
    assert abs(f - f_ref) <= 1e-5 * f_ref + 1e-12 * scale, (f, f_ref)
    np.testing.assert_allclose(lam, lam_ref, rtol=0, atol=1e-4)
    lam_12 = solvers.privileged_min_norm(tf.constant(g @ g.T), targets, c1, c2)[2].numpy()
    assert f <= 0.5 * np.sum((g.T @ lam_12) ** 2) * (1 + 1e-12)


def test_dual_acts_on_most_cases():
    """On DUAL_CASES the correction is not idle: most answers have some lam_j < 0."""
    bent = 0
    for t, n_targets, c1, c2 in DUAL_CASES:
        g, targets = _agreeing(t, n_targets, 1000 * t + 10 * n_targets + int(100 * c1))
        lam = solvers.privileged_min_norm(tf.constant(g @ g.T), targets, c1, c2, constraint10=False)[2].numpy()
        bent += lam[~targets].min() < -1e-6
    assert bent >= len(DUAL_CASES) // 2, bent


@pytest.mark.parametrize("t,n_targets,c1", [(2, 1, 0.3), (5, 2, 0.1), (12, 4, 0.05), (20, 10, 1.0)])
def test_dual_with_c2_zero_is_eq_12(t, n_targets, c1):
    """C2 = 0 forces beta = 0: exactly the constraint10=True problem. A static 0 takes that
    code path (identical output); a C2 = 0 known only at run time goes through the general
    dual solver and agrees to 1e-6."""
    g, targets = _agreeing(t, n_targets, seed=7 * t)
    gram = tf.constant(g @ g.T)
    eq12 = solvers.privileged_min_norm(gram, targets, c1, 0.0)[2].numpy()
    for x, y in zip(solvers.privileged_min_norm(gram, targets, c1, 0.0, constraint10=False),
                    solvers.privileged_min_norm(gram, targets, c1, 0.0)):
        np.testing.assert_array_equal(x.numpy(), y.numpy())
    dynamic = tf.function(lambda gram, c2: solvers.privileged_min_norm(gram, targets, c1, c2, constraint10=False))
    _, beta, lam = (x.numpy() for x in dynamic(gram, tf.constant(0.0, tf.float64)))
    assert not np.any(beta)
    np.testing.assert_allclose(lam, eq12, rtol=0, atol=1e-6)


def _two_task_dual(g, t, p, c1, c2):
    """One target t, one privileged p: lam_p = alpha_p - beta ranges over [-C2, min(C1, 1)] and
    f is the 1-D quadratic ||g_t + lam_p (g_p - g_t)||^2, so
        lam_p = clip(s / ||g_t - g_p||^2, -C2, min(C1, 1)),   s = ||g_t||^2 - <g_t, g_p>."""
    s = g[t] @ g[t] - g[t] @ g[p]
    return float(np.clip(s / np.sum((g[t] - g[p]) ** 2), -c2, min(c1, 1.0)))


@pytest.mark.parametrize("c1", [0.0, 0.3, 2.0])
def test_dual_two_tasks_closed_form(c1):
    """The closed form against the solver (to 1e-12) and cvxpy (to 1e-6), from conflicting to
    agreeing tasks and a privileged gradient that outruns the target."""
    rng = np.random.default_rng(int(100 * c1))
    for trial in range(4):
        g = rng.normal(size=(2, 6)) * [[1.0], [rng.uniform(0.5, 3.0)]]
        g[1] += (trial - 1) * g[0]  # -1: conflicting ... 2: the second outruns the first along it
        for targets, c2 in (([True, False], 0.05), ([False, True], 0.4), ([True, False], 3.0)):
            t, p = (0, 1) if targets[0] else (1, 0)
            lam_p = _two_task_dual(g, t, p, c1, c2)
            alpha, beta, lam = (x.numpy() for x in solvers.privileged_min_norm(tf.constant(g @ g.T), targets, c1,
                                                                                c2, constraint10=False))
            np.testing.assert_allclose(lam[[t, p]], [1.0 - lam_p, lam_p], rtol=0, atol=1e-12)
            _assert_feasible(alpha, beta, np.array(targets), c1, c2, tol=1e-12, constraint10=False)
            np.testing.assert_allclose(lam, _reference(g, np.array(targets), c1, c2, False)[1], rtol=0, atol=1e-6)


def _violation(g, targets, d):
    """Total violation of the priority constraints (8): sum_ij max(0, <g_i, d> - <g_j, d>)."""
    s = g @ d
    return np.maximum(s[targets][:, None] - s[~targets][None, :], 0.0).sum()


def test_c2_effect_two_tasks():
    """What C2 does (constraint10=False, C1 fixed), one target t and one privileged task p,
    d = -(lam_t g_t + lam_p g_p) the primal direction:
    * conflicting tasks (<g_t, g_p> < 0, so s > 0): C2 is inert;
    * p outruns t along g_t (<g_t, g_p> > ||g_t||^2, s < 0): lam_p = max(s / ||g_t - g_p||^2,
      -C2) < 0; as C2 grows, the priority violation max(0, <g_t - g_p, d>) and ||d|| fall
      (to 0 and the unconstrained minimum) -- but the target's own rate
      <g_t, d> = -||g_t||^2 + lam_p s RISES: the correction favours the target relative to
      the privileged task (Eq. 8), not in absolute first-order descent."""
    c1, c2s = 0.3, [0.0, 0.05, 0.1, 0.2, 0.4, 1.0, 10.0]
    conflicting = np.array([[1.0, 0.2, 0.0], [-0.5, 1.0, 0.3]])
    outrunning = np.array([[1.0, 0.0, 0.2], [2.0, 1.0, 0.1]])
    for g in (conflicting, outrunning):
        rates, violations, norms = [], [], []
        for c2 in c2s:
            lam = solvers.privileged_min_norm(tf.constant(g @ g.T), [True, False], c1, c2,
                                              constraint10=False)[2].numpy()
            np.testing.assert_allclose(lam[1], _two_task_dual(g, 0, 1, c1, c2), rtol=0, atol=1e-12)
            d = -g.T @ lam
            rates.append(g[0] @ d)
            violations.append(_violation(g, np.array([True, False]), d))
            norms.append(d @ d)
        rates, violations, norms = map(np.array, (rates, violations, norms))
        if g is conflicting:
            np.testing.assert_allclose(rates, rates[0], rtol=0, atol=1e-15)
            continue
        s = g[0] @ g[0] - g[0] @ g[1]  # -0.98
        lam_p = np.maximum(s / np.sum((g[0] - g[1]) ** 2), -np.array(c2s))  # 0, -0.05, ..., -0.4876
        np.testing.assert_allclose(rates, -g[0] @ g[0] + lam_p * s, rtol=0, atol=1e-12)
        assert np.all(np.diff(violations) <= 1e-15) and violations[0] > 0 and violations[-1] <= 1e-12
        assert np.all(np.diff(norms) <= 1e-15) and norms[-1] < norms[0]
        assert np.all(np.diff(rates) >= -1e-15) and rates[-1] > rates[0]


@pytest.mark.parametrize("t,n_targets,c1", [(6, 2, 0.1), (10, 5, 0.3)])
def test_c2_monotone(t, n_targets, c1):
    """Any T, C1 fixed: the primal value -||d*||^2 / 2 of (11) is the minimum over (d, v, xi)
    of P + C2 H(d), with H(d) = sum_ij max(0, <g_i - g_j, d>) (eta at its optimum); so for
    C2 < C2', P + C2 H and P + C2' H exchange their minimisers only if H(d*(C2')) <= H(d*(C2)),
    and the value never decreases: the total priority violation H and ||d*|| never increase
    with C2."""
    g, targets = _agreeing(t, n_targets, seed=3 * t)
    violations, norms = [], []
    for c2 in (0.0, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 100.0):
        lam = solvers.privileged_min_norm(tf.constant(g @ g.T), targets, c1, c2, constraint10=False)[2].numpy()
        d = -g.T @ lam
        violations.append(_violation(g, targets, d))
        norms.append(d @ d)
    scale = np.max(np.sum(g * g, axis=1))
    assert np.all(np.diff(violations) <= 1e-9 * scale) and violations[-1] < violations[0], violations
    assert np.all(np.diff(norms) <= 1e-9 * scale) and norms[-1] < norms[0], norms


def test_dual_fista_alone_meets_its_certificate():
    """The FISTA stage of the general solver on its own (no active-set rounds): it stops on
    the Frank-Wolfe certificate f - f* <= 1e-10 f + 1e-12 (G scaled to max diagonal 1),
    before the iteration cap."""
    g, targets = _agreeing(8, 3, seed=21)
    c1, c2 = 0.1, 0.5
    gram = g @ g.T
    scale = gram.diagonal().max()
    amap, s_half = solvers._dual_map(targets)
    upper = np.concatenate([np.where(targets, 1.0, c1), np.full(amap.shape[1] - 8, c2)])
    x, steps = solvers._privileged_dual_fista(tf.constant(gram / scale), tf.constant(amap), tf.constant(s_half),
                                              tf.constant(upper), tf.constant(20000), tf.constant(1e-10, tf.float64),
                                              tf.constant(0))
    assert 0 < steps.numpy() < 20000
    lam = amap @ x.numpy()
    f, f_ref = lam @ gram @ lam / scale, 2.0 * _reference(g, targets, c1, c2, constraint10=False)[0] / scale
    assert f - f_ref <= 1e-10 * f + 1e-12 + 1e-9 * f_ref, (f, f_ref)  # + Clarabel's own accuracy
