"""DTG-AuxL (seed 001): the joint generator, its hypergradient and its regulariser.

Expected values are computed here independently: the generated labels' exact properties and
their bias term in numpy, the instance regulariser's gradient by central finite differences of
a float64 numpy re-implementation, and the implicit hypergradient against finite differences of
a float64 re-implementation of the whole small problem after inner optimisation (Newton to
machine precision), as tests/test_label_generation.py does.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfaux
from pipelines import Setting, Source, make_dataset
from tfaux import hypergrad, strategies
from tfaux.closed_form import relative_error
from tfaux.backup import EpochBackup
from tfaux.strategies.dtg import DTGAuxL

import toy
from test_app import _Interrupted, _StopAfter

C, DIM = 4, 6


def _examples(n, seed):
    """x ~ N(0, I_6); primary: argmax of x[:4] (4 classes); aux: [x_4 > 0] (binary)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, DIM)).astype("float32")
    return {"x": x, "labels": {"main": x[:, :C].argmax(1).astype("int32"), "aux": (x[:, 4] > 0).astype("float32")},
            "mask": {"main": np.ones(n, "float32"), "aux": np.ones(n, "float32")}, "id": np.arange(n, dtype="int64")}


def _tasks():
    return [tfaux.Task("main", role="primary", num_classes=C), tfaux.Task("aux", kind="binary")]


def _model(strategy, lr=0.1, upper=None, upper_interval=1):
    encoder = keras.Sequential([keras.layers.Dense(16, activation="tanh")])
    model = tfaux.AuxiliaryModel(encoder, _tasks(), strategy, tf.TensorSpec((DIM,), tf.float32), num_examples=128,
                                 upper_interval=upper_interval)
    model.compile(optimizer=keras.optimizers.SGD(lr), upper_optimizer=upper)
    return model


def _streams(n=128, batch=32):
    train = tf.data.Dataset.from_tensor_slices(_examples(n, 0)).batch(batch, drop_remainder=True)
    reordered = tf.data.Dataset.from_tensor_slices(_examples(n, 0)).shuffle(n, seed=1).repeat().batch(batch)
    return tf.data.Dataset.zip(train, reordered).map(lambda t, d: {"train": t, "dev": d})


def _xlogx(p):
    return np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)


def _relu(a):
    return np.maximum(a, 0.0)


def _wide_deep(u, params):
    """numpy: u W + b + relu(u W1 + b1) W2 + b2 (linear term + one MLP of depth 2)."""
    w, b, w1, b1, w2, b2 = params
    return u @ w + b + _relu(u @ w1 + b1) @ w2 + b2


def _softmax(z):
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


