"""Learned auxiliary labels (AuxiLearn Sec. 3.3), MAXL and MAXL-F.

The hypergradients are checked against central finite differences of a float64 re-implementation
of the same small problem (a linear encoder and heads with L2, a linear generator): at the inner optimum
theta*(phi0), a Neumann series of K terms with step alpha is exactly the derivative of the dev
loss after K + 1 gradient steps of size alpha from theta*(phi0) (Lorraine et al. 2020), so K = 3
(AuxiLearn's default) is checked against 4 unrolled steps, K = 0 (MAXL) against its one-step
look-ahead plus the entropy term, and conjugate gradient against theta*(phi) itself.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfaux
from tfaux import hypergrad, strategies
from tfaux.closed_form import relative_error
from tfaux.strategies.label_generation import MAXL, AuxiLearnLabels

import toy

C, PSI = 2, 3


def _entropy(p):
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


# ---------------------------------------------------------------- (1) the masked softmax
def test_each_label_puts_all_its_mass_on_its_own_classes_sub_classes():
    keras.utils.set_random_seed(0)
    model = toy.model(AuxiLearnLabels(psi=PSI))
    data = toy.examples(32)
    data["mask"]["main"][:4] = 0.0  # four unlabelled rows
    batch = tf.nest.map_structure(tf.constant, data)
    soft = model.method.generate(batch, training=False).numpy()
    assert soft.shape == (32, C * PSI)
    blocks = soft.reshape(32, C, PSI)
    for i in range(4, 32):
        own = data["labels"]["main"][i]
        assert np.all(np.delete(blocks[i], own, axis=0) == 0.0)  # exactly zero outside its class
        assert np.all(blocks[i, own] > 0.0)
        assert blocks[i, own].sum() == pytest.approx(1.0, abs=1e-6)
    assert np.all(soft[:4] == 0.0)  # unlabelled rows: no generated label ...
    forward = model.forward(batch, training=True)
    column = [t.name for t in model.tasks].index("generated")
    assert np.all(forward.losses.numpy()[:4, column] == 0.0)  # ... and no loss
    assert np.all(forward.losses.numpy()[4:, column] > 0.0)


# ---------------------------------------------------------------- (2) MAXL's entropy term
def _collapsed_maxl(entropy_weight):
    """MAXL on the toy, its generator started collapsed: logit bias 4 on sub-class 0 of each class
    (p(sub-class 0 | class) = e^4 / (e^4 + 2) = 0.96)."""
    keras.utils.set_random_seed(0)
    generator = MAXL(psi=PSI, entropy_weight=entropy_weight,
                     backbone=lambda spec: keras.Sequential([keras.layers.Dense(8, activation="tanh")]))
    model = toy.model(generator, upper_interval=1, upper=keras.optimizers.Adam(0.05))
    out = model.method.generator_head.layers[-1]
    out.bias.assign(np.tile([4.0] + [0.0] * (PSI - 1), C).astype("float32"))
    return model


def _marginal_entropy(model, data):
    soft = model.method.generate(tf.nest.map_structure(tf.constant, data), training=False).numpy()
    return _entropy(soft.mean(0))


def test_maxl_entropy_term_spreads_sub_class_usage_and_without_it_usage_stays_collapsed():
    """Entropy of the marginal over the C * psi sub-classes (max log 6 = 1.79; one sub-class per
    class: log 2 = 0.69; the start: 0.87): after 23 upper steps it is above 1.6 with lambda = 0.2,
    and with lambda = 0 the look-ahead gradient alone leaves it below 1.25 (measured 1.09)."""
    data = toy.examples()
    _, both = toy.streams()
    entropies = {}
    for weight in (0.2, 0.0):
        model = _collapsed_maxl(weight)
        start = _marginal_entropy(model, data)
        assert start < 0.9
        model.fit(both, epochs=6, verbose=0)
        entropies[weight] = _marginal_entropy(model, data)
    assert entropies[0.2] > 1.6, entropies
    assert entropies[0.0] < 1.25, entropies


def test_maxl_upper_objective_adds_lambda_times_negative_entropy_of_the_mean_label():
    keras.utils.set_random_seed(0)
    model = toy.model(MAXL(psi=PSI))
    data = toy.examples(16)
    data["mask"]["main"][:3] = 0.0
    batch = tf.nest.map_structure(tf.constant, data)
    soft = model.method.generate(batch, training=True).numpy()[3:]  # the labelled rows
    expected = -0.2 * _entropy(soft.mean(0))
    got = float(model.method.upper_objective(model, batch) - model.dev_objective(batch))
    assert got == pytest.approx(expected, rel=1e-5)


# ---------------------------------------------------------------- (3) hypergradients vs finite differences
D, N, N_DEV, LAM, ALPHA = 4, 24, 16, 0.05, 0.5


def _problem():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(N, D))
    y = (x[:, 0] - x[:, 1] > 0).astype("int64")
    xd = rng.normal(size=(N_DEV, D))
    yd = (xd[:, 0] - xd[:, 1] > 0).astype("int64")
    w = 0.5 * rng.normal(size=(D, C * PSI))
    b = 0.5 * rng.normal(size=(C * PSI,))
    return x, y, xd, yd, np.concatenate([w.ravel(), b])


def _soft64(x, y, phi):
    w, b = tf.reshape(phi[:D * C * PSI], (D, C * PSI)), phi[D * C * PSI:]
    z = tf.reshape(tf.matmul(x, w) + b, (-1, C, PSI))
    return tf.reshape(tf.nn.softmax(z, -1) * tf.one_hot(y, C, dtype=tf.float64)[:, :, None], (-1, C * PSI))


def _losses64(problem):
    """The inner and dev objectives in float64, written out independently of tfaux: a shared
    linear encoder e (D x 1) and linear heads Tm (1 x C), Ta (1 x C psi), all L2-regularised,
    L_t = mean_i [CE(x_i e Tm, y_i) + softCE(x_i e Ta, q_i(phi))] + lam |theta|^2."""
    x, y, xd, yd, _ = problem
    x, xd = tf.constant(x), tf.constant(xd)

    def split(theta):
        return (tf.reshape(theta[:D], (D, 1)), tf.reshape(theta[D:D + C], (1, C)),
                tf.reshape(theta[D + C:], (1, C * PSI)))

    def inner(theta, phi):
        e, tm, ta = split(theta)
        h = tf.matmul(x, e)
        main = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, tf.matmul(h, tm)))
        aux = tf.reduce_mean(-tf.reduce_sum(_soft64(x, y, phi) * tf.nn.log_softmax(tf.matmul(h, ta)), -1))
        return main + aux + LAM * tf.reduce_sum(theta ** 2)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float64)])
    def dev(theta):
        e, tm, _ = split(theta)
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(yd, tf.matmul(tf.matmul(xd, e), tm)))

    grad, optimum = toy.inner_solver(inner, D + C * (1 + PSI))

    return dev, grad, optimum


_CACHE = {}


def _lifted():
    """The problem, its float64 objectives and theta*(phi0), built once for the three tests."""
    if not _CACHE:
        problem = _problem()
        dev, grad, optimum = _losses64(problem)
        phi0 = tf.constant(problem[-1])
        _CACHE.update(problem=problem, dev=dev, grad=grad, optimum=optimum, phi0=phi0, theta_star=optimum(phi0))
    return [_CACHE[k] for k in ("problem", "dev", "grad", "optimum", "phi0", "theta_star")]


def _fd(f, phi, directions, eps=1e-4):
    return np.array([(f(phi + eps * u) - f(phi - eps * u)) / (2 * eps) for u in directions])


def _label_model(strategy, problem, solver, theta):
    x, y, xd, yd, phi = problem
    main = tfaux.Task("y", role="primary", num_classes=C, head_fn=lambda: keras.layers.Dense(
        C, use_bias=False, kernel_regularizer=keras.regularizers.L2(LAM)))
    encoder = keras.layers.Dense(1, use_bias=False, kernel_regularizer=keras.regularizers.L2(LAM))
    model = tfaux.AuxiliaryModel(encoder, [main], strategy, tf.TensorSpec((D,), tf.float32),
                                 num_examples=N, upper_interval=1, solver=solver)
    model.compile(optimizer=keras.optimizers.SGD(ALPHA))
    theta = np.asarray(theta).astype("float32")
    encoder.kernel.assign(theta[:D, None])
    model.heads[0].kernel.assign(theta[None, D:D + C])
    model.heads[1].kernel.assign(theta[None, D + C:])
    kernel, bias = model.method.upper_variables
    kernel.assign(phi[:D * C * PSI].reshape(D, C * PSI).astype("float32"))
    bias.assign(phi[D * C * PSI:].astype("float32"))
    batch = {"x": tf.constant(x, tf.float32), "labels": {"y": tf.constant(y)}}
    dev = {"x": tf.constant(xd, tf.float32), "labels": {"y": tf.constant(yd)}}
    hyper, _ = model.hypergradient(batch, dev)
    return np.concatenate([h.numpy().ravel() for h in hyper])


def _linear_generator(cls):
    """A linear generator x W + b, and a linear L2-regularised head for the generated task."""
    return cls(psi=PSI, backbone=lambda spec: keras.layers.Identity(), head_units=(),
               aux_head_fn=lambda: keras.layers.Dense(C * PSI, use_bias=False,
                                                      kernel_regularizer=keras.regularizers.L2(LAM)))


def test_auxilearn_labels_neumann_hypergradient_is_the_derivative_of_four_unrolled_steps():
    problem, dev, grad, optimum, phi0, theta_star = _lifted()

    def unrolled(phi, steps=4):
        theta = theta_star
        for _ in range(steps):
            theta = theta - ALPHA * grad(theta, phi)
        return float(dev(theta))

    fd = _fd(unrolled, phi0, np.eye(phi0.shape[0]))
    got = _label_model(_linear_generator(AuxiLearnLabels), problem, None, theta_star)  # default: Neumann K = 3
    assert np.abs(fd).max() > 1e-3
    assert relative_error(got, fd) < 1e-4
    one_step = _fd(lambda p: unrolled(p, 1), phi0, np.eye(phi0.shape[0]))
    assert relative_error(got, one_step) > 0.1  # K = 3 is not the one-step look-ahead


def test_auxilearn_labels_implicit_hypergradient_matches_finite_differences_of_the_optimum():
    problem, dev, grad, optimum, phi0, theta_star = _lifted()
    directions = np.random.default_rng(0).normal(size=(3, phi0.shape[0]))
    fd = _fd(lambda p: float(dev(optimum(p, theta_star))), phi0, directions)
    got = _label_model(_linear_generator(AuxiLearnLabels), problem,
                       hypergrad.ConjugateGradient(iterations=60), theta_star)
    assert relative_error(directions @ got, fd) < 1e-4


def test_maxl_hypergradient_is_the_one_step_look_ahead_gradient_plus_the_entropy_term():
    """Even with another solver passed to the model, MAXL's own (Neumann, K = 0) is used."""
    problem, dev, grad, optimum, phi0, theta_star = _lifted()

    def meta_objective(p):
        look_ahead = theta_star - ALPHA * grad(theta_star, p)
        xd, yd = problem[2], problem[3]
        pbar = tf.reduce_mean(_soft64(tf.constant(xd), yd, p), 0).numpy()
        return float(dev(look_ahead)) - 0.2 * _entropy(pbar)

    fd = _fd(meta_objective, phi0, np.eye(phi0.shape[0]))
    got = _label_model(_linear_generator(MAXL), problem, hypergrad.ConjugateGradient(iterations=60), theta_star)
    assert relative_error(got, fd) < 1e-4


