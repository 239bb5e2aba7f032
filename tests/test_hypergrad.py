"""Implicit hypergradients against a problem with a closed-form inner solution.

Inner: weighted ridge regression  L_t = (1/n) sum_i w_i (x_i.theta - y_i)^2 + lam |theta|^2,
w_i = softplus(phi_i)  =>  theta*(phi) = (X^T W X + n lam I)^{-1} X^T W y.
Outer: L_dev = (1/m) sum_j (x_j.theta - y_j)^2.
The reference gradient is a central finite difference of L_dev(theta*(phi)), in float64.
"""

import numpy as np
import pytest
import tensorflow as tf

from tfaux import hypergrad

N, D, M, LAM = 24, 5, 12, 0.1


def _problem(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, D))
    y = x @ rng.normal(size=D) + 0.5 * rng.normal(size=N)
    xd = rng.normal(size=(M, D))
    yd = xd @ rng.normal(size=D) * 0.5 + 0.1 * rng.normal(size=M)
    phi = rng.normal(scale=0.5, size=N)
    return x, y, xd, yd, phi


def _softplus(z):
    return np.log1p(np.exp(z))


def _theta_star(x, y, phi):
    w = _softplus(phi)
    return np.linalg.solve(x.T @ (w[:, None] * x) + N * LAM * np.eye(D), x.T @ (w * y))


def _outer(x, y, xd, yd, phi):
    t = _theta_star(x, y, phi)
    return np.mean((xd @ t - yd) ** 2)


def _finite_difference(x, y, xd, yd, phi, eps=1e-6):
    grad = np.zeros_like(phi)
    for i in range(len(phi)):
        e = np.zeros_like(phi)
        e[i] = eps
        grad[i] = (_outer(x, y, xd, yd, phi + e) - _outer(x, y, xd, yd, phi - e)) / (2 * eps)
    return grad


def _hyper(solver, alpha=None, seed=0):
    x, y, xd, yd, phi0 = _problem(seed)
    theta = tf.Variable(_theta_star(x, y, phi0))
    phi = tf.Variable(phi0)
    x, y, xd, yd = map(tf.constant, (x, y, xd, yd))

    def train_loss():
        w = tf.nn.softplus(phi)
        return tf.reduce_mean(w * tf.square(tf.linalg.matvec(x, theta) - y)) + LAM * tf.reduce_sum(theta ** 2)

    def dev_loss():
        return tf.reduce_mean(tf.square(tf.linalg.matvec(xd, theta) - yd))

    (g,), _ = hypergrad.implicit_hypergradient(train_loss, dev_loss, [theta], [phi], solver, alpha=alpha)
    return g.numpy()


def _hessian_lambda_max(seed=0):
    x, y, _, _, phi = _problem(seed)
    h = 2 * x.T @ (_softplus(phi)[:, None] * x) / N + 2 * LAM * np.eye(D)
    return np.linalg.eigvalsh(h).max()


def _relative(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def test_exact_implicit_gradient_equals_finite_differences():
    reference = _finite_difference(*_problem())
    exact = _hyper(lambda hvp, v, alpha=None: hypergrad.exact_inverse_hvp(hvp, v))
    assert _relative(exact, reference) < 1e-6


def test_conjugate_gradient_matches_exact():
    exact = _hyper(lambda hvp, v, alpha=None: hypergrad.exact_inverse_hvp(hvp, v))
    cg = _hyper(hypergrad.ConjugateGradient(iterations=D + 2))
    assert _relative(cg, exact) <= 1e-4


def test_neumann_error_falls_with_terms():
    exact = _hyper(lambda hvp, v, alpha=None: hypergrad.exact_inverse_hvp(hvp, v))
    alpha = 1.0 / _hessian_lambda_max()
    errors = [_relative(_hyper(hypergrad.Neumann(terms=k), alpha=alpha), exact) for k in (0, 3, 10, 50, 400)]
    assert all(later < earlier for earlier, later in zip(errors, errors[1:])), errors
    assert errors[-1] <= 1e-2, errors


def test_neumann_scaling_is_the_true_inverse():
    """alpha * sum_j (I - alpha H)^j v -> H^{-1} v: for H = c I the K=inf limit is v / c."""
    c, alpha = 4.0, 0.1
    out = hypergrad.Neumann(terms=400)(lambda u: [c * t for t in u], [tf.constant([1.0, -2.0], tf.float64)],
                                       alpha=alpha)
    np.testing.assert_allclose(out[0].numpy(), [0.25, -0.5], rtol=1e-9)


def test_neumann_without_alpha_is_a_clear_error():
    with pytest.raises(ValueError, match="alpha"):
        hypergrad.Neumann(terms=2)(lambda u: u, [tf.constant([1.0])])