# ---------------------------------------------------------------- (1) the generated label and the pairing
def test_grouped_permutation_pairs_within_groups_and_two_replicas_pair_as_one_device(two_devices):
    strategy = _model(DTGAuxL(width=8, depth=2, pair_group=8)).method
    single = strategy.permutation(32, 5).numpy()
    assert sorted(single) == list(range(32)) and np.all(single // 8 == np.arange(32) // 8)
    assert np.mean(single == np.arange(32)) < 0.3
    shards = two_devices.run(lambda: strategy.permutation(16, 5))
    local = [s.numpy() for s in two_devices.experimental_local_results(shards)]
    np.testing.assert_array_equal(np.concatenate([local[0], local[1] + 16]), single)
    partial = strategy.permutation(13, 5).numpy()  # a last, partial batch: its own partial group
    assert sorted(partial) == list(range(13)) and np.all(partial // 8 == np.arange(13) // 8)


def test_permutation_is_a_stateless_permutation_keyed_by_the_step():
    strategy = _model(DTGAuxL(width=8, depth=2)).method
    a, b = strategy.permutation(32, 5).numpy(), strategy.permutation(32, 5).numpy()
    assert sorted(a) == list(range(32)) and np.array_equal(a, b)  # a permutation, the same for one step
    assert not np.array_equal(a, strategy.permutation(32, 6).numpy())  # another step: another pairing
    assert not np.array_equal(a, strategy.permutation(32, 5, stream=1).numpy())  # upper batches: their own
    assert np.mean(a == np.arange(32)) < 0.2


def test_generated_labels_lie_on_the_primary_simplex_and_the_bias_term_is_the_pairs_labels():
    keras.utils.set_random_seed(0)
    strategy = _model(DTGAuxL(width=8, depth=2)).method
    data = _examples(32, 3)
    batch = tf.nest.map_structure(tf.constant, data)
    labels, _, _ = strategy.batch_labels(batch, step=7)
    labels = labels.numpy()
    assert labels.shape == (32, C)
    assert np.all(labels >= 0.0) and np.allclose(labels.sum(1), 1.0, atol=1e-6)
    # with the learnable terms at zero, y~ = softmax(log C (e_{y_i} + e_{y_pi(i)})) exactly
    for v in strategy.label_generator.weights:
        v.assign(tf.zeros_like(v))
    perm = strategy.permutation(32, 7, stream=1).numpy()
    y = data["labels"]["main"]
    expected = _softmax(np.log(C) * (np.eye(C)[y] + np.eye(C)[y[perm]]))
    np.testing.assert_allclose(strategy.batch_labels(batch, step=7)[0].numpy(), expected, atol=1e-6)
    same = y == y[perm]  # one distinct class: C^2 / (C^2 + C - 1); two: C / (2C + C - 2) each
    assert same.any() and (~same).any()
    np.testing.assert_allclose(expected[np.arange(32), y][same], C ** 2 / (C ** 2 + C - 1), atol=1e-12)
    np.testing.assert_allclose(expected[np.arange(32), y][~same], C / (3 * C - 2), atol=1e-12)


@pytest.mark.parametrize("switch, reads_aux, reads_partner", [
    ({}, True, True), (dict(use_aux_labels=False), False, True), (dict(generate_data=False), True, False)])
def test_label_generator_inputs_follow_the_ablation_switches(switch, reads_aux, reads_partner):
    """w/o aux: the generated label ignores the auxiliary labels; w/o data: it depends on the
    row's own labels only (changing every other row's labels leaves row 0's label unchanged)."""
    keras.utils.set_random_seed(0)
    strategy = _model(DTGAuxL(width=8, depth=2, **switch)).method
    data = _examples(16, 4)
    base = strategy.batch_labels(tf.nest.map_structure(tf.constant, data), step=1)[0].numpy()
    flipped = dict(data, labels=dict(data["labels"], aux=1.0 - data["labels"]["aux"]))
    changed = strategy.batch_labels(tf.nest.map_structure(tf.constant, flipped), step=1)[0].numpy()
    assert (np.abs(changed - base).max() > 1e-4) == reads_aux
    others = dict(data, labels=dict(main=np.where(np.arange(16) == 0, data["labels"]["main"],
                                                  (data["labels"]["main"] + 1) % C).astype("int32"),
                                    aux=np.where(np.arange(16) == 0, data["labels"]["aux"],
                                                 1.0 - data["labels"]["aux"]).astype("float32")))
    row0 = strategy.batch_labels(tf.nest.map_structure(tf.constant, others), step=1)[0].numpy()[0]
    assert (np.abs(row0 - base[0]).max() > 1e-4) == reads_partner
    primary_only = {"x": data["x"], "labels": {"main": data["labels"]["main"]}}  # e.g. a dev batch: aux masked
    without_aux = dict(data, labels=dict(data["labels"], aux=np.zeros(16, "float32")),
                       mask=dict(data["mask"], aux=np.zeros(16, "float32")))
    np.testing.assert_allclose(strategy.batch_labels(tf.nest.map_structure(tf.constant, primary_only), step=1)[0],
                               strategy.batch_labels(tf.nest.map_structure(tf.constant, without_aux), step=1)[0])


# ---------------------------------------------------------------- (2) the instance regulariser
def _numpy_label_generator(strategy):
    """The label generator's (linear, MLP) weights as float64 arrays, in WideDeep's order."""
    lg = strategy.label_generator
    dense = lg.mlps[0].layers
    return [np.asarray(v, np.float64) for v in (lg.linear.kernel, lg.linear.bias, dense[0].kernel, dense[0].bias,
                                                 dense[1].kernel, dense[1].bias)]


def test_instance_regulariser_gradient_reaches_phi_and_matches_finite_differences():
    """L_reg = sum_c qbar_c log qbar_c, q = softmax(W v + MLP(v)); the upper objective adds
    alpha * reg_weight * L_reg, so the hypergradient with the regulariser minus without it is
    alpha * reg_weight * grad L_reg on the label generator, and zero on the feature generator."""
    keras.utils.set_random_seed(0)
    lam, alpha = 0.7, 0.1
    model = _model(DTGAuxL(width=5, depth=2, reg_weight=lam), lr=alpha)
    strategy = model.method
    train = tf.nest.map_structure(tf.constant, _examples(32, 5))
    upper = _examples(24, 6)
    upper_batch = tf.nest.map_structure(tf.constant, upper)
    with_reg, _ = model.hypergradient(train, upper_batch)
    strategy.reg_weight = 0.0
    without, _ = model.hypergradient(train, upper_batch)
    strategy.reg_weight = lam
    label_vars = {id(v) for v in strategy.label_generator.trainable_weights}
    diff = [(a - b).numpy() for a, b in zip(with_reg, without)]
    for v, d in zip(strategy.upper_variables, diff):
        if id(v) not in label_vars:
            assert np.abs(d).max() < 1e-6, v.path  # the regulariser does not depend on F

    # float64 numpy: v_i = [onehot(y_i), a_i, onehot(y_pi(i)), a_pi(i)], step 0, upper stream
    perm = strategy.permutation(24, 0, stream=1).numpy()
    y, a = upper["labels"]["main"], upper["labels"]["aux"][:, None].astype(np.float64)
    own = np.concatenate([np.eye(C)[y], a], 1)
    v = np.concatenate([own, own[perm]], 1)
    params = _numpy_label_generator(strategy)

    def reg(flat):
        ps, at = [], 0
        for p in params:
            ps.append(flat[at:at + p.size].reshape(p.shape))
            at += p.size
        qbar = _softmax(_wide_deep(v, ps)).mean(0)
        return alpha * lam * _xlogx(qbar).sum()

    flat = np.concatenate([p.ravel() for p in params])
    eps = 1e-6
    fd = np.array([(reg(flat + eps * e) - reg(flat - eps * e)) / (2 * eps) for e in np.eye(flat.size)])
    order = [strategy.label_generator.linear.kernel, strategy.label_generator.linear.bias] + \
        list(strategy.label_generator.mlps[0].trainable_weights)
    index = {id(v): k for k, v in enumerate(strategy.upper_variables)}
    got = np.concatenate([diff[index[id(v)]].ravel() for v in order])
    assert np.abs(fd).max() > 1e-3
    assert relative_error(got, fd) < 1e-4  # measured 3e-7


def _collapse_run(reg_weight, epochs=10, seed=2):
    """The 4-class toy, label bias off (the generated label is softmax of the learnable terms),
    the label generator's bias started at [0.5, 0, 0, 0]: at the start 4 classes are the argmax of
    some inputs (measured 99/1/14/14 of 128). Neumann's alpha is 0.01, not the lower rate 0.1:
    plain SGD drives the lower Hessian's top eigenvalue up to about 2 / 0.1 ("the edge of
    stability"; measured 9 -> 29 within 7 epochs), where alpha = 0.1 makes the series diverge
    (hypergradient norm spikes of 400x) and a single upper step saturates the softmax whatever
    the regulariser. The upper step: SGD 0.5, momentum 0.9, global norm clipped to 1."""
    keras.utils.set_random_seed(seed)
    strategy = DTGAuxL(width=16, depth=2, label_bias=0.0, reg_weight=reg_weight)
    encoder = keras.Sequential([keras.layers.Dense(16, activation="tanh")])
    model = tfaux.AuxiliaryModel(encoder, _tasks(), strategy, tf.TensorSpec((DIM,), tf.float32), num_examples=128,
                                 upper_interval=1, solver=hypergrad.Neumann(terms=3, alpha=0.01))
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  upper_optimizer=keras.optimizers.SGD(0.5, momentum=0.9, global_clipnorm=1.0))
    strategy.label_generator.linear.bias.assign(np.array([0.5, 0.0, 0.0, 0.0], "float32"))
    batch = tf.nest.map_structure(tf.constant, _examples(128, 0))

    def argmax_and_entropy():
        labels = strategy.batch_labels(batch, step=0)[0].numpy()
        return labels.argmax(1), float(-_xlogx(labels.mean(0)).sum())

    start = argmax_and_entropy()
    model.fit(_streams(), epochs=epochs, verbose=0)
    return start, argmax_and_entropy()


def test_without_instance_regularisation_the_generated_labels_collapse_and_with_it_they_do_not():
    """40 upper steps from 4 random starts (every start: marginal entropy of the argmax-spread labels
    >= 1.18). Without the regulariser the generated labels collapse towards one or two classes
    (final marginal entropy measured 0.99 / 0.00 / 0.70 / 0.31, mean 0.50; largest class 59 / 100 /
    64 / 94 % of the inputs: from the second start every input ends on one class); with it
    (reg_weight 1) the same runs keep the marginal entropy up (measured 1.38 / 1.36 / 1.37 / 1.38,
    mean 1.37; max log 4 = 1.386): floor 1.0 on the mean, and higher than without in every run."""
    without, with_reg = [], []
    for seed in range(4):
        (start_argmax, start_entropy), (argmax, entropy) = _collapse_run(0.0, seed=seed)
        assert len(np.unique(start_argmax)) >= 3 and start_entropy > 1.15
        without.append(entropy)
        with_reg.append(_collapse_run(1.0, seed=seed)[1][1])
    assert np.mean(without) < 0.8 and np.mean(with_reg) > 1.0, (without, with_reg)
    assert all(w > wo + 0.1 for w, wo in zip(with_reg, without)), (without, with_reg)


# ---------------------------------------------------------------- (3) the implicit hypergradient
D, H, N, N_UP, LAM, ALPHA, W = 3, 2, 20, 12, 0.05, 0.3, 3


def _problem():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(N, D))
    y = rng.integers(0, C, N)
    a = (x[:, 0] > 0).astype(np.float64)
    xu = rng.normal(size=(N_UP, D))
    yu = rng.integers(0, C, N_UP)
    return x, y, a, xu, yu


