"""The model's own upper-step path against the closed-form weighted ridge problem.

AuxiliaryModel(identity encoder, linear L2-regularised head, N-JTDS) has exactly
the inner objective of tfaux.closed_form.WeightedRidge (N-JTDS weight
softplus(W_i) = the ridge weight), so its hypergradient must equal central
finite differences of L_dev(theta*(W)).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfaux
from tfaux import hypergrad
from tfaux.closed_form import WeightedRidge, relative_error, softplus


def _model(solver, upper_optimizer=None, hvp_chunks=1):
    problem = WeightedRidge()
    head = lambda: keras.layers.Dense(1, use_bias=False, kernel_regularizer=keras.regularizers.L2(problem.lam))  # noqa: E731
    task = tfaux.Task("y", role="primary", kind="regression", head_fn=head)
    model = tfaux.AuxiliaryModel(keras.layers.Identity(), [task], tfaux.strategies.NJTDS(),
                                 input_spec=tf.TensorSpec((problem.d,), tf.float32), num_examples=problem.n,
                                 upper_interval=1, solver=solver,
                                 upper=tfaux.upper.UpperSettings(clipnorm=0, weight_decay=0.0), hvp_chunks=hvp_chunks)
    model.compile(optimizer=keras.optimizers.SGD(0.01), upper_optimizer=upper_optimizer)
    model.method.table.assign(problem.phi[:, None].astype("float32"))
    model.heads[0].kernel.assign(problem.theta_star()[:, None].astype("float32"))
    batch = {"x": tf.constant(problem.x, tf.float32), "labels": {"y": tf.constant(problem.y, tf.float32)},
             "id": tf.range(problem.n, dtype=tf.int64)}
    dev = {"x": tf.constant(problem.x_dev, tf.float32), "labels": {"y": tf.constant(problem.y_dev, tf.float32)}}
    return model, batch, dev, problem


def test_model_hypergradient_conjugate_gradient_matches_finite_differences():
    """Eagerly and traced."""
    model, batch, dev, problem = _model(hypergrad.ConjugateGradient(iterations=10))
    for hypergradient in (model.hypergradient, tf.function(model.hypergradient)):
        (hyper,), _ = hypergradient(batch, dev)
        assert relative_error(hyper.numpy()[:, 0], problem.finite_difference()) < 2e-3


def test_model_hypergradient_neumann_matches_with_many_terms():
    alpha = float(1.0 / np.linalg.eigvalsh(WeightedRidge().hessian()).max())
    few, batch, dev, problem = _model(hypergrad.Neumann(terms=1, alpha=alpha))
    many, _, _, _ = _model(hypergrad.Neumann(terms=300, alpha=alpha))
    reference = problem.finite_difference()
    err_few = relative_error(few.hypergradient(batch, dev)[0][0].numpy()[:, 0], reference)
    err_many = relative_error(many.hypergradient(batch, dev)[0][0].numpy()[:, 0], reference)
    assert err_many < err_few
    assert err_many <= 1e-2


def test_fit_upper_step_moves_phi_along_the_reference_scaled_hypergradient():
    """Through model.fit, in the reference scale of tfaux.upper: with SGD(eta) and the
    lower learning rate 0.01 as alpha, phi_new = phi - eta * (dL_dev/dphi) / 0.01."""
    eta = 0.5
    model, batch, dev, problem = _model(hypergrad.ConjugateGradient(iterations=10),
                                        upper_optimizer=keras.optimizers.SGD(eta))
    before = model.method.table.numpy()[:, 0].copy()
    model.optimizer.iterations.assign(1)  # step > 0 and step % M == 0: the upper step is due
    model.fit(tf.data.Dataset.from_tensors({"train": batch, "dev": dev}), epochs=1, verbose=0)
    step = (before - model.method.table.numpy()[:, 0]) / eta * 0.01
    assert relative_error(step, problem.finite_difference()) < 2e-3
    scaled_norm = np.linalg.norm(problem.finite_difference()) / 0.01
    assert abs(model.hypergrad_norm.numpy() - scaled_norm) < 2e-3 * scaled_norm


def test_due_step_shares_its_pass_and_updates_theta_with_phi_before_the_upper_update():
    """A due step on the exact path is one pass (fused_step): phi moves by the hypergradient at
    theta* (checked above) and theta by -lr * grad L_t(theta*, phi_old), which is zero in closed
    form; a lower step taken with the updated phi (two passes) would move theta by 0.01 * the
    closed-form gradient at phi_new, checked here to be far larger than the tolerance."""
    model, batch, dev, problem = _model(hypergrad.ConjugateGradient(iterations=10),
                                        upper_optimizer=keras.optimizers.SGD(0.5))
    assert model.fuses_lower_step
    model.optimizer.iterations.assign(1)
    model.fit(tf.data.Dataset.from_tensors({"train": batch, "dev": dev}), epochs=1, verbose=0)
    theta_star = problem.theta_star()
    phi_new = model.method.table.numpy()[:, 0].astype(np.float64)
    residual = problem.x @ theta_star - problem.y
    gradient_at_phi_new = 2 * problem.x.T @ (softplus(phi_new) * residual) / problem.n + 2 * problem.lam * theta_star
    moved = np.linalg.norm(model.heads[0].kernel.numpy()[:, 0] - theta_star)
    assert moved < 1e-5
    assert np.linalg.norm(0.01 * gradient_at_phi_new) > 100 * 1e-5


def test_reference_update_clips_then_adds_weight_decay():
    """g = clip(h / alpha, c) + wd * phi, computed here with numpy from the true hypergradient."""
    alpha, clip, wd = 0.01, 0.05, 0.3
    model, batch, dev, problem = _model(hypergrad.ConjugateGradient(iterations=10))
    model.upper = tfaux.upper.UpperSettings(clipnorm=clip, weight_decay=wd)
    (hyper,), _ = model.hypergradient(batch, dev)
    (g,), norm = model.upper_gradient([hyper])
    scaled = problem.finite_difference() / alpha
    assert np.linalg.norm(scaled) > clip  # the clip is active
    expected = scaled * clip / np.linalg.norm(scaled) + wd * problem.phi
    assert relative_error(g.numpy()[:, 0], expected) < 2e-3
    assert abs(norm.numpy() - np.linalg.norm(scaled)) < 2e-3 * np.linalg.norm(scaled)


def test_non_finite_hypergradient_skips_the_upper_step():
    model, batch, dev, _ = _model(hypergrad.ConjugateGradient(iterations=3),
                                  upper_optimizer=keras.optimizers.SGD(0.5))
    dev = {"x": dev["x"], "labels": {"y": dev["labels"]["y"] * np.nan}}
    before = model.method.table.numpy().copy()
    model.optimizer.iterations.assign(1)
    model.fit(tf.data.Dataset.from_tensors({"train": batch, "dev": dev}), epochs=1, verbose=0)
    np.testing.assert_array_equal(model.method.table.numpy(), before)
    assert model.upper_skipped.numpy() == 1.0


def test_sub_batched_hypergradient_matches_finite_differences():
    """Three interleaved sub-batches of the separable ridge objective: exact, eagerly and
    traced (the traced path is the sequential while loop)."""
    model, batch, dev, problem = _model(hypergrad.ConjugateGradient(iterations=10), hvp_chunks=3)
    reference = problem.finite_difference()
    (eager,), _ = model.hypergradient(batch, dev)
    (traced,), _ = tf.function(model.hypergradient)(batch, dev)
    assert relative_error(eager.numpy()[:, 0], reference) < 2e-3
    assert relative_error(traced.numpy()[:, 0], reference) < 2e-3


def test_sub_batched_neumann_matches_finite_differences():
    """The Neumann state machine in the sub-batch loop (solver steps, then the mixed term, in one
    while loop), traced, with enough terms to converge."""
    alpha = float(1.0 / np.linalg.eigvalsh(WeightedRidge().hessian()).max())
    model, batch, dev, problem = _model(hypergrad.Neumann(terms=300, alpha=alpha), hvp_chunks=3)
    (hyper,), _ = tf.function(model.hypergradient)(batch, dev)
    assert relative_error(hyper.numpy()[:, 0], problem.finite_difference()) <= 1e-2


def test_sub_batches_need_an_iterative_solver():
    with pytest.raises(ValueError, match="hvp_chunks=2 needs an IterativeSolver"):
        _model(lambda hvp, v, alpha=None: hypergrad.exact_inverse_hvp(hvp, v), hvp_chunks=2)
