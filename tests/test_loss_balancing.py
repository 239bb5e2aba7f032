"""Loss-balancing baselines (Uncertainty, DWA, AdaLoss, GradNorm) against their papers'
formulas, recomputed independently (closed forms, numpy, finite differences)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfaux
from tfaux.strategies.adaloss import AdaLoss
from tfaux.strategies.base import Context
from tfaux.strategies.dwa import DWA
from tfaux.strategies.gradnorm import GradNorm
from tfaux.strategies.uncertainty import Uncertainty

import toy

METHODS = {"uncertainty": Uncertainty, "dwa": DWA, "adaloss": AdaLoss, "gradnorm": GradNorm}


def _context(losses, masks):
    losses, masks = np.asarray(losses, "float32"), np.asarray(masks, "float32")
    return Context(losses=tf.constant(losses * masks), masks=tf.constant(masks),
                   features=tf.zeros(losses.shape + (1,)), ids=tf.range(losses.shape[0]))


def _regression_problem(scales=(1.0, 1.0), noise=(0.3, 0.3), n=256, dim=4, seed=0):
    """Two linear regression tasks y_k = scale_k (x.a_k/|a_k| + noise_k e): (x, [n, 2] targets)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)).astype("float32")
    a = rng.normal(size=(dim, 2))
    y = (x @ a / np.linalg.norm(a, axis=0) + rng.normal(size=(n, 2)) * np.asarray(noise)) * np.asarray(scales)
    return x, y.astype("float32")


def _regression_model(strategy, optimizer, encoder=None, aux_kind="regression"):
    tasks = [tfaux.Task("a", role="primary", kind="regression"), tfaux.Task("b", kind=aux_kind)]
    encoder = encoder or keras.Sequential([keras.layers.Dense(8)])
    model = tfaux.AuxiliaryModel(encoder, tasks, strategy, tf.TensorSpec((4,), tf.float32), num_examples=256)
    model.compile(optimizer=optimizer)
    return model


def _full_batch_steps(model, x, y, steps):
    batch = {"x": x, "labels": {"a": y[:, 0], "b": y[:, 1]}}
    model.fit(tf.data.Dataset.from_tensors(batch).repeat(steps), epochs=1, verbose=0)


# ---------------------------------------------------------------------------- all four
# (training through fit: tests/test_strategies.py runs every method of the table)


@pytest.mark.parametrize("cls, kwargs, argument", [
    (Uncertainty, {"form": "gaussian"}, "form"), (DWA, {"temperature": 0.0}, "temperature"),
    (AdaLoss, {"momentum": 1.0}, "momentum"), (AdaLoss, {"gamma": -0.1}, "gamma"),
    (AdaLoss, {"epsilon": 0.0}, "epsilon"), (GradNorm, {"alpha": -1.0}, "alpha"),
    (GradNorm, {"min_weight": 0.0}, "min_weight")])