def _phi_shapes():
    """Upper variables in the strategy's order: label generator (input 2 (C + 1)), feature generator (2H)."""
    v_in, u_in = 2 * (C + 1), 2 * H
    lg = [(v_in, C), (C,), (v_in, W), (W,), (W, C), (C,)]
    fg = [(u_in, H), (H,), (u_in, W), (W,), (W, H), (H,)]
    return lg + fg


def _split(flat, shapes):
    out, at = [], 0
    for s in shapes:
        size = int(np.prod(s))
        out.append(tf.reshape(flat[at:at + size], s))
        at += size
    return out


def _losses64(problem, perm):
    """Float64 L_t(theta, phi) and L_p(theta), written out from the paper's equations: a linear
    encoder e (D x H), linear heads Tm (H x C), Ta (H x 1), Tg (H x C, the generated task's),
    L2 lam |theta|^2; generated pairs
    (i, perm[i]); z~ = F([z_i; z_j]), y~ = softmax(G(v_i) + log C (e_{y_i} + e_{y_j}))."""
    x, y, a, xu, yu = problem
    x, xu = tf.constant(x), tf.constant(xu)
    own = np.concatenate([np.eye(C)[y], a[:, None]], 1)
    v = tf.constant(np.concatenate([own, own[perm]], 1))
    bias = tf.constant(np.log(C) * (np.eye(C)[y] + np.eye(C)[y[perm]]))
    shapes = _phi_shapes()

    def wide_deep(u, w, b, w1, b1, w2, b2):  # tanh: a smooth inner problem (ReLU kinks in theta may hold
        return tf.matmul(u, w) + b + tf.matmul(tf.tanh(tf.matmul(u, w1) + b1), w2) + b2  # theta* on a kink)

    def split_theta(theta):
        return _split(theta, [(D, H), (H, C), (H, 1), (H, C)])

    def inner(theta, phi):
        e, tm, ta, tg = split_theta(theta)
        p = _split(phi, shapes)
        z = tf.matmul(x, e)
        main = tf.nn.sparse_softmax_cross_entropy_with_logits(y, tf.matmul(z, tm))
        aux = tf.nn.sigmoid_cross_entropy_with_logits(tf.constant(a), tf.reshape(tf.matmul(z, ta), [-1]))
        target = tf.nn.softmax(wide_deep(v, *p[:6]) + bias)
        w, b, w1, b1, w2, b2 = p[6:]  # F's kernels are stored times their fan-in (FanInDense)
        feature = wide_deep(tf.concat([z, tf.gather(z, perm)], 1), w / (2 * H), b, w1 / (2 * H), b1, w2 / W, b2)
        gen = -tf.reduce_sum(target * tf.nn.log_softmax(tf.matmul(feature, tg)), -1)
        return tf.reduce_mean(main + aux + gen) + LAM * tf.reduce_sum(theta ** 2)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float64)])
    def upper(theta):
        e, tm, _, _ = split_theta(theta)
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(yu, tf.matmul(tf.matmul(xu, e), tm)))

    grad, optimum = toy.inner_solver(inner, D * H + 2 * H * C + H)

    return upper, grad, optimum


