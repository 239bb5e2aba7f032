"""tfaux.solvers against an independent generic solver (scipy SLSQP) and closed forms in numpy."""

import numpy as np
import pytest
import tensorflow as tf
from scipy.optimize import minimize

from tfaux import solvers


def _slsqp_simplex(objective, gradient, k, total=1.0):
    """Generic reference: min objective(a) s.t. sum a = total, 0 <= a <= total (SLSQP)."""
    result = minimize(objective, np.full(k, total / k), jac=gradient, method="SLSQP",
                      bounds=[(0.0, total)] * k,
                      constraints=[{"type": "eq", "fun": lambda a: a.sum() - total, "jac": lambda a: np.ones_like(a)}],
                      options={"ftol": 1e-12, "maxiter": 1000})
    assert result.success, result.message
    return result.x


def _reference_min_norm(gram):
    """SLSQP on alpha^T G alpha over the simplex (G rescaled to max diagonal 1: same minimiser)."""
    g = gram / gram.diagonal().max()
    return _slsqp_simplex(lambda a: a @ g @ a, lambda a: 2.0 * g @ a, len(g))


# input_signature with unknown K: this always takes the iterative path, K = 2 included.
_dynamic = tf.function(solvers.min_norm_element, input_signature=[tf.TensorSpec([None, None], tf.float64)])


def _gram(k, d, seed, ill=False):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(k, d))
    if ill:
        a *= np.linspace(1.0, 100.0, k)[:, None]  # gradient norms differing by 100x
    return a @ a.T


