"""tfaux.solvers.privileged_min_norm (PTL, seed 004: Song et al., ICCV 2021) against a generic
QP solver (cvxpy + Clarabel on the paper's full (alpha, beta) problem, Eq. 12), MGDA and its
two-task closed form, and Theorem 1 of the paper (primal certificate by an LP in cvxpy)."""

import numpy as np
import pytest
import tensorflow as tf

from tfaux import solvers

cp = pytest.importorskip("cvxpy")

_CLARABEL = dict(solver="CLARABEL", tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10, max_iter=500)


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


def _reference(g, targets, c1, c2):
    """Eq. (12) of seed 004 literally, in (alpha, beta), by a generic conic solver."""
    it, ip = np.flatnonzero(targets), np.flatnonzero(~targets)
    alpha = cp.Variable(len(targets))
    cons = [cp.sum(alpha) == 1, alpha >= 0]
    direction = g.T @ alpha
    if len(ip):
        beta = cp.Variable((len(it), len(ip)))
        cons += [alpha[ip] <= c1, beta >= 0, beta <= c2, cp.sum(beta, axis=0) <= alpha[ip]]
        direction = direction + sum(g[i] * cp.sum(beta[a, :]) for a, i in enumerate(it)) \
            - sum(g[j] * cp.sum(beta[:, b]) for b, j in enumerate(ip))
    problem = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(direction)), cons)
    problem.solve(**_CLARABEL)
    assert problem.status == "optimal", problem.status
    beta_value = beta.value if len(ip) else np.zeros((len(it), 0))
    return problem.value, _effective(alpha.value, beta_value, targets)


def _assert_feasible(alpha, beta, targets, c1, c2, tol=1e-6):
    ip = ~targets
    assert beta.shape == (targets.sum(), ip.sum())
    assert abs(alpha.sum() - 1.0) <= tol and np.all(alpha >= -tol)
    assert np.all(alpha[ip] <= c1 + tol)
    assert np.all(beta >= -tol) and np.all(beta <= c2 + tol)
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


def _primal_certificate(g, targets, c1, c2, d):
    """Primal of Eq. (12) at a fixed direction d (an LP, solved by cvxpy):

        min  v + C1 sum_j xi_j + C2 sum_ij eta_ij
        s.t. <g_i, d> <= v                            i in I_t
             <g_j, d> + zeta_j <= v + xi_j            j in I_p
             <g_i, d> <= <g_j, d> + eta_ij + zeta_j   i in I_t, j in I_p
             xi, eta, zeta >= 0.

    With zeta = 0 this is the paper's Problem (11); zeta_j is the primal variable of the
    dual constraint (10), sum_i beta_ij <= alpha_j (its Lagrangian gives C1 - alpha_j >= 0,
    C2 - beta_ij >= 0, alpha_j - sum_i beta_ij >= 0, sum alpha = 1 and
    d = -(sum alpha g + sum beta (g_i - g_j)): exactly Eq. 12)."""
    it, ip = np.flatnonzero(targets), np.flatnonzero(~targets)
    s = g @ d
    v, xi = cp.Variable(), cp.Variable(len(ip), nonneg=True)
    eta, zeta = cp.Variable((len(it), len(ip)), nonneg=True), cp.Variable(len(ip), nonneg=True)
    cons = [s[it] <= v, s[ip] + zeta <= v + xi]
    cons += [s[i] <= s[j] + eta[a, b] + zeta[b] for a, i in enumerate(it) for b, j in enumerate(ip)]
    problem = cp.Problem(cp.Minimize(v + c1 * cp.sum(xi) + c2 * cp.sum(eta)), cons)
    problem.solve(solver="CLARABEL")
    assert problem.status == "optimal", problem.status
    return problem.value, v.value, xi.value, eta.value


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
        g = _gradients(t, 2 * t + 3, seed)
        targets = _split(t, n_targets, seed)
        d = -g.T @ solvers.privileged_min_norm(tf.constant(g @ g.T), targets, c1, c2)[2].numpy()
        norm2 = d @ d
        assert norm2 > 1e-6 * np.max(np.sum(g * g, axis=1))  # d* != 0 on these instances
        value, v, xi, eta = _primal_certificate(g, targets, c1, c2, d)
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


def test_theorem_1_pareto_critical():
    """Theorem 1 (1): 0 in the hull of the target gradients gives d* = 0 whatever C1, C2."""
    rng = np.random.default_rng(5)
    a = rng.normal(size=9)
    g = np.stack([a, -2.0 * a, rng.normal(size=9), rng.normal(size=9)])
    for c1, c2 in ((0.0, 0.0), (0.3, 1.0), (1.0, 10.0)):
        lam = solvers.privileged_min_norm(tf.constant(g @ g.T), [True, True, False, False], c1, c2)[2].numpy()
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


def test_tf_function_matches_eager():
    g = _gradients(12, 27, seed=3)
    targets = _split(12, 5, seed=3)
    gram = tf.constant(g @ g.T)
    eager = solvers.privileged_min_norm(gram, targets, 0.1, 0.5)
    graph = tf.function(lambda x: solvers.privileged_min_norm(x, targets, 0.1, 0.5))(gram)
    for a, b in zip(eager, graph):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=0, atol=1e-10)


def test_replica_context(two_devices):
    g = _gradients(6, 15, seed=4)
    targets = [True, False, True, False, False, True]
    expected = solvers.privileged_min_norm(tf.constant(g @ g.T), targets, 0.2)[2].numpy()

    @tf.function
    def step(grads):
        return two_devices.run(lambda x: solvers.privileged_combination(x, targets, 0.2)[0], args=(grads,))

    for lam in two_devices.experimental_local_results(step(tf.constant(g))):
        np.testing.assert_allclose(lam.numpy(), expected, rtol=0, atol=1e-10)


def test_combination_and_float32():
    g = _gradients(6, 15, seed=8)
    targets = [False, True, True, False, False, True]
    lam, d = solvers.privileged_combination([tf.constant(x, tf.float32) for x in g], targets, 0.1, 1.0)
    assert lam.dtype == d.dtype == tf.float32
    _, lam_ref = _reference(g, np.array(targets), 0.1, 1.0)
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