def _hyper_model(problem, solver):
    x, y, a, xu, yu = problem
    dense = lambda units, reg=True: keras.layers.Dense(  # noqa: E731
        units, use_bias=False, kernel_regularizer=keras.regularizers.L2(LAM) if reg else None)
    tasks = [tfaux.Task("main", role="primary", num_classes=C, head_fn=lambda: dense(C)),
             tfaux.Task("aux", kind="binary", head_fn=lambda: dense(1))]
    strategy = DTGAuxL(width=W, depth=2, reg_weight=0.0, head_fn=lambda: dense(C), activation="tanh")
    model = tfaux.AuxiliaryModel(dense(H), tasks, strategy, tf.TensorSpec((D,), tf.float32), num_examples=N,
                                 upper_interval=1, solver=solver)
    model.compile(optimizer=keras.optimizers.SGD(ALPHA))
    shapes = [tuple(v.shape) for v in strategy.upper_variables]
    assert shapes == [tuple(s) for s in _phi_shapes()], shapes
    phi = np.random.default_rng(11).normal(size=sum(int(np.prod(s)) for s in shapes)) * 0.5
    for v, p in zip(strategy.upper_variables, _split(tf.constant(phi), shapes)):
        v.assign(tf.cast(p, tf.float32))
    batch = {"x": tf.constant(x, tf.float32), "labels": {"main": tf.constant(y, tf.int32), "aux": tf.constant(a)}}
    up = {"x": tf.constant(xu, tf.float32), "labels": {"main": tf.constant(yu, tf.int32)}}
    return model, batch, up, phi


