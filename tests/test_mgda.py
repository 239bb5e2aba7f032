"""MGDA, MGDA-UB, t-MOOMTL and Pareto-MTL against independent computations: the two-task
closed form in numpy, the KKT conditions of the min-norm element, and a generic QP (SLSQP)."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy.optimize import minimize

import tfaux
from tfaux.strategies.mgda import MGDA
from tfaux.strategies.pareto_mtl import ParetoMTL

import toy

LR = 0.1


def _batch(n=32, flip_aux=False):
    data = toy.examples()
    batch = {k: ({t: v[:n] for t, v in data[k].items()} if isinstance(data[k], dict) else data[k][:n]) for k in data}
    if flip_aux:
        batch["labels"]["aux"] = 1.0 - batch["labels"]["aux"]
    return batch


def _applied_gradient(model, batch):
    """What one SGD step did to every theta variable, divided by -lr."""
    before = [v.numpy().copy() for v in model.theta.all]
    model.fit(tf.data.Dataset.from_tensors(batch), epochs=1, verbose=0)
    return [(b - v.numpy()) / LR for b, v in zip(before, model.theta.all)]


def _linear_model(strategy):
    """Linear shared layer z = x W (no bias): every gradient below is written out in numpy."""
    keras.utils.set_random_seed(3)
    return toy.model(strategy, lr=LR, encoder=keras.Sequential([keras.layers.Dense(4, use_bias=False)]))


def _numpy_gradients(model, batch):
    """Per-task dL_k/dZ, dL_k/dW and head gradients of the linear toy, in numpy."""
    x = batch["x"].astype("float64")
    w = model.theta.shared[0].numpy().astype("float64")
    (a, a0), (b, b0) = [[v.numpy().astype("float64") for v in head] for head in model.theta.heads]
    z, n = x @ w, len(x)
    logits = z @ a + a0
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    d_main = (p - np.eye(2)[batch["labels"]["main"]]) / n  # dL_main / dlogits
    d_aux = (1.0 / (1.0 + np.exp(-(z @ b + b0))) - batch["labels"]["aux"][:, None]) / n
    dz = [d_main @ a.T, d_aux @ b.T]
    return {"dz": dz, "dw": [x.T @ g for g in dz],
            "heads": [[z.T @ d_main, d_main.sum(0)], [z.T @ d_aux, d_aux.sum(0)]]}


def _two_task_alpha(g1, g2):
    """Sener & Koltun (2018), Alg. 1: alpha = clip((g2 - g1)^T g2 / ||g1 - g2||^2, 0, 1)."""
    g1, g2 = np.ravel(g1), np.ravel(g2)
    return float(np.clip((g2 - g1) @ g2 / np.sum((g1 - g2) ** 2), 0.0, 1.0))


def _recovered_alpha(update, g1, g2):
    """alpha such that update = alpha g1 + (1 - alpha) g2 (least squares)."""
    u, g1, g2 = np.ravel(update), np.ravel(g1), np.ravel(g2)
    return float((u - g2) @ (g1 - g2) / np.sum((g1 - g2) ** 2))


@pytest.mark.parametrize("space", ["parameters", "representation"])
def test_two_task_alpha_and_update_match_the_closed_form(space):
    """(a) MGDA on the shared parameters and (c) MGDA-UB on Z = x W: alpha is Sener & Koltun's
    closed form of the numpy gradients (of W, resp. of Z), the shared update is
    alpha g_1 + (1 - alpha) g_2 (MGDA-UB: x^T (alpha dZ_1 + (1 - alpha) dZ_2)), every head
    takes its own gradient."""
    model = _linear_model(MGDA(space=space))
    batch = _batch()
    grads = _numpy_gradients(model, batch)
    source = grads["dw"] if space == "parameters" else grads["dz"]
    alpha = _two_task_alpha(*source)
    assert 0.02 < alpha < 0.98, alpha  # an interior solution, so the test means something
    expected_w = alpha * grads["dw"][0] + (1 - alpha) * grads["dw"][1]
    applied = _applied_gradient(model, batch)
    np.testing.assert_allclose(applied[0], expected_w, atol=2e-6)
    np.testing.assert_allclose(_recovered_alpha(applied[0], *grads["dw"]), alpha, atol=1e-4)
    for got, want in zip(applied[1:], grads["heads"][0] + grads["heads"][1]):
        np.testing.assert_allclose(got, want, atol=2e-6)


def _three_task_model(strategy, seed=0):
    keras.utils.set_random_seed(seed)
    tasks = [tfaux.Task("main", role="primary", num_classes=2), tfaux.Task("aux", kind="binary"),
             tfaux.Task("aux2", kind="regression")]
    encoder = keras.Sequential([keras.layers.Dense(8, activation="tanh")])
    model = tfaux.AuxiliaryModel(encoder, tasks, strategy, tf.TensorSpec((toy.DIM,), tf.float32), num_examples=toy.N)
    model.compile(optimizer=keras.optimizers.SGD(LR))
    return model


def _three_task_batch():
    batch = _batch()
    batch["labels"]["aux2"] = (batch["x"][:, 2] - batch["x"][:, 0]).astype("float32")
    batch["mask"]["aux2"] = np.ones(len(batch["x"]), "float32")
    return batch


def _tape_gradients(model, batch, variables):
    """[dL_k/dvariables] of every task, each by its own GradientTape, with plain Keras losses."""
    losses = {
        "main": lambda y, o: keras.losses.sparse_categorical_crossentropy(y, o, from_logits=True),
        "main2": lambda y, o: keras.losses.binary_crossentropy(y[:, None], o, from_logits=True),
        "aux": lambda y, o: keras.losses.binary_crossentropy(y[:, None], o, from_logits=True),
        "aux2": lambda y, o: tf.square(o[:, 0] - y)}
    out = []
    for task in model.tasks:
        with tf.GradientTape() as tape:
            pred = model(batch["x"], training=True)[task.name]
            loss = tf.reduce_mean(losses[task.name](batch["labels"][task.name], pred))
        grads = tape.gradient(loss, variables)
        out.append(np.concatenate([np.zeros(v.shape).ravel() if g is None else g.numpy().ravel()
                                   for g, v in zip(grads, variables)]).astype("float64"))
    return np.stack(out)


def test_mgda_direction_is_the_min_norm_element_of_the_hull():
    """(b) Three tasks: d (the applied shared update) is a convex combination of the task
    gradients and d . g_k >= ||d||^2 for every k (KKT of min ||d|| over the hull; a common
    descent direction)."""
    model = _three_task_model(MGDA())
    batch = _three_task_batch()
    g = _tape_gradients(model, batch, model.theta.shared)
    d = np.concatenate([x.ravel() for x in _applied_gradient(model, batch)[:len(model.theta.shared)]])
    assert np.all(g @ d >= d @ d - 1e-5), (g @ d, d @ d)
    coefficients = np.linalg.lstsq(g.T, d, rcond=None)[0]
    np.testing.assert_allclose(g.T @ coefficients, d, atol=1e-5)
    assert np.all(coefficients >= -1e-3) and abs(coefficients.sum() - 1.0) < 1e-3, coefficients
    assert np.sum(coefficients > 1e-3) >= 2  # not a single task's gradient


def test_t_moomtl_balances_the_targets_only():
    """(d) Two targets + one auxiliary: the shared update is the two-target closed form of
    MGDA; the auxiliary task is not learned (seed 004: 'only learning the target tasks')."""
    keras.utils.set_random_seed(1)
    tasks = [tfaux.Task("main", role="primary", num_classes=2), tfaux.Task("main2", role="primary", kind="binary"),
             tfaux.Task("aux", kind="binary")]
    encoder = keras.Sequential([keras.layers.Dense(8, activation="tanh")])
    model = tfaux.AuxiliaryModel(encoder, tasks, MGDA(tasks="targets"), tf.TensorSpec((toy.DIM,), tf.float32))
    model.compile(optimizer=keras.optimizers.SGD(LR))
    batch = _batch()
    batch["labels"]["main2"] = (batch["x"][:, 1] > 0).astype("float32")
    batch["mask"]["main2"] = np.ones(len(batch["x"]), "float32")
    shared = model.theta.shared
    g = _tape_gradients(model, batch, shared)
    heads = [_tape_gradients(model, batch, head)[k] for k, head in enumerate(model.theta.heads)]
    alpha = _two_task_alpha(g[0], g[1])
    assert 0.02 < alpha < 0.98, alpha
    applied = _applied_gradient(model, batch)
    d = np.concatenate([x.ravel() for x in applied[:len(shared)]])
    np.testing.assert_allclose(d, alpha * g[0] + (1 - alpha) * g[1], atol=2e-6)
    sizes = [len(h) for h in model.theta.heads]
    start = len(shared)
    for k, size in enumerate(sizes):
        got = np.concatenate([x.ravel() for x in applied[start:start + size]])
        np.testing.assert_allclose(got, heads[k] if k < 2 else 0.0, atol=2e-6)
        start += size


# ------------------------------------------------------------------ Pareto-MTL
def test_pareto_mtl_preference_vectors():
    """(e) Two tasks: the reference's circle points (cos(p pi / 2(P-1)), sin(...)); more tasks:
    unit vectors of the simplex lattice (all of it when its size is P)."""
    s = ParetoMTL(num_preferences=5, preference=3)
    s.setup(toy.tasks(), 4, 10)
    t = np.arange(5) * np.pi / 8
    np.testing.assert_allclose(s.preferences.numpy(), np.stack([np.cos(t), np.sin(t)], 1), atol=1e-6)
    np.testing.assert_allclose(s.directions.numpy(), s.preferences.numpy() - [np.cos(3 * np.pi / 8),
                                                                              np.sin(3 * np.pi / 8)], atol=1e-6)
    three = toy.tasks() + [tfaux.Task("aux2", kind="regression")]
    s3 = ParetoMTL(num_preferences=6)
    s3.setup(three, 4, 10)
    lattice = np.array([[2, 0, 0], [0, 2, 0], [0, 0, 2], [1, 1, 0], [1, 0, 1], [0, 1, 1]], float)
    want = np.array(sorted(map(tuple, lattice / np.linalg.norm(lattice, axis=1, keepdims=True))))
    got = s3.preferences.numpy()
    np.testing.assert_allclose(np.array(sorted(map(tuple, got.astype("float64")))), want, atol=1e-6)
    np.testing.assert_allclose(got[0], [1, 0, 0])
    s4 = ParetoMTL(num_preferences=4)
    s4.setup(three, 4, 10)
    np.testing.assert_allclose(np.linalg.norm(s4.preferences.numpy(), axis=1), 1.0, rtol=1e-6)
    assert len({tuple(np.round(u, 6)) for u in s4.preferences.numpy()}) == 4
    default = ParetoMTL()  # favours the target: u = (0, 1), the region where task 0's loss is smallest
    default.setup(toy.tasks(), 4, 10)
    assert default.preference_index == 4
    np.testing.assert_allclose(default.directions.numpy()[4], [0.0, 0.0], atol=1e-7)


def _angles_active(losses, p, num=5):
    """Active constraints in numpy, the reference's convention (get_d_paretomtl): constraint
    j is active when (u_j - u_p)^T l > 0, i.e. l is more aligned with u_j than with u_p."""
    t = np.arange(num) * np.pi / (2 * (num - 1))
    u = np.stack([np.cos(t), np.sin(t)], 1)
    return (u - u[p]) @ np.asarray(losses) > 0, u - u[p]


def test_pareto_mtl_active_set_sign_convention():
    s = ParetoMTL(num_preferences=5, preference=2)
    s.setup(toy.tasks(), 4, 10)
    for losses in ([2.0, 1.0], [1.0, 2.0], [1.0, 1.0], [0.3, 5.0]):
        want, _ = _angles_active(losses, 2)
        np.testing.assert_array_equal(s.active_constraints(tf.constant(losses)).numpy(), want)
    # l = (2, 1) lies at 26.6 degrees: only u_1 (22.5) is closer to it than u_2 (45); u_0 (0) is not
    assert s.active_constraints(tf.constant([2.0, 1.0])).numpy().tolist() == [False, True, False, False, False]


def _task_losses(model, batch):
    out = model(batch["x"], training=True)
    main = keras.losses.sparse_categorical_crossentropy(batch["labels"]["main"], out["main"], from_logits=True)
    aux = keras.losses.binary_crossentropy(batch["labels"]["aux"][:, None], out["aux"], from_logits=True)
    return np.array([float(tf.reduce_mean(main)), float(tf.reduce_mean(aux))])


def _slsqp_simplex(gram):
    """Generic QP: argmin_{beta in simplex} beta^T G beta, by scipy's SLSQP."""
    n = len(gram)
    result = minimize(lambda b: b @ gram @ b, np.full(n, 1.0 / n), jac=lambda b: 2 * gram @ b, method="SLSQP",
                      bounds=[(0, 1)] * n, constraints=[{"type": "eq", "fun": lambda b: b.sum() - 1}],
                      options={"ftol": 1e-15, "maxiter": 1000})
    return result.x