def test_bad_constructor_arguments_name_the_argument(cls, kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        cls(**kwargs)


@pytest.mark.parametrize("cls, kwargs", [
    (Uncertainty, {"form": "by_kind"}), (DWA, {"temperature": 3.0}),
    (AdaLoss, {"momentum": 0.5, "gamma": 0.0, "epsilon": 1e-6}), (GradNorm, {"alpha": 0.5, "min_weight": 0.01})])
def test_get_config_returns_the_constructor_arguments(cls, kwargs):
    config = cls(**kwargs).get_config()
    assert {k: config[k] for k in kwargs} == kwargs


# ---------------------------------------------------------------------------- Uncertainty
@pytest.mark.parametrize("form, aux_kind, factors", [
    ("regression", "binary", (0.5, 0.5)), ("classification", "binary", (1.0, 1.0)),
    ("by_kind", "binary", (0.5, 1.0))])
def test_uncertainty_objective_and_its_closed_form_optimum(form, aux_kind, factors):
    """L = sum_k c_k exp(-s_k) L_k + 1/2 s_k (c = 1/2 regression, 1 classification): its value
    matches numpy, and d/ds_k vanishes exactly at s_k = log(2 c_k L_k) (sigma^2 = L_k or 2 L_k)."""
    model = _regression_model(Uncertainty(form=form), keras.optimizers.SGD(0.1), aux_kind=aux_kind)
    s = model.method
    rng = np.random.default_rng(0)
    losses, masks = rng.random((8, 2)) * [1.0, 3.0], (rng.random((8, 2)) < 0.7).astype("float32")
    ctx = _context(losses, masks)
    task_loss = (losses * masks).sum(0) / 8  # L_k = sum_i m_ik l_ik / B
    c = np.asarray(factors)

    log_var = rng.normal(size=2)
    s.log_variance.assign(log_var)
    want = np.sum(c * np.exp(-log_var) * task_loss + 0.5 * log_var)
    np.testing.assert_allclose(s.lower_loss(ctx.losses, ctx).numpy(), want, rtol=1e-5)

    s.log_variance.assign(np.log(2 * c * task_loss))
    with tf.GradientTape() as tape:
        value = s.lower_loss(ctx.losses, ctx)
    np.testing.assert_allclose(tape.gradient(value, s.log_variance.value).numpy(), [0.0, 0.0], atol=1e-6)


def test_uncertainty_variances_converge_to_the_least_squares_residuals():
    """Two linear regression tasks with noise 0.3 and 1.5: sigma_k^2 = exp(s_k) trained jointly
    with theta converges to the task's MSE at the optimum, the least-squares residual."""
    keras.utils.set_random_seed(0)
    x, y = _regression_problem(noise=(0.3, 1.5))
    model = _regression_model(Uncertainty(), keras.optimizers.SGD(0.05))
    _full_batch_steps(model, x, y, 300)
    design = np.c_[x, np.ones(len(x))]
    residual = [np.mean((y[:, k] - design @ np.linalg.lstsq(design, y[:, k], rcond=None)[0]) ** 2) for k in (0, 1)]
    np.testing.assert_allclose(np.exp(model.method.log_variance.numpy()), residual, rtol=0.1)


# ---------------------------------------------------------------------------- DWA
def _dwa_weights(last, before, temperature=2.0):
    e = np.exp(last / before / temperature)
    return len(last) * e / e.sum()


def test_dwa_weights_follow_the_formula_on_a_hand_made_loss_history():
    s = toy.model(DWA()).method
    rng = np.random.default_rng(0)
    averages = []
    for epoch in range(4):
        want = np.ones(2) if epoch < 2 else _dwa_weights(averages[-1], averages[-2])
        np.testing.assert_allclose(s.task_weights().numpy(), want, rtol=1e-5)
        totals, counts = np.zeros(2), np.zeros(2)
        for _ in range(3):
            losses = rng.random((6, 2)) * (epoch + 1) ** np.array([-1.0, 0.5])
            masks = (rng.random((6, 2)) < 0.6).astype("float32")
            masks[0] = 1.0
            s.after_lower_step(_context(losses, masks))
            totals, counts = totals + (losses * masks).sum(0), counts + masks.sum(0)
        s.on_epoch_end(epoch)
        averages.append(totals / counts)  # epoch average over labelled examples
    ctx = _context(rng.random((6, 2)), np.ones((6, 2)))
    want = _dwa_weights(averages[-1], averages[-2])
    np.testing.assert_allclose(s.lower_loss(ctx.losses, ctx).numpy(), (want * ctx.losses.numpy()).sum() / 6, rtol=1e-5)


def test_dwa_history_after_fit_is_the_epoch_average_task_loss():
    """The history kept after a 3-epoch fit equals fit's per-task epoch losses (`<task>_loss`,
    Keras' label-count-weighted mean of the batch means, i.e. the epoch average over labelled
    examples); the logged weights are 1 in epochs 0-1 and DWA's formula of them in epoch 2."""
    keras.utils.set_random_seed(0)
    model = toy.model(DWA())
    train, _ = toy.streams()
    history = model.fit(train, epochs=3, verbose=0).history
    epochs = np.array([history["main_loss"], history["aux_loss"]]).T  # [epoch, task]
    np.testing.assert_allclose(model.method.history.numpy(), epochs[[2, 1]], rtol=1e-5)
    logged = np.array([history["main_weight"], history["aux_weight"]]).T
    np.testing.assert_allclose(logged[:2], np.ones((2, 2)), rtol=1e-6)
    np.testing.assert_allclose(logged[2], _dwa_weights(epochs[1], epochs[0]), rtol=1e-5)


# ---------------------------------------------------------------------------- AdaLoss
def _adaloss_weights(average, seen, gamma, eps=1e-8):
    if not seen.any():
        return np.ones_like(average)
    inverse = np.where(seen, 1.0 / (average + eps), 0.0)
    u = np.where(seen, inverse / inverse.max(), 1.0)
    u = (1 - gamma) * u + gamma
    return len(u) * u / u.sum()


@pytest.mark.parametrize("momentum, gamma", [(0.9, 0.07), (0.5, 0.0)])
def test_adaloss_weights_follow_the_running_average_of_each_task_loss(momentum, gamma):
    s = toy.model(AdaLoss(momentum=momentum, gamma=gamma)).method
    rng = np.random.default_rng(1)
    average, seen = np.zeros(2), np.zeros(2, bool)
    for step in range(6):
        np.testing.assert_allclose(s.task_weights().numpy(), _adaloss_weights(average, seen, gamma), rtol=1e-5)
        losses = rng.random((5, 2)) * [0.1, 10.0]
        masks = np.ones((5, 2), "float32")
        if step in (0, 3):
            masks[:, 1] = 0.0  # no aux labels in this batch: its average waits
        s.after_lower_step(_context(losses, masks))
        mean = (losses * masks).sum(0) / np.maximum(masks.sum(0), 1)
        labelled = masks.sum(0) > 0
        average = np.where(labelled, np.where(seen, momentum * average + (1 - momentum) * mean, mean), average)
        seen |= labelled
    w = s.task_weights().numpy()
    np.testing.assert_allclose(w, _adaloss_weights(average, seen, gamma), rtol=1e-5)
    assert w.sum() == pytest.approx(2.0) and w[0] > w[1]
    if gamma == 0.0:  # w_k proportional to 1 / running average
        np.testing.assert_allclose(w * average, np.full(2, w[0] * average[0]), rtol=1e-5)


# ---------------------------------------------------------------------------- GradNorm
def _toy_task_gradients(model, x, labels, weights):
    """With plain Keras ops: the per-task mean losses, dL_k/dW (W = the last shared kernel)
    and the gradient of sum_k w_k L_k on theta."""
    kernel = [v for v in model.theta.shared if len(v.shape) >= 2][-1]
    with tf.GradientTape(persistent=True) as tape:
        out = model(x, training=True)
        losses = [tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels["main"], out["main"],
                                                                               from_logits=True)),
                  tf.reduce_mean(keras.losses.binary_crossentropy(labels["aux"][:, None], out["aux"],
                                                                  from_logits=True))]
        weighted = weights[0] * losses[0] + weights[1] * losses[1]
    theta = [np.zeros(v.shape) if g is None else g.numpy() for g, v in
             zip(tape.gradient(weighted, model.theta.all), model.theta.all)]
    return np.array([l.numpy() for l in losses]), [tape.gradient(l, kernel).numpy() for l in losses], theta