_CACHE = {}


def _lifted():
    if not _CACHE:
        problem = _problem()
        model, batch, up, phi = _hyper_model(problem, hypergrad.ConjugateGradient(iterations=60))
        perm = model.method.permutation(N, 0, 0).numpy()  # the pairing of step 0's lower batch
        upper, grad, optimum = _losses64(problem, perm)
        phi0 = tf.constant(phi)
        _CACHE.update(problem=problem, model=model, batch=batch, up=up, upper=upper, grad=grad, optimum=optimum,
                      phi0=phi0, theta_star=optimum(phi0))
    return _CACHE


def _set_theta(model, theta):
    theta = np.asarray(theta, np.float32)
    model.encoder.kernel.assign(theta[:D * H].reshape(D, H))
    model.heads[0].kernel.assign(theta[D * H:D * H + H * C].reshape(H, C))
    model.heads[1].kernel.assign(theta[D * H + H * C:D * H + H * C + H].reshape(H, 1))
    model.heads[2].kernel.assign(theta[D * H + H * C + H:].reshape(H, C))  # the generated task's head


def _fd(f, phi, directions, eps=1e-4):
    return np.array([(f(phi + eps * u) - f(phi - eps * u)) / (2 * eps) for u in directions])


def test_implicit_hypergradient_matches_finite_differences_of_the_upper_loss_after_inner_optimisation():
    """d/dphi L_p(theta*(phi)) with theta*(phi) = argmin_theta L_t(theta, phi) (Newton in float64), along 3
    random directions, against the model's implicit hypergradient (conjugate gradient) at theta*."""
    c = _lifted()
    _set_theta(c["model"], c["theta_star"])
    hyper, _ = c["model"].hypergradient(c["batch"], c["up"])
    got = np.concatenate([h.numpy().ravel() for h in hyper])
    directions = np.random.default_rng(0).normal(size=(3, c["phi0"].shape[0]))
    fd = _fd(lambda p: float(c["upper"](c["optimum"](p, c["theta_star"]))), c["phi0"], directions)
    assert np.abs(fd).max() > 1e-3
    assert relative_error(directions @ got, fd) < 1e-4  # measured < 1e-6