def _pareto_case(flip_aux, want_active):
    """A linear toy, batch and preference p with some (want_active) or no active constraint."""
    batch = _batch(flip_aux=flip_aux)
    probe = _linear_model(MGDA())
    losses = _task_losses(probe, batch)
    for p in range(5):
        active, directions = _angles_active(losses, p)
        if active.any() == want_active:
            return batch, losses, p, active, directions
    pytest.fail(f"no preference with active constraints = {want_active} for losses {losses}")


@pytest.mark.parametrize("flip_aux", [False, True])
def test_pareto_mtl_stage2_weights_match_a_generic_qp(flip_aux):
    """(e) Stage 2: beta = SLSQP over the simplex of the Gram of [g_1, g_2, grad G_j (active j)]
    (gradients of all parameters, one tape per task), w_k = beta_k + sum_j beta_j (u_j - u_p)_k,
    w <- K w / sum |w|; the update is the gradient of sum_k w_k L_k on every parameter."""
    batch, losses, p, active, directions = _pareto_case(flip_aux, want_active=True)
    model = _linear_model(ParetoMTL(preference=p, warmup_steps=0))
    np.testing.assert_allclose(_task_losses(model, batch), losses, rtol=1e-6)  # same initial weights
    g = _tape_gradients(model, batch, model.theta.all)
    rows = np.concatenate([np.eye(2), directions[active]])
    beta = _slsqp_simplex(rows @ g @ g.T @ rows.T)
    w = rows.T @ beta
    w = 2 * w / np.abs(w).sum()
    applied = np.concatenate([x.ravel() for x in _applied_gradient(model, batch)])
    np.testing.assert_allclose(applied, w @ g, atol=1e-5)
    # every head k moved by w_k times its own gradient: read w back from the heads
    n_shared = sum(int(np.prod(v.shape)) for v in model.theta.shared)
    sizes = [sum(int(np.prod(v.shape)) for v in head) for head in model.theta.heads]
    starts = np.cumsum([n_shared] + sizes)
    for k in range(2):
        gk, ak = g[k, starts[k]:starts[k + 1]], applied[starts[k]:starts[k + 1]]
        np.testing.assert_allclose(ak @ gk / (gk @ gk), w[k], rtol=1e-3, atol=1e-5)


