"""The model's own upper-step path against the closed-form weighted ridge problem.

AuxiliaryModel(identity encoder, linear L2-regularised head, N-JTDS) has the inner
objective (1/n) sum_i softplus(W_i) (x_i.theta - y_i)^2 + lam |theta|^2, whose
minimiser is closed-form; the hypergradient of the dev loss must equal central
finite differences of L_dev(theta*(W)).
"""

import keras
import numpy as np
import tensorflow as tf

import tfaux
from tfaux import hypergrad

from test_hypergrad import LAM, N, _finite_difference, _problem, _relative, _theta_star


def _model(solver, upper_interval=1, upper_optimizer=None, lr=0.01):
    head = lambda: keras.layers.Dense(1, use_bias=False, kernel_regularizer=keras.regularizers.L2(LAM))  # noqa: E731
    task = tfaux.Task("y", role="primary", kind="regression", head_fn=head)
    model = tfaux.AuxiliaryModel(keras.layers.Identity(), [task], tfaux.strategies.NJTDS(),
                                 input_spec=tf.TensorSpec((5,), tf.float32), num_examples=N,
                                 upper_interval=upper_interval, solver=solver, upper_clipnorm=None)
    model.compile(optimizer=keras.optimizers.SGD(lr), upper_optimizer=upper_optimizer)
    x, y, xd, yd, phi = _problem()
    model.scheduler.table.assign(phi[:, None].astype("float32"))
    model.heads[0].kernel.assign(_theta_star(x, y, phi)[:, None].astype("float32"))
    batch = {"x": tf.constant(x, tf.float32), "labels": {"y": tf.constant(y, tf.float32)},
             "id": tf.range(N, dtype=tf.int64)}
    dev = {"x": tf.constant(xd, tf.float32), "labels": {"y": tf.constant(yd, tf.float32)}}
    return model, batch, dev, _finite_difference(x, y, xd, yd, phi)


def test_model_hypergradient_conjugate_gradient_matches_finite_differences():
    model, batch, dev, reference = _model(hypergrad.ConjugateGradient(iterations=10))
    (hyper,), norm, _ = model.hypergradient(batch, dev)
    assert _relative(hyper.numpy()[:, 0], reference) < 2e-3
    np.testing.assert_allclose(norm.numpy(), np.linalg.norm(hyper.numpy()), rtol=1e-5)


def test_model_hypergradient_neumann_matches_with_many_terms():
    x, _, _, _, phi = _problem()
    h = 2 * x.T @ (np.log1p(np.exp(phi))[:, None] * x) / N + 2 * LAM * np.eye(x.shape[1])
    alpha = float(1.0 / np.linalg.eigvalsh(h).max())
    few, batch, dev, reference = _model(hypergrad.Neumann(terms=1, alpha=alpha))
    many, _, _, _ = _model(hypergrad.Neumann(terms=300, alpha=alpha))
    err_few = _relative(few.hypergradient(batch, dev)[0][0].numpy()[:, 0], reference)
    err_many = _relative(many.hypergradient(batch, dev)[0][0].numpy()[:, 0], reference)
    assert err_many < err_few
    assert err_many <= 1e-2


def test_fit_upper_step_moves_phi_along_the_true_hypergradient():
    """Through model.fit: with SGD(eta) as upper optimizer, phi_new = phi - eta * dL_dev/dphi."""
    eta = 0.5
    model, batch, dev, reference = _model(hypergrad.ConjugateGradient(iterations=10),
                                          upper_optimizer=keras.optimizers.SGD(eta))
    before = model.scheduler.table.numpy()[:, 0].copy()
    model.optimizer.iterations.assign(1)  # step > 0 and step % M == 0: the upper step is due
    data = tf.data.Dataset.from_tensors({"train": batch, "dev": dev})
    model.fit(data, epochs=1, verbose=0)
    step = (before - model.scheduler.table.numpy()[:, 0]) / eta
    assert _relative(step, reference) < 2e-3