def test_neumann_hypergradient_is_the_derivative_of_four_unrolled_steps():
    """At theta*, Neumann with K = 3 terms and step alpha is exactly d/dphi of the upper loss after
    K + 1 = 4 gradient steps of size alpha from theta* (Lorraine et al. 2020)."""
    c = _lifted()
    model, _, _, _ = _hyper_model(c["problem"], hypergrad.Neumann(terms=3))
    _set_theta(model, c["theta_star"])
    hyper, _ = model.hypergradient(c["batch"], c["up"])
    got = np.concatenate([h.numpy().ravel() for h in hyper])

    def unrolled(phi):
        theta = c["theta_star"]
        for _ in range(4):
            theta = theta - ALPHA * c["grad"](theta, phi)
        return float(c["upper"](theta))

    directions = np.random.default_rng(1).normal(size=(4, c["phi0"].shape[0]))
    fd = _fd(unrolled, c["phi0"], directions)
    assert np.abs(fd).max() > 1e-4
    assert relative_error(directions @ got, fd) < 1e-4  # measured < 1e-6


# ---------------------------------------------------------------- (4) through model.fit
@pytest.mark.parametrize("name", ["dtg_auxl", "dtg_auxl_no_data", "dtg_auxl_two_nonlinear"])
def test_shared_input_setting_trains_one_epoch_and_moves_phi_and_the_generated_head(name):
    """The generated task is one of the model's tasks: its head is in theta (not phi), its loss is logged."""
    keras.utils.set_random_seed(0)
    strategy = strategies.get(name, width=16, depth=2)
    model = _model(strategy, upper_interval=2)
    assert [t.name for t in model.tasks] == ["main", "aux", "dtg_generated"]
    assert model.tasks[2].input_key == (None if name == "dtg_auxl_no_data" else "dtg_generated")
    phi = [v.numpy().copy() for v in strategy.upper_variables]
    psi = [v.numpy().copy() for v in model.theta.heads[2]]
    assert psi and not strategy.lower_variables
    assert not {id(v) for v in model.theta.heads[2]} & {id(v) for v in strategy.upper_variables}
    history = model.fit(_streams(), epochs=1, verbose=0)
    assert all(np.isfinite(history.history[k][-1]) for k in ("loss", "primary_accuracy", "dev_loss",
                                                              "dtg_generated_loss"))
    assert history.history["upper_skipped"][-1] == 0.0
    assert max(float(np.abs(b - v.numpy()).max()) for b, v in zip(phi, strategy.upper_variables)) > 1e-5
    assert max(float(np.abs(b - v.numpy()).max()) for b, v in zip(psi, model.theta.heads[2])) > 1e-5


def _image_source(name, n, classes, seed, low, high, split=None):
    rng = np.random.default_rng(seed)
    x = rng.integers(low, high, (n, 8, 8, 3)).astype(np.uint8)
    return Source(name=name, tasks=[tfaux.Task("label", role="primary", num_classes=classes)], features=x,
                  labels={"label": rng.integers(0, classes, n).astype(np.int64)}, official_split=split,
                  is_image=True, image_shape=(8, 8, 3))


