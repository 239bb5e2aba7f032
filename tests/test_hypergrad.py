"""Implicit hypergradients against a problem with a closed-form inner solution
(tfaux.closed_form.WeightedRidge): the reference gradient is a central finite
difference of L_dev(theta*(phi)) in float64, independent of tfaux.hypergrad."""

import numpy as np
import pytest
import tensorflow as tf

from tfaux import hypergrad
from tfaux.closed_form import WeightedRidge, relative_error


def exact(hvp, v, alpha=None):
    return hypergrad.exact_inverse_hvp(hvp, v)


def _hyper(problem, solver, alpha=None):
    theta = tf.Variable(problem.theta_star())
    phi = tf.Variable(problem.phi)
    train_loss, dev_loss = problem.tf_losses(theta, phi)
    (g,), _ = hypergrad.implicit_hypergradient(train_loss, dev_loss, [theta], [phi], solver, alpha=alpha)
    return g.numpy()


def test_exact_implicit_gradient_equals_finite_differences():
    problem = WeightedRidge()
    assert relative_error(_hyper(problem, exact), problem.finite_difference()) < 1e-6


def test_conjugate_gradient_matches_exact():
    problem = WeightedRidge()
    cg = _hyper(problem, hypergrad.ConjugateGradient(iterations=problem.d + 2))
    assert relative_error(cg, _hyper(problem, exact)) <= 1e-4


def test_neumann_error_falls_with_terms():
    problem = WeightedRidge()
    reference = _hyper(problem, exact)
    alpha = 1.0 / np.linalg.eigvalsh(problem.hessian()).max()
    errors = [relative_error(_hyper(problem, hypergrad.Neumann(terms=k), alpha=alpha), reference)
              for k in (0, 3, 10, 50, 400)]
    assert all(later < earlier for earlier, later in zip(errors, errors[1:])), errors
    assert errors[-1] <= 1e-2, errors


def test_neumann_scaling_is_the_true_inverse():
    """alpha * sum_j (I - alpha H)^j v -> H^{-1} v: for H = c I the limit is v / c."""
    c, alpha = 4.0, 0.1
    out = hypergrad.Neumann(terms=400)(lambda u: [c * t for t in u], [tf.constant([1.0, -2.0], tf.float64)],
                                       alpha=alpha)
    np.testing.assert_allclose(out[0].numpy(), [0.25, -0.5], rtol=1e-9)


def test_neumann_without_alpha_is_a_clear_error():
    with pytest.raises(ValueError, match="alpha"):
        hypergrad.Neumann(terms=2)(lambda u: u, [tf.constant([1.0])])