def test_gradnorm_weight_gradient_matches_finite_differences_of_l_grad():
    alpha = 1.5
    model = toy.model(GradNorm(alpha=alpha))
    s = model.method
    w0 = np.array([1.4, 0.6], "float32")
    initial = np.array([0.9, 0.5], "float32")
    s.task_weight.assign(w0)
    s.initial_losses.assign(initial)
    s.initialized.assign([1.0, 1.0])
    batch = next(iter(tf.data.Dataset.from_tensor_slices(toy.examples()).batch(32)))

    with tf.GradientTape(persistent=True) as tape:
        forward = model.forward(batch, training=True)
        context = model._context(batch, forward)
        objective = s.lower_loss(forward.losses, context)
    grads = s.lower_gradients(tape, objective, forward.losses, context, model.theta)

    loss, kernel_grads, theta = _toy_task_gradients(model, batch["x"], batch["labels"], w0)
    norms = np.array([np.linalg.norm(g) for g in kernel_grads], "float64")
    ratio = (loss / initial) / np.mean(loss / initial)
    target = np.mean(w0 * norms) * ratio ** alpha  # held constant

    def l_grad(w):
        return np.sum(np.abs(w * norms - target))

    eps = 1e-4
    fd = [(l_grad(w0 + eps * e) - l_grad(w0 - eps * e)) / (2 * eps) for e in np.eye(2)]
    np.testing.assert_allclose(grads[-1].numpy(), fd, rtol=1e-4)
    for got, want in zip(grads[:-1], theta):  # theta follows sum_k w_k L_k
        np.testing.assert_allclose(got.numpy(), want, atol=2e-5)