def test_pareto_mtl_stage1_descends_on_the_active_constraints_then_stops():
    """(e) Stage 1 with one active constraint j: w = u_j - u_p (beta = 1, no normalisation);
    a step with no active constraint marks the point feasible, and stage 1 never returns."""
    batch, losses, _, _, _ = _pareto_case(False, want_active=True)
    for p in range(5):
        active, directions = _angles_active(losses, p)
        if active.sum() == 1:
            break
    else:
        pytest.fail(f"no preference with exactly one active constraint for losses {losses}")
    model = _linear_model(ParetoMTL(preference=p, warmup_steps=10))
    g = _tape_gradients(model, batch, model.theta.all)
    applied = np.concatenate([x.ravel() for x in _applied_gradient(model, batch)])
    np.testing.assert_allclose(applied, directions[active][0] @ g, atol=1e-5)
    assert model.method.feasible.numpy() == 0.0
    # a preference with no active constraint: that step is a stage-2 (MGDA) step, then feasible
    batch, losses, p, _, _ = _pareto_case(False, want_active=False)
    model = _linear_model(ParetoMTL(preference=p, warmup_steps=10))
    g = _tape_gradients(model, batch, model.theta.all)
    beta = _slsqp_simplex(g @ g.T)
    applied = np.concatenate([x.ravel() for x in _applied_gradient(model, batch)])
    np.testing.assert_allclose(applied, 2 * beta @ g, atol=1e-5)
    assert model.method.feasible.numpy() == 1.0