CASES = [(k, d, False) for k in (2, 3, 5, 10, 20, 40) for d in (2 * k + 3, max(1, k // 2))]
CASES += [(10, 23, True), (20, 10, True), (40, 83, True)]


@pytest.mark.parametrize("k,d,ill", CASES)
def test_min_norm_element_matches_slsqp(k, d, ill):
    gram = _gram(k, d, seed=100 * k + d, ill=ill)
    scale = gram.diagonal().max()
    reference = _reference_min_norm(gram)
    f_ref = reference @ gram @ reference
    for path, alpha in (("static", solvers.min_norm_element(tf.constant(gram))), ("dynamic", _dynamic(gram))):
        alpha = alpha.numpy()
        assert alpha.dtype == np.float64
        assert np.all(alpha >= 0) and abs(alpha.sum() - 1) < 1e-12, path
        f = alpha @ gram @ alpha
        # 1e-5 relative, with a floor of 1e-12 |g_max|^2 where the min norm is ~0 (0 in the hull).
        assert abs(f - f_ref) <= 1e-5 * f_ref + 1e-12 * scale, (path, f, f_ref)
        if d >= k and not ill:  # strictly convex and well conditioned: unique minimiser
            np.testing.assert_allclose(alpha, reference, rtol=0, atol=1e-5, err_msg=path)


@pytest.mark.parametrize("k,d,ill", [(10, 23, False), (20, 10, False), (40, 83, True)])
def test_active_set_refinement_alone_is_exact(k, d, ill):
    """iterations=0: no FISTA step, the active-set refinement starts from the uniform point."""
    gram = _gram(k, d, seed=7 * k + d, ill=ill)
    reference = _reference_min_norm(gram)
    f_ref = reference @ gram @ reference
    alpha = solvers.min_norm_element(tf.constant(gram), iterations=0).numpy()
    assert np.all(alpha >= 0) and abs(alpha.sum() - 1) < 1e-12
    assert abs(alpha @ gram @ alpha - f_ref) <= 1e-5 * f_ref + 1e-12 * gram.diagonal().max()


def test_float32_in_float32_out():
    gram = _gram(10, 30, seed=7)
    alpha = solvers.min_norm_element(tf.constant(gram, tf.float32))
    assert alpha.dtype == tf.float32
    np.testing.assert_allclose(alpha.numpy(), _reference_min_norm(gram), rtol=0, atol=1e-5)


def _two_task_numpy(g1, g2):
    """Sener & Koltun (2018), Algorithm 1: alpha_1 = clip((g2 - g1).g2 / ||g1 - g2||^2, 0, 1)."""
    a1 = np.clip((g2 - g1) @ g2 / ((g1 - g2) @ (g1 - g2)), 0.0, 1.0)
    return np.array([a1, 1.0 - a1])


def _pairs():
    rng = np.random.default_rng(3)
    pairs = [(rng.normal(size=6), rng.normal(size=6)) for _ in range(4)]
    pairs.append((rng.normal(size=6) * 10.0, rng.normal(size=6) * 0.1))  # ill-scaled
    g = rng.normal(size=6)
    other = rng.normal(size=6)
    other -= (other @ g) / (g @ g) * g
    small = 0.2 * g + 0.1 * other  # ||small||^2 < small.g: its projection on the segment is itself
    pairs += [(small, g), (g, small)]  # clipped: alpha = (1, 0) and (0, 1)
    return pairs


@pytest.mark.parametrize("index", range(7))
def test_two_tasks_closed_form(index):
    g1, g2 = _pairs()[index]
    expected = _two_task_numpy(g1, g2)
    if index == 5:
        np.testing.assert_array_equal(expected, [1.0, 0.0])  # the clipped cases really are clipped
    if index == 6:
        np.testing.assert_array_equal(expected, [0.0, 1.0])
    grads = tf.constant(np.stack([g1, g2]))
    alpha, direction = solvers.min_norm_combination([grads[0], grads[1]])
    np.testing.assert_allclose(alpha.numpy(), expected, rtol=0, atol=1e-10)
    np.testing.assert_allclose(direction.numpy(), expected[0] * g1 + expected[1] * g2, rtol=0, atol=1e-9)
    gram = np.stack([g1, g2]) @ np.stack([g1, g2]).T
    np.testing.assert_allclose(_dynamic(gram).numpy(), expected, rtol=0, atol=1e-6)  # the general path


def test_one_task():
    np.testing.assert_array_equal(solvers.min_norm_element(tf.constant([[4.0]])).numpy(), [1.0])
    np.testing.assert_array_equal(_dynamic(np.array([[4.0]])).numpy(), [1.0])


@pytest.mark.parametrize("dim", [1, 2, 3, 7, 15, 30])
@pytest.mark.parametrize("scale", [0.01, 1.0, 100.0])
@pytest.mark.parametrize("total", ["1", "3", "K"])
def test_project_simplex_matches_slsqp(dim, scale, total):
    total = float(dim) if total == "K" else float(total)
    rng = np.random.default_rng(dim + int(100 * scale))
    v = rng.normal(size=dim) * scale
    c = max(np.abs(v).max(), total)  # solve the same problem rescaled to O(1): P_s(v) = c P_{s/c}(v/c)
    w = v / c
    reference = c * _slsqp_simplex(lambda a: (a - w) @ (a - w), lambda a: 2.0 * (a - w), dim, total / c)
    a = solvers.project_simplex(tf.constant(v), total).numpy()
    assert np.all(a >= 0)
    assert abs(a.sum() - total) < 1e-12 * max(1.0, total)
    np.testing.assert_allclose(a, reference, rtol=0, atol=1e-5 * c)  # SLSQP at ftol 1e-12: ~1e-6 c
    assert (a - v) @ (a - v) <= (reference - v) @ (reference - v) + 1e-12 * c * c  # and never closer than ours


def test_project_simplex_float32_and_ties():
    v = tf.constant([0.5, 0.5, 0.5, -1.0], tf.float32)
    a = solvers.project_simplex(v)
    assert a.dtype == tf.float32
    np.testing.assert_allclose(a.numpy(), [1 / 3, 1 / 3, 1 / 3, 0.0], atol=1e-7)


@pytest.mark.parametrize("k", [2, 3, 6])
def test_degenerate_gram_gives_simplex_point(k):
    rng = np.random.default_rng(k)
    g = rng.normal(size=8)
    for grads in (np.zeros((k, 8)), np.tile(g, (k, 1))):  # all zero; all identical
        for alpha in (solvers.min_norm_combination(tf.constant(grads, tf.float32))[0].numpy(),
                      _dynamic(grads @ grads.T).numpy()):
            assert np.all(np.isfinite(alpha)) and np.all(alpha >= 0)
            np.testing.assert_allclose(alpha.sum(), 1.0, atol=1e-6)
    # One zero gradient: the min norm is 0, reached only at that vertex.
    grads = rng.normal(size=(k, 8))
    grads[k // 2] = 0.0
    alpha, direction = solvers.min_norm_combination(tf.constant(grads))
    np.testing.assert_allclose(alpha.numpy(), np.eye(k)[k // 2], atol=1e-9)
    np.testing.assert_allclose(direction.numpy(), 0.0, atol=1e-9)


def test_min_norm_element_inside_tf_function_traces_once():
    traces = []

    @tf.function
    def solve(gram):
        traces.append(1)
        return solvers.min_norm_element(gram)

    for seed in (1, 2):
        gram = _gram(5, 12, seed)
        alpha = solve(tf.constant(gram, tf.float32)).numpy()
        np.testing.assert_allclose(alpha, _reference_min_norm(gram), rtol=0, atol=1e-5)
    assert len(traces) == 1


def test_min_norm_combination_in_replica_context(two_devices):
    grads = [np.random.default_rng(s).normal(size=(4, 9)).astype("float32") for s in (5, 6)]

    @tf.function
    def step(per_replica):
        return two_devices.run(solvers.min_norm_combination, args=(per_replica,))

    values = two_devices.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(grads[ctx.replica_id_in_sync_group]))
    alphas, directions = step(values)
    for g, alpha, direction in zip(grads, two_devices.experimental_local_results(alphas),
                                   two_devices.experimental_local_results(directions)):
        g = g.astype(np.float64)
        reference = _reference_min_norm(g @ g.T)
        np.testing.assert_allclose(alpha.numpy(), reference, rtol=0, atol=1e-5)
        np.testing.assert_allclose(direction.numpy(), reference @ g, rtol=0, atol=1e-5)