def test_different_input_setting_trains_one_epoch_on_an_aux_dataset_and_pairs_with_its_samples():
    primary = _image_source("tmp_dtg_primary", 96, 3, seed=1, low=0, high=100)
    aux = _image_source("tmp_dtg_aux", 60, 5, seed=2, low=120, high=256)
    data = make_dataset(primary, Setting(aux_dataset="tmp_dtg_aux", dev_size=12, rotation=False), aux_source=aux)
    assert [t.input_key for t in data.tasks] == [None, "aux"]
    keras.utils.set_random_seed(0)
    strategy = strategies.get("dtg_auxl", width=16, depth=2)
    encoder = keras.Sequential([data.preprocessing(), keras.layers.Flatten(),
                                keras.layers.Dense(16, activation="tanh")])
    model = tfaux.AuxiliaryModel(encoder, data.tasks, strategy, data.input_spec, num_examples=data.num_train,
                                 upper_interval=2)
    model.compile(keras.optimizers.SGD(0.05))
    assert strategy.different_input
    phi = [v.numpy().copy() for v in strategy.upper_variables]
    history = model.fit(data.train_with_reordered(16), epochs=1, validation_data=data.val(64), verbose=0)
    assert all(np.isfinite(history.history[k][-1]) for k in ("loss", "val_primary_accuracy", "dev_loss"))
    assert max(float(np.abs(b - v.numpy()).max()) for b, v in zip(phi, strategy.upper_variables)) > 1e-5
    # the generated sample of row i is made from the auxiliary dataset's sample of row i:
    batch = next(iter(data.train_eval(16)))
    generated = [t.name for t in model.tasks].index("dtg_generated")
    base = model.forward(batch, training=False).losses[:, generated].numpy()
    other = dict(batch, task_x={"aux": tf.reverse(batch["task_x"]["aux"], [0])})
    moved = np.abs(model.forward(other, training=False).losses[:, generated].numpy() - base)
    assert moved.min() > 1e-7, moved  # reversed: every row's partner changed, no row's own input did
    y = batch["labels"]["label"].numpy()
    for v in strategy.label_generator.weights:
        v.assign(tf.zeros_like(v))
    zeroed = strategy.batch_labels(batch, step=0)[0].numpy()  # the bias term: only i's own primary label
    np.testing.assert_allclose(zeroed, _softmax(np.log(3) * np.eye(3)[y]), atol=1e-6)


def test_trains_under_mirrored_strategy_on_two_replicas(two_devices):
    """Replica code paths (the all-replica regulariser, the per-replica pairing with one step key)."""
    keras.utils.set_random_seed(0)
    with two_devices.scope():
        strategy = strategies.get("dtg_auxl", width=16, depth=2)
        model = _model(strategy, upper_interval=2)
    phi = [v.numpy().copy() for v in strategy.upper_variables]
    history = model.fit(_streams(), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1]) and history.history["upper_skipped"][-1] == 0.0
    assert max(float(np.abs(b - v.numpy()).max()) for b, v in zip(phi, strategy.upper_variables)) > 1e-5


