"""ARML (seed 003) against independent computations: a generic QP for the projection and the
gradient-matching minimiser, the closed form of the noisy-gradient problem, per-task gradients
from separate tapes, the Langevin noise's variance, and two replicas = one device."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy.optimize import minimize

import tfaux
from tfaux.solvers import project_simplex
from tfaux.strategies.arml import ARML

import toy
from test_mgda import LR, _applied_gradient, _tape_gradients, _three_task_batch, _three_task_model


def _qp_on_a(objective, k):
    """argmin of a convex objective over A = {sum a = K, a >= 0} by SLSQP."""
    result = minimize(objective, np.full(k, 1.0), method="SLSQP", bounds=[(0, None)] * k,
                      constraints=[{"type": "eq", "fun": lambda a: a.sum() - k}], options={"ftol": 1e-14,
                                                                                          "maxiter": 500})
    return result.x


@pytest.mark.parametrize("seed", range(4))
def test_the_projection_onto_a_is_the_generic_qp_solution(seed):
    v = np.random.default_rng(seed).normal(scale=2.0, size=5)
    got = project_simplex(tf.constant(v), total=5.0).numpy()
    np.testing.assert_allclose(got, _qp_on_a(lambda a: np.sum((a - v) ** 2), 5), atol=1e-6)


def _strategy(**kwargs):
    s = ARML(**kwargs)
    s.setup(toy.tasks() + [tfaux.Task("aux2", kind="binary"), tfaux.Task("aux3", kind="binary")], 4, 100)
    return s


def test_alpha_reaches_the_minimiser_of_the_gradient_matching_objective():
    """Fixed gradients: iterated projected steps (Eq. A11) reach argmin_A ||g_m - sum a_k g_k||^2 (SLSQP)."""
    rng = np.random.default_rng(0)
    g_main = rng.normal(size=30) / np.sqrt(30)
    aux = np.stack([g_main + rng.normal(scale=s, size=30) / np.sqrt(30) for s in (0.3, 1.0, 3.0)])
    s = _strategy(weight_lr=0.05)
    alpha = tf.ones(3)
    b, gram = tf.constant(aux @ g_main, tf.float32), tf.constant(aux @ aux.T, tf.float32)
    for _ in range(3000):
        alpha = s.alpha_step(alpha, b, gram)
    best = _qp_on_a(lambda a: np.sum((g_main - a @ aux) ** 2), 3)
    np.testing.assert_allclose(alpha.numpy(), best, atol=2e-3)


def test_alpha_ranks_noisy_auxiliaries_by_their_noise_as_the_closed_form_says():
    """g_k = g_main + sigma_k n_k with fresh noise each step: E J = (1 - K)^2 |g|^2 + sum a_k^2 sigma_k^2 E|n|^2
    on A, minimised by a_k = K sigma_k^-2 / sum_j sigma_j^-2; SGD on the sampled J gets there."""
    rng = np.random.default_rng(1)
    d, sigmas = 400, np.array([0.5, 1.0, 2.0])
    g_main = rng.normal(size=d) / np.sqrt(d)
    s = _strategy(weight_lr=0.02)
    alpha, seen = tf.ones(3), []
    for step in range(4000):
        aux = g_main + sigmas[:, None] * rng.normal(size=(3, d)) / np.sqrt(d)
        alpha = s.alpha_step(alpha, tf.constant(aux @ g_main, tf.float32), tf.constant(aux @ aux.T, tf.float32))
        if step >= 2000:
            seen.append(alpha.numpy())
    expected = 3 * sigmas ** -2 / np.sum(sigmas ** -2)
    mean = np.mean(seen, 0)
    assert np.all(np.diff(mean) < 0), mean  # the least noisy auxiliary weighs most
    np.testing.assert_allclose(mean, expected, atol=0.08)


def test_one_model_step_moves_alpha_by_the_projected_gradient_of_separate_tapes():
    """interval=1: after one step alpha = Proj_A(1 + 2 lr (b - G 1)), b and G from the shared
    gradients of each task computed by its own GradientTape; theta moved by L_main + sum alpha L_k
    with alpha = 1 (the step's weights, before the update)."""
    model = _three_task_model(ARML(interval=1, weight_lr=0.05))
    batch = _three_task_batch()
    g = _tape_gradients(model, batch, model.theta.shared)
    everything = _tape_gradients(model, batch, model.theta.all)
    b, gram = g[1:] @ g[0], g[1:] @ g[1:].T
    expected = project_simplex(tf.constant(1.0 + 2 * 0.05 * (b - gram @ np.ones(2))), total=2.0).numpy()
    applied = _applied_gradient(model, batch)
    np.testing.assert_allclose(model.method.alpha.numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(np.concatenate([a.ravel() for a in applied]), everything.sum(0), atol=2e-6)
    assert abs(model.method.alpha.numpy().sum() - 2.0) < 1e-5 and np.all(model.method.alpha.numpy() >= 0)


def test_with_a_labelled_stream_the_main_task_comes_from_it():
    """main_data = "labelled": fed {"train", "dev"}, b = G_aux(train) g_main(dev), and theta moves by
    grad L_main(dev) + sum_k alpha_k grad L_k(train) (S4L: the main term on the labelled batch)."""
    model = _three_task_model(ARML(interval=1, weight_lr=0.05))
    batch = _three_task_batch()
    labelled = {k: ({t: a[::-1].copy() for t, a in v.items()} if isinstance(v, dict) else v[::-1].copy())
                for k, v in _three_task_batch().items()}
    labelled["labels"]["main"] = 1 - labelled["labels"]["main"]  # another main-task batch
    g = _tape_gradients(model, batch, model.theta.shared)
    g_main = _tape_gradients(model, labelled, model.theta.shared)[0]
    everything = _tape_gradients(model, batch, model.theta.all)[1:].sum(0) + _tape_gradients(
        model, labelled, model.theta.all)[0]
    b, gram = g[1:] @ g_main, g[1:] @ g[1:].T
    expected = project_simplex(tf.constant(1.0 + 2 * 0.05 * (b - gram @ np.ones(2))), total=2.0).numpy()
    assert not np.allclose(g_main, g[0])
    before = [v.numpy().copy() for v in model.theta.all]
    model.fit(tf.data.Dataset.from_tensors({"train": batch, "dev": labelled}), epochs=1, verbose=0)
    np.testing.assert_allclose(model.method.alpha.numpy(), expected, atol=1e-5)
    applied = np.concatenate([((b0 - v.numpy()) / LR).ravel() for b0, v in zip(before, model.theta.all)])
    np.testing.assert_allclose(applied, everything, atol=2e-6)


def _masked_out(batch):
    """Every label masked: zero loss, zero gradient (theta moves by the noise alone)."""
    return {**batch, "mask": {k: np.zeros_like(v) for k, v in batch["mask"].items()}}


def test_langevin_noise_has_variance_2_eps_temperature_and_stops_once_alpha_converged():
    eps, temperature = 0.1, 0.5
    keras.utils.set_random_seed(0)
    strategy = ARML(algorithm=1, interval=1, temperature=temperature, patience=3)
    model = toy.model(strategy, lr=eps, encoder=keras.Sequential([keras.layers.Dense(512)]))
    batch = _masked_out(toy.examples())
    data = tf.data.Dataset.from_tensors({k: (v[:32] if not isinstance(v, dict) else {t: a[:32] for t, a in v.items()})
                                         for k, v in batch.items()})
    moves = []
    for _ in range(5):
        before = np.concatenate([v.numpy().ravel() for v in model.theta.all])
        model.fit(data, epochs=1, verbose=0)
        moves.append(np.concatenate([v.numpy().ravel() for v in model.theta.all]) - before)
    # Zero gradients leave alpha where it is, so it counts as converged after 3 updates.
    for move in moves[:3]:
        assert move.var() == pytest.approx(2 * eps * temperature, rel=0.05) and abs(move.mean()) < 0.01
    assert float(model.method.converged.numpy()) == 1.0
    for move in moves[3:]:
        np.testing.assert_array_equal(move, 0.0)


def test_two_replicas_equal_one_device_with_langevin_noise(two_devices):
    """Two replicas draw the same noise (a function of seed, step and variable): theta and alpha
    end where one device ends."""
    results = []
    for strategy in (tf.distribute.OneDeviceStrategy("/cpu:0"), two_devices):
        with strategy.scope():
            model = _three_task_model(ARML(algorithm=1, interval=2, temperature=0.01, patience=50), seed=4)
        data = tf.data.Dataset.from_tensor_slices(_three_task_batch()).batch(16, drop_remainder=True)
        model.fit(data, epochs=2, verbose=0)
        results.append(model.get_weights())
    for a, b in zip(*results):
        np.testing.assert_allclose(b, a, atol=2e-5, rtol=1e-4)


def test_arml_refuses_bad_arguments():
    for kwargs in (dict(interval=0), dict(weight_lr=-1), dict(algorithm=3), dict(temperature=-1), dict(patience=0)):
        with pytest.raises(ValueError, match="ARML"):
            ARML(**kwargs)


def test_the_app_trains_arml_with_rotation_and_exemplar_on_a_labelled_stream(tmp_path, parse):
    from apps import experiment
    metrics = experiment.run(parse("--method=arml", "--exemplar", "--label_fraction=0.2", "--epochs=1",
                                   "--batch_size=64", "--method_args=interval=4", "--verbose=0",
                                   f"--output_dir={tmp_path}"))
    assert metrics["status"] == "ok" and 0 <= metrics["test"] <= 1
    assert set(metrics["history"]) >= {"rotation_weight", "exemplar_weight"}
    weights = [metrics["history"][f"{t}_weight"][-1] for t in ("rotation", "exemplar")]
    assert abs(sum(weights) - 2.0) < 1e-3 and weights != [1.0, 1.0], weights  # alpha moved, stayed in A


def test_uniform_takes_its_main_loss_from_the_labelled_stream_with_fixed_weights():
    """S4L Uniform (`uniform`: Equal with the labelled stream): theta moves by grad L_main(labelled)
    + sum_k lambda_k grad L_k(train), from separate tapes, with lambda fixed (here 0.5 and 2)."""
    from tfaux.strategies import get
    strategy = get("uniform", task_weights={"aux": 0.5, "aux2": 2.0})
    model = _three_task_model(strategy)
    assert strategy.second_stream == "train"
    batch = _three_task_batch()
    labelled = {k: ({t: a[::-1].copy() for t, a in v.items()} if isinstance(v, dict) else v[::-1].copy())
                for k, v in _three_task_batch().items()}
    labelled["labels"]["main"] = 1 - labelled["labels"]["main"]
    train = _tape_gradients(model, batch, model.theta.all)
    expected = 0.5 * train[1] + 2.0 * train[2] + _tape_gradients(model, labelled, model.theta.all)[0]
    before = [v.numpy().copy() for v in model.theta.all]
    model.fit(tf.data.Dataset.from_tensors({"train": batch, "dev": labelled}), epochs=1, verbose=0)
    applied = np.concatenate([((b0 - v.numpy()) / LR).ravel() for b0, v in zip(before, model.theta.all)])
    np.testing.assert_allclose(applied, expected, atol=2e-6)