def _weighted_norms(model, x, y):
    kernel = [v for v in model.theta.shared if len(v.shape) >= 2][-1]
    with tf.GradientTape(persistent=True) as tape:
        out = model(x, training=True)
        losses = [tf.reduce_mean(tf.square(out[name][:, 0] - y[:, k])) for k, name in enumerate("ab")]
    weights = model.method.task_weight.numpy()
    norms = np.array([np.linalg.norm(tape.gradient(l, kernel).numpy()) for l in losses])
    return weights * norms, np.array([l.numpy() for l in losses])


@pytest.mark.parametrize("alpha", [0.0, 1.5])
def test_gradnorm_balances_the_weighted_gradient_norms_of_losses_a_hundred_times_apart(alpha):
    """Targets scaled by 1 and 10 (losses ~1:100): at the start ||grad_W w_k L_k|| differ
    ~10-fold; after training they are equal (alpha = 0) or in the ratio of r_k^alpha."""
    keras.utils.set_random_seed(0)
    x, y = _regression_problem(scales=(1.0, 10.0))
    model = _regression_model(GradNorm(alpha=alpha), keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(
        0.02, 250)), encoder=keras.Sequential([keras.layers.Dense(8, activation="tanh")]))
    start, initial = _weighted_norms(model, x, y)
    assert start[1] / start[0] > 5
    _full_batch_steps(model, x, y, 250)
    norms, loss = _weighted_norms(model, x, y)
    ratio = (loss / initial) / np.mean(loss / initial)
    np.testing.assert_allclose(norms[1] / norms[0], (ratio[1] / ratio[0]) ** alpha, rtol=0.1)
    assert model.method.task_weight.numpy().sum() == pytest.approx(2.0)


# ---------------------------------------------------------------------------- replicas
def _mirrored_data():
    rng = np.random.default_rng(0)
    n = 32
    x = rng.normal(size=(n, 6)).astype("float32")
    labels = {"main": (x[:, 0] > 0).astype("int32"), "aux": (x[:, 1] > 0).astype("float32")}
    mask = {"main": (rng.random(n) < 0.7).astype("float32"), "aux": np.ones(n, "float32")}
    return tf.data.Dataset.from_tensor_slices({"x": x, "labels": labels, "mask": mask}).batch(8, drop_remainder=True)


def _mirrored_train(distribution, name, epochs, initial=None):
    with distribution.scope():
        encoder = keras.Sequential([keras.layers.Dense(8, activation="tanh")])
        model = tfaux.AuxiliaryModel(encoder, toy.tasks(), METHODS[name](), tf.TensorSpec((6,), tf.float32),
                                     num_examples=32)
        model.compile(optimizer=keras.optimizers.SGD(0.1))
        if initial is not None:
            model.set_weights(initial)
    start = model.get_weights()
    model.fit(_mirrored_data(), epochs=epochs, verbose=0)
    return start, model


# AdaLoss writes its state exactly as DWA does (all-replica sums in after_lower_step); DWA
# needs 3 epochs before its weights leave 1.
@pytest.mark.parametrize("name, epochs", [("uncertainty", 1), ("gradnorm", 1), ("dwa", 3)])
def test_two_replicas_equal_one_device(name, epochs, two_devices):
    start, single = _mirrored_train(tf.distribute.get_strategy(), name, epochs)
    _, mirrored = _mirrored_train(two_devices, name, epochs, initial=start)
    for variable, a, b in zip(single.weights, single.get_weights(), mirrored.get_weights()):
        np.testing.assert_allclose(b, a, atol=2e-5, rtol=1e-4, err_msg=variable.path)
    moved = [not np.allclose(w.numpy(), s) for w, s in zip(single.weights, start)]
    assert any(moved)
    strategy_weights = {id(w) for w in single.method.weights}
    assert any(m for w, m in zip(single.weights, moved) if id(w) in strategy_weights), "strategy state never moved"