# ---------------------------------------------------------------- (5) a regression primary (Amazon ratings)
def _regression_examples(n, seed, labelled=None):
    """x ~ N(0, I_6); primary: a rating-like value 3 + x_0 - x_1 (regression); aux: [rating > 3]."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, DIM)).astype("float32")
    rating = (3.0 + x[:, 0] - x[:, 1]).astype("float32")
    mask = np.ones(n, "float32") if labelled is None else labelled.astype("float32")
    return {"x": x, "labels": {"rating": rating, "click": (rating > 3).astype("float32")},
            "mask": {"rating": mask, "click": np.ones(n, "float32")}, "id": np.arange(n, dtype="int64")}


def _regression_model(strategy, upper_interval=2):
    tasks = [tfaux.Task("rating", role="primary", kind="regression"), tfaux.Task("click", kind="binary")]
    encoder = keras.Sequential([keras.layers.Dense(16, activation="tanh")])
    model = tfaux.AuxiliaryModel(encoder, tasks, strategy, tf.TensorSpec((DIM,), tf.float32), num_examples=128,
                                 upper_interval=upper_interval)
    model.compile(optimizer=keras.optimizers.SGD(0.05))
    return model


def test_regression_primary_gets_real_generated_labels_around_the_pairs_mid_point():
    keras.utils.set_random_seed(0)
    model = _regression_model(DTGAuxL(width=8, depth=2))
    strategy = model.method
    assert model.tasks[2].kind == "regression" and strategy.label_generator.units == 1
    data = _regression_examples(32, 3)
    batch = tf.nest.map_structure(tf.constant, data)
    for v in strategy.label_generator.weights:
        v.assign(tf.zeros_like(v))
    perm = strategy.permutation(32, 7, stream=1).numpy()
    y = data["labels"]["rating"]
    labels, q, _ = strategy.batch_labels(batch, step=7)
    np.testing.assert_allclose(labels.numpy(), (y + y[perm]) / 2, atol=1e-6)  # zero learnable terms: the mid-point
    # the regulariser: max(0, log Var(y) - log Var(y~)) in numpy; the mid-points spread less than y
    expected = max(0.0, np.log(y.var() + 1e-8) - np.log(((y + y[perm]) / 2).var() + 1e-8))
    assert expected > 0.1
    np.testing.assert_allclose(float(strategy.instance_regularizer(batch, step=7)), expected, rtol=1e-4)
    strategy.label_bias, strategy.bias_scale = 0.0, 0.0  # and a collapsed generator: y~ constant
    strategy.label_generator.linear.bias.assign([3.0])
    assert float(strategy.instance_regularizer(batch, step=7)) > 10.0


def test_regression_primary_trains_and_rows_without_a_rating_get_no_generated_loss():
    keras.utils.set_random_seed(0)
    model = _regression_model(strategies.get("dtg_auxl", width=16, depth=2))
    labelled = np.arange(128) % 4 != 0
    stream = tf.data.Dataset.zip(
        tf.data.Dataset.from_tensor_slices(_regression_examples(128, 0, labelled)).batch(32, drop_remainder=True),
        tf.data.Dataset.from_tensor_slices(_regression_examples(128, 0)).shuffle(128, seed=1).repeat().batch(32),
    ).map(lambda t, d: {"train": t, "dev": d})
    phi = [v.numpy().copy() for v in model.method.upper_variables]
    history = model.fit(stream, epochs=2, verbose=0)
    assert all(np.isfinite(history.history[k][-1]) for k in ("loss", "primary_rmse", "dtg_generated_loss", "dev_loss"))
    assert history.history["upper_skipped"][-1] == 0.0
    assert max(float(np.abs(b - v.numpy()).max()) for b, v in zip(phi, model.method.upper_variables)) > 1e-5
    batch = tf.nest.map_structure(tf.constant, _regression_examples(32, 5, np.arange(32) % 4 != 0))
    forward = model.forward(batch, training=False)
    generated = forward.losses[:, 2].numpy()
    assert np.all(generated[np.arange(32) % 4 == 0] == 0.0) and np.all(generated[np.arange(32) % 4 != 0] > 0.0)
    np.testing.assert_array_equal(forward.masks[:, 2].numpy(), forward.masks[:, 0].numpy())


# ---------------------------------------------------------------- (6) exact resume
def _backed_up_run(backup, stop=None):
    keras.utils.set_random_seed(0)
    model = _model(strategies.get("dtg_auxl", width=16, depth=2), upper_interval=3)
    train = tf.data.Dataset.from_tensor_slices(_examples(128, 0)).batch(32, drop_remainder=True)
    reordered = tf.data.Dataset.from_tensor_slices(_examples(128, 0)).shuffle(
        128, seed=1, reshuffle_each_iteration=False).repeat().batch(32)  # the same upper batches in every process
    stream = tf.data.Dataset.zip(train, reordered).map(lambda t, d: {"train": t, "dev": d})
    callbacks = [EpochBackup(str(backup))] + ([_StopAfter(stop)] if stop else [])
    history = model.fit(stream, epochs=3, verbose=0, callbacks=callbacks)
    return model, history


def test_an_interrupted_run_resumes_exactly(tmp_path):
    """Killed after epoch 1 of 3 and restarted from its backup, a run ends where the uninterrupted
    one does: phi, the generated head, both optimizers' states and the step (the partners' key)
    come back."""
    whole, history = _backed_up_run(tmp_path / "whole")
    assert "dtg_generated_loss" in history.history
    with pytest.raises(_Interrupted):
        _backed_up_run(tmp_path / "cut", stop=1)
    resumed, _ = _backed_up_run(tmp_path / "cut")
    assert int(resumed.optimizer.iterations) == int(whole.optimizer.iterations) == 12
    for v, a, b in zip(whole.weights, whole.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6, err_msg=v.path)
    assert float(whole.hypergrad_norm) > 0  # upper steps were taken (every 3 steps, at steps 3, 6, 9)