def test_constructor_arguments_are_checked_and_configured():
    for bad in ({"space": "z"}, {"tasks": "aux"}, {"normalize": "l1"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            MGDA(**bad)
    for bad in ({"num_preferences": 0}, {"preference": 5}, {"warmup_steps": -1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            ParetoMTL(**bad)
    assert MGDA(space="representation", normalize="loss+").get_config()["normalize"] == "loss+"
    config = ParetoMTL(num_preferences=3, preference=1, warmup_steps=7).get_config()
    assert (config["num_preferences"], config["preference"], config["warmup_steps"]) == (3, 1, 7)


@pytest.mark.parametrize("normalize", ["l2", "loss+"])
def test_normalisation_rescales_the_gradients_for_alpha_only(normalize):
    """alpha from the closed form of the normalised gradients g_k / n_k (n_k = ||g_k||, L_k,
    L_k ||g_k||); the update still combines the raw gradients (the authors' code)."""
    model = _linear_model(MGDA(normalize=normalize))
    batch = _batch()
    grads = _numpy_gradients(model, batch)
    losses = _task_losses(model, batch)
    norms = [np.linalg.norm(x) for x in grads["dw"]]
    scale = {"l2": norms, "loss": losses, "loss+": losses * norms}[normalize]
    alpha = _two_task_alpha(grads["dw"][0] / scale[0], grads["dw"][1] / scale[1])
    applied = _applied_gradient(model, batch)
    np.testing.assert_allclose(applied[0], alpha * grads["dw"][0] + (1 - alpha) * grads["dw"][1], atol=2e-6)


# (training through fit: tests/test_strategies.py runs every method of the table)


def _distributed_run(strategy, make, initial=None):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, toy.DIM)).astype("float32")
    data = {"x": x, "labels": {"main": (x[:, 0] > 0).astype("int32"), "aux": (x[:, 1] > 0).astype("float32")},
            "mask": {"main": (rng.random(64) < 0.8).astype("float32"), "aux": np.ones(64, "float32")}}
    with strategy.scope():
        model = toy.model(make(), encoder=keras.Sequential([keras.layers.Dense(8, activation="tanh")]))
        if initial is not None:
            model.set_weights(initial)
    start = model.get_weights()
    model.fit(tf.data.Dataset.from_tensor_slices(data).batch(16, drop_remainder=True), epochs=1, verbose=0)
    return start, model


@pytest.mark.parametrize("name", ["mgda_ub", "pareto_mtl"])
def test_two_replicas_equal_one_device(name, two_devices):
    """All-replica Grams, losses and constraint activity: two replicas take one device's steps
    (MGDA on parameters shares GCS's tested path; Pareto-MTL runs 3 stage-1 steps, then stage 2)."""
    make = {"mgda_ub": lambda: MGDA(space="representation", normalize="loss+"),
            "pareto_mtl": lambda: ParetoMTL(preference=4, warmup_steps=3)}[name]
    start, single = _distributed_run(tf.distribute.OneDeviceStrategy("/cpu:0"), make)
    _, mirrored = _distributed_run(two_devices, make, initial=start)
    for a, b, s in zip(single.get_weights(), mirrored.get_weights(), start):
        np.testing.assert_allclose(b, a, atol=2e-5, rtol=1e-4)
    assert any(not np.allclose(a, s) for a, s in zip(single.get_weights(), start))