# ---------------------------------------------------------------- (4, 5) through model.fit on images
def _images(n, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.normal(size=(n, 8, 8, 3)).astype("float32") * 0.5
    x[np.arange(n), :, :, y] += 1.0  # the class lights up one channel
    return {"x": x, "labels": {"label": y.astype("int32")}, "mask": {"label": np.ones(n, "float32")},
            "id": np.arange(n, dtype="int64")}


@pytest.mark.parametrize("name", ["auxilearn_labels", "maxl", "maxl_f"])
def test_each_method_trains_one_epoch_on_images_and_only_the_frozen_generator_stays(name):
    keras.utils.set_random_seed(0)
    train = tf.data.Dataset.from_tensor_slices(_images(32, 0)).batch(8, drop_remainder=True)
    dev = tf.data.Dataset.from_tensor_slices(_images(16, 1)).repeat().batch(8, drop_remainder=True)
    both = tf.data.Dataset.zip(train, dev).map(lambda t, d: {"train": t, "dev": d})
    strategy = strategies.get(name)
    primary = tfaux.Task("label", role="primary", num_classes=3)
    model = tfaux.AuxiliaryModel(tfaux.models.convnet4(channels=8), [primary], strategy,
                                 tf.TensorSpec((8, 8, 3), tf.float32), num_examples=32, upper_interval=1)
    model.compile(optimizer=keras.optimizers.SGD(0.05))
    assert model.tasks[1].num_classes == 3 * 5 and model.tasks[1].kind == "soft"
    before = [v.numpy().copy() for v in strategy.upper_variables]
    assert len(before) > 2  # a ConvNet-4 generator (tfaux.models.for_input), not a single layer
    history = model.fit(both, validation_data=train, epochs=1, verbose=0)
    for key in ("primary_accuracy", "val_primary_accuracy", "generated_loss"):
        assert np.isfinite(history.history[key][-1]), key
    moved = max(float(np.abs(b - v.numpy()).max()) for b, v in zip(before, strategy.upper_variables))
    if name == "maxl_f":
        assert moved == 0.0
    else:
        assert moved > 1e-6, moved  # measured: 6e-3 (auxilearn_labels), 7e-5 (maxl)
