"""AuxiLearn's loss combiners (seed 002, Sec. 3.2), each checked against something outside the
code: the paper's illustrative example (Sec. 5.1) against single-task training, monotonicity by
finite differences on a grid, the hypergradient against finite differences of a closed-form
inner solution, and the configuration against the constructor. The ConvNet combiner over loss
images (Sec. 3.2, 5.3): its architecture and lower loss against a float64 transcription of the
reference network, monotonicity in every pixel loss by finite differences after real upper
steps, its hypergradient against finite differences of a Newton-solved inner problem, and
training of a SegNet with three dense heads on NYUv2-format files."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfaux
from tfaux import hypergrad, strategies
from tfaux.closed_form import relative_error
from tfaux.strategies.base import Context
from tfaux.strategies.combiners import COMBINERS
from tfaux.upper import UpperSettings

import pipelines
import toy
from test_pipelines_nyuv2 import make_nyuv2
from tfaux.models import segnet

VECTOR_COMBINERS = sorted(name for name, kind in COMBINERS.items() if not kind.pixelwise)  # over [B, T]

# ------------------------------------------------------------------ Sec. 5.1's linear regression
W_STAR, W_TILDE = np.array([1.0, 1.0]), np.array([2.0, -4.0])
SIGMA_MAIN, SIGMA_AUX = 3.0, 0.5  # the paper asks sigma_main > sigma_aux and gives no numbers
N_TRAIN, N_DEV, STEPS, LR = 32, 16, 300, 0.05


def _regression_data(seed=0):
    """y_main = w*.x + e0, helpful y1 = w*.x + e1, harmful y2 = w~.x + e2; the dev set is a
    small clean set of main-task examples (the project's D_dev)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N_TRAIN, 2))
    labels = {"main": x @ W_STAR + SIGMA_MAIN * rng.normal(size=N_TRAIN),
              "helpful": x @ W_STAR + SIGMA_AUX * rng.normal(size=N_TRAIN),
              "harmful": x @ W_TILDE + SIGMA_AUX * rng.normal(size=N_TRAIN)}
    x_dev = rng.normal(size=(N_DEV, 2))
    dev_labels = {"main": x_dev @ W_STAR}
    cast = lambda d: {k: v.astype("float32") for k, v in d.items()}  # noqa: E731
    return x.astype("float32"), cast(labels), x_dev.astype("float32"), cast(dev_labels)


def _shared_linear_model(strategy, aux_order=("helpful", "harmful"), lam=0.0, solver=None, upper=None):
    """One w in R^2 shared by every task: the encoder is w.x and every head is the identity
    (no task-specific parameters, as in Sec. 5.1)."""
    encoder = keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros",
                                 kernel_regularizer=keras.regularizers.L2(lam) if lam else None)
    tasks = [tfaux.Task("main", role="primary", kind="regression", head_fn=keras.layers.Identity)]
    tasks += [tfaux.Task(name, kind="regression", head_fn=keras.layers.Identity) for name in aux_order]
    model = tfaux.AuxiliaryModel(encoder, tasks, strategy, tf.TensorSpec((2,), tf.float32), upper_interval=5,
                                 solver=solver, upper=upper)
    model.compile(optimizer=keras.optimizers.SGD(LR))
    return model


def _fit(model, x, labels, x_dev=None, dev_labels=None, steps=STEPS):
    """`steps` full-batch lower steps (and an upper step every 5 for a bi-level strategy)."""
    train = tf.data.Dataset.from_tensors({"x": x, "labels": labels}).repeat(steps)
    if model.method.bilevel:
        dev = tf.data.Dataset.from_tensors({"x": x_dev, "labels": dev_labels}).repeat()
        train = tf.data.Dataset.zip(train, dev).map(lambda t, d: {"train": t, "dev": d})
    model.fit(train, epochs=1, verbose=0)
    return model.encoder.kernel.numpy()[:, 0]


@pytest.mark.parametrize("aux_order", [("helpful", "harmful"), ("harmful", "helpful")])
def test_linear_combiner_keeps_the_helpful_task_and_drops_the_harmful_one(aux_order):
    """Seed 002, Sec. 5.1 / Fig. 2: learned linear weights favour the helpful auxiliary over the
    harmful one (whatever its column), and the shared w ends closer to w* than single-task
    training on the same examples (main training labels plus the dev set) for the same steps.
    Upper SGD step 1e-2 without decay or clip (reference: 1e-3, 1e-4, 25), so that 60 upper
    steps settle the weights. Swapping the two auxiliaries' labels makes this test fail."""
    keras.utils.set_random_seed(0)
    x, labels, x_dev, dev_labels = _regression_data()
    model = _shared_linear_model(strategies.AuxiLearn(combiner="linear"), aux_order,
                                 upper=UpperSettings(learning_rate=1e-2, weight_decay=0.0, clipnorm=0.0))
    w_aux = _fit(model, x, labels, x_dev, dev_labels)
    weights = dict(zip([t.name for t in model.tasks], model.method.combiner.task_weights.numpy()))
    assert weights["helpful"] > weights["harmful"] + 2.0, weights
    assert weights["harmful"] < 0.25, weights

    stl = _shared_linear_model(strategies.STL(), aux_order)
    both = {"main": np.concatenate([labels["main"], dev_labels["main"]]),
            "helpful": np.zeros(N_TRAIN + N_DEV, "float32"), "harmful": np.zeros(N_TRAIN + N_DEV, "float32")}
    w_stl = _fit(stl, np.concatenate([x, x_dev]), both)
    ols = np.linalg.lstsq(np.concatenate([x, x_dev]), both["main"], rcond=None)[0]
    np.testing.assert_allclose(w_stl, ols, atol=1e-3)  # STL has converged: its budget is not the handicap
    d_aux, d_stl = np.linalg.norm(w_aux - W_STAR), np.linalg.norm(w_stl - W_STAR)
    assert d_aux < 0.6 * d_stl, (d_aux, d_stl)


# ------------------------------------------------------------------ monotonicity
@pytest.mark.parametrize("name", VECTOR_COMBINERS)
def test_every_combiner_is_non_decreasing_in_every_loss_after_upper_steps(name):
    """Seed 002, Sec. 3.2 / App. C.2: after six real upper steps on Sec. 5.1's problem (whose
    hypergradient pushes the harmful task's weights below 0), g(l + h e_k) >= g(l) on a grid of
    loss vectors, for every loss k; and g still grows with the main and helpful losses.
    Kernels U(0, 0.2) (the reference's Pet setting) keep the deep variants' initial
    effective weights small enough for the lower learning rate."""
    keras.utils.set_random_seed(0)
    x, labels, x_dev, dev_labels = _regression_data()
    model = _shared_linear_model(strategies.AuxiLearn(combiner=name, init_upper=0.2),
                                 upper=UpperSettings(learning_rate=0.03, weight_decay=0.0, clipnorm=0.0))
    before = [v.numpy().copy() for v in model.method.upper_variables]
    _fit(model, x, labels, x_dev, dev_labels, steps=30)
    assert any(not np.array_equal(b, v.numpy()) for b, v in zip(before, model.method.upper_variables))
    axis = np.linspace(0.0, 4.0, 9)
    grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3).astype("float32")
    g = model.method.combine(tf.constant(grid)).numpy()
    step = 0.25
    for k, task in enumerate(model.tasks):
        g_up = model.method.combine(tf.constant(grid + step * np.eye(3, dtype="float32")[k])).numpy()
        assert np.all(g_up - g >= -1e-5 * (1.0 + np.abs(g))), (name, task.name, (g_up - g).min())
        if task.name != "harmful":
            assert (g_up - g).max() > 1e-2, (name, task.name)


# ------------------------------------------------------------------ hypergradient
LAM = 0.1


def _closed_form_dev_loss(x, labels, x_dev, dev_label, task_weights):
    """L_dev(w*(phi)) with w*(phi) = argmin (1/n) sum_i sum_k c_k (x_i.w - y_ik)^2 + lam |w|^2,
    c = (1 + w_main, w_helpful, w_harmful) (skip term plus the linear combiner), in float64."""
    c = np.array([1.0, 0.0, 0.0]) + task_weights
    n = len(x)
    a = c.sum() * x.T @ x / n + LAM * np.eye(2)
    b = x.T @ sum(ck * labels[k] for ck, k in zip(c, ("main", "helpful", "harmful"))) / n
    w = np.linalg.solve(a, b)
    return np.mean((x_dev @ w - dev_label) ** 2), w


@pytest.mark.parametrize("name, hidden", [("linear", ()), ("deep_linear", (3, 2))])
def test_linear_combiners_hypergradient_matches_finite_differences(name, hidden):
    """AuxiliaryModel's implicit hypergradient at theta = w*(phi) against central differences of
    the closed-form L_dev(w*(phi)) in every variable of the combiner (deep linear: of the
    product W_1 W_2 W_3, differentiated layer by layer)."""
    x, labels, x_dev, dev_labels = _regression_data(seed=1)
    x, x_dev = x[:12].astype("float64"), x_dev.astype("float64")
    labels = {k: v[:12].astype("float64") for k, v in labels.items()}
    model = _shared_linear_model(strategies.AuxiLearn(combiner=name, hidden=hidden), lam=LAM,
                                 solver=hypergrad.ConjugateGradient(iterations=10))
    rng = np.random.default_rng(2)
    phi = [rng.uniform(0.2, 1.0, size=v.shape) for v in model.method.upper_variables]
    for v, value in zip(model.method.upper_variables, phi):
        v.assign(value.astype("float32"))

    def outer(values):
        product = values[0]
        for k in values[1:]:
            product = product @ k
        return _closed_form_dev_loss(x, labels, x_dev, dev_labels["main"], product[:, 0])

    model.encoder.kernel.assign(outer(phi)[1][:, None].astype("float32"))
    batch = {"x": tf.constant(x, tf.float32), "labels": {k: tf.constant(v, tf.float32) for k, v in labels.items()}}
    dev = {"x": tf.constant(x_dev, tf.float32), "labels": {"main": tf.constant(dev_labels["main"])}}
    hyper, _ = model.hypergradient(batch, dev)
    eps = 1e-6
    for j, value in enumerate(phi):
        fd = np.zeros_like(value)
        for idx in np.ndindex(value.shape):
            plus, minus = [p.copy() for p in phi], [p.copy() for p in phi]
            plus[j][idx] += eps
            minus[j][idx] -= eps
            fd[idx] = (outer(plus)[0] - outer(minus)[0]) / (2 * eps)
        assert relative_error(hyper[j].numpy(), fd) < 1e-4, (j, hyper[j].numpy(), fd)


# ------------------------------------------------------------------ configuration
def test_unknown_combiner_is_a_one_sentence_error_naming_the_choices():
    choices = r"choose one of: convnet, deep_linear, linear, nonlinear\.$"
    with pytest.raises(ValueError, match=r"no combiner 'convex'; " + choices):
        strategies.AuxiLearn(combiner="convex")
    with pytest.raises(ValueError, match="convnet, deep_linear, linear, nonlinear"):
        strategies.get("auxilearn", **strategies.method_args("auxilearn", "combiner=convex"))
    assert strategies.method_args("auxilearn", "combiner=deep_linear") == {"combiner": "deep_linear"}


@pytest.mark.parametrize("name", sorted(COMBINERS))
def test_get_config_round_trips_to_the_same_combiner(name):
    """from_config(get_config()) has the same configuration and, built on the same tasks, the
    same variables with the same initial values."""
    original = strategies.AuxiLearn(combiner=name, hidden=(4, 3), init_upper=0.2, skip=False, seed=7)
    config = original.get_config()
    assert {k: config[k] for k in ("combiner", "hidden", "init_upper", "skip", "seed")} == \
        {"combiner": name, "hidden": (4, 3), "init_upper": 0.2, "skip": False, "seed": 7}
    copy = strategies.AuxiLearn.from_config(config)
    assert copy.get_config() == config
    for s in (original, copy):
        s.setup(dense_tasks() if COMBINERS[name].pixelwise else toy.tasks(), feature_dim=4, num_examples=8)
    assert [v.shape for v in copy.upper_variables] == [v.shape for v in original.upper_variables]
    for a, b in zip(original.upper_variables, copy.upper_variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


# ------------------------------------------------------------------ ConvNet over loss images (Sec. 3.2, 5.3)
def dense_tasks(aux_kind="dense_regression"):
    return [tfaux.Task("seg", role="primary", kind="dense_classification", num_classes=3),
            tfaux.Task("aux", kind=aux_kind, num_classes=3)]


def test_convnet_defaults_follow_the_reference_nyuv2_network():
    """`--method_args=combiner=convnet` gives the reference MonoNoFCCNNHyperNet of the NYUv2 ConvNet
    run: 3x3 convolutions T -> 8 -> 16 with biases, a 1x1 convolution 16 -> 1 without bias, kernels
    U(0, 0.1), biases 0, and its upper update SGD(1e-4, momentum 0.9), weight decay 1e-5, clip 100;
    the other combiners keep hidden (10, 10), U(0, 1) and SGD(1e-3), 1e-4, clip 25."""
    convnet = strategies.get("auxilearn", **strategies.method_args("auxilearn", "combiner=convnet"))
    convnet.setup(dense_tasks() + [tfaux.Task("normal", kind="dense_normal")], feature_dim=4, num_examples=8)
    assert [tuple(v.shape) for v in convnet.upper_variables] == [(3, 3, 3, 8), (8,), (3, 3, 8, 16), (16,),
                                                                 (1, 1, 16, 1)]
    for v in convnet.upper_variables:
        values = v.numpy()
        if values.ndim == 1:
            assert not values.any()
        else:
            assert values.min() >= 0.0 and values.max() <= 0.1 and values.std() > 0.01
    assert convnet.upper_defaults == UpperSettings(learning_rate=1e-4, momentum=0.9, weight_decay=1e-5,
                                                   clipnorm=100.0)
    for name in VECTOR_COMBINERS:
        other = strategies.AuxiLearn(combiner=name)
        assert (other.hidden, other.init_upper) == ((10, 10), 1.0)
        assert other.upper_defaults == UpperSettings(learning_rate=1e-3, weight_decay=1e-4, clipnorm=25.0)


def test_convnet_needs_dense_tasks_with_one_clear_sentence():
    """Tasks that have no per-pixel losses are refused when the model is built, naming them; a loss
    image that the protocol cannot form (Context.loss_maps None) is refused at first use."""
    tasks = [dense_tasks()[0], tfaux.Task("tag", kind="binary")]
    with pytest.raises(ValueError) as error:
        tfaux.AuxiliaryModel(keras.Sequential([keras.layers.Conv2D(4, 1)]), tasks,
                             strategies.AuxiLearn(combiner="convnet"), tf.TensorSpec((8, 8, 3), tf.float32))
    message = str(error.value)
    assert message == "combiner='convnet' needs every task per-pixel (dense); tasks ['tag'] are not."
    strategy = strategies.AuxiLearn(combiner="convnet")
    strategy.setup(dense_tasks(), feature_dim=4, num_examples=8)
    context = Context(losses=tf.ones((2, 2)), masks=tf.ones((2, 2)), features=tf.ones((2, 2, 4)), ids=tf.range(2))
    with pytest.raises(ValueError, match=r"needs one loss image per example, .* same height and width\.$"):
        strategy.lower_loss(context.losses, context)


# A harmful auxiliary: both tasks read the same 3 per-pixel logits, the auxiliary's labels are the
# main task's shifted by one class, so weighting it up raises the dev loss.
H_SMALL = W_SMALL = 8


def _harmful_pixels(n, rng, mixing):
    x = rng.normal(size=(n, H_SMALL, W_SMALL, 3)).astype("float32")
    y = np.argmax(x @ mixing, -1).astype("int32")
    return {"x": x, "labels": {"seg": y, "aux": (y + 1) % 3}}


def _fit_convnet_on_harmful_pixels(project):
    """8 lower SGD steps (0.1) on 8 examples with an upper step after each (SGD 0.03, no decay or
    clip: large enough to drive the auxiliary's kernels below 0 within 8 steps)."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(3, 3))
    train, dev = _harmful_pixels(8, rng, mixing), _harmful_pixels(4, rng, mixing)
    tasks = [tfaux.Task("seg", role="primary", kind="dense_classification", num_classes=3,
                        head_fn=keras.layers.Identity),
             tfaux.Task("aux", kind="dense_classification", num_classes=3, head_fn=keras.layers.Identity)]
    strategy = strategies.AuxiLearn(combiner="convnet")
    model = tfaux.AuxiliaryModel(keras.Sequential([keras.layers.Conv2D(3, 1)]), tasks, strategy,
                                 tf.TensorSpec((H_SMALL, W_SMALL, 3), tf.float32), num_examples=8, upper_interval=1,
                                 upper=UpperSettings(learning_rate=0.03, weight_decay=0.0, clipnorm=0.0))
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    if not project:
        strategy.combiner.project = lambda: None
    before = [v.numpy().copy() for v in strategy.upper_variables]
    stream = tf.data.Dataset.zip(tf.data.Dataset.from_tensors(train).repeat(8),
                                 tf.data.Dataset.from_tensors(dev).repeat())
    model.fit(stream.map(lambda t, d: {"train": t, "dev": d}), epochs=1, verbose=0)
    assert all(not np.array_equal(b, v.numpy()) for b, v in zip(before, strategy.upper_variables))
    return strategy


def _pixel_increments(strategy, images, step=1.0):
    """g(L + step e_(h, w, k)) - g(L) for every pixel (h, w) and task k of every image L: [N, H, W, T]."""
    out = []
    for image in images:
        size = image.size
        raised = np.repeat(image[None], size, 0).reshape(size, size)
        raised[np.arange(size), np.arange(size)] += step
        g_up = strategy.combine(tf.constant(raised.reshape((size,) + image.shape))).numpy()
        out.append((g_up - strategy.combine(tf.constant(image[None])).numpy()[0]).reshape(image.shape))
    return np.stack(out)


def test_convnet_is_non_decreasing_in_every_pixel_loss_after_upper_steps():
    """Seed 002, Sec. 3.2: after 8 real upper steps whose hypergradient pushes the harmful
    auxiliary's kernels below 0, raising any single pixel loss of a random loss image never lowers
    g (finite differences over all 8 x 8 x 2 pixel losses of 3 images); g still grows with every main
    pixel loss. Without the clamp after each upper step the same run gives a g that falls when an
    auxiliary pixel loss rises."""
    images = np.random.default_rng(5).uniform(0.0, 3.0, (3, H_SMALL, W_SMALL, 2)).astype("float32")
    clamped = _pixel_increments(_fit_convnet_on_harmful_pixels(project=True), images)
    assert clamped.min() >= -1e-5, clamped.min()
    assert clamped[..., 0].min() > 1e-3, clamped[..., 0].min()
    free = _pixel_increments(_fit_convnet_on_harmful_pixels(project=False), images)
    assert free[..., 1].min() < -1e-2, free[..., 1].min()


# ------------------------------------------------------------------ ConvNet hypergradient
H_TINY = W_TINY = 4
LAM_PIXEL = 0.1


def _tiny_pixel_problem():
    """4 training and 3 dev 4x4 images; main and auxiliary two-class label maps (main with -1
    unlabelled pixels); both heads read the same 2 logits w.x (w: 3x2, L2 lam |w|^2, no bias)."""
    rng = np.random.default_rng(3)
    x, x_dev = rng.normal(size=(4, H_TINY, W_TINY, 3)), rng.normal(size=(3, H_TINY, W_TINY, 3))
    main = np.where(rng.random((4, H_TINY, W_TINY)) < 0.25, -1, (x[..., 0] + 0.3 * x[..., 1] > 0).astype(int))
    aux = (x[..., 2] > 0).astype(int)
    dev = (x_dev[..., 0] + 0.3 * x_dev[..., 1] > 0).astype(int)
    return x, {"seg": main, "aux": aux}, x_dev, dev


def _pixel_ce64(theta, x, y):
    """Per-pixel softmax cross-entropy of logits x.theta, 0 where y = -1, and the validity map."""
    log_p = tf.nn.log_softmax(tf.einsum("bhwc,ck->bhwk", x, theta), -1)
    valid = tf.cast(y >= 0, tf.float64)
    return -tf.reduce_sum(log_p * tf.one_hot(tf.maximum(y, 0), 2, dtype=tf.float64), -1) * valid, valid


def _reference_convnet64(maps, phi):
    """MonoNoFCCNNHyperNet forward in float64: [conv3x3(pad 1) + b, Softplus, AvgPool2d(2)] x 2,
    conv1x1 without bias, then the mean over the map; phi = (k1, b1, k2, b2, k3)."""
    k1, b1, k2, b2, k3 = phi
    h = tf.nn.avg_pool2d(tf.nn.softplus(tf.nn.conv2d(maps, k1, 1, "SAME") + b1), 2, 2, "VALID")
    h = tf.nn.avg_pool2d(tf.nn.softplus(tf.nn.conv2d(h, k2, 1, "SAME") + b2), 2, 2, "VALID")
    return tf.reduce_mean(tf.nn.conv2d(h, k3, 1, "VALID"), [1, 2, 3])


def _lower64(theta, phi, x, main, aux):
    """L_T = (1/B) sum_i [(1/HW) sum_hw l_main[i, h, w] + g(L_i; phi)] + lam |theta|^2 in float64."""
    maps = tf.stack([_pixel_ce64(theta, x, main)[0], _pixel_ce64(theta, x, aux)[0]], -1)
    skip = tf.reduce_mean(maps[..., 0], [1, 2])
    return tf.reduce_mean(skip + _reference_convnet64(maps, phi)) + LAM_PIXEL * tf.reduce_sum(theta ** 2)


def _dev64(theta, x_dev, dev):
    """L_dev: mean over dev images of the mean cross-entropy over their pixels."""
    loss, valid = _pixel_ce64(theta, tf.constant(x_dev), tf.constant(dev))
    return float(tf.reduce_mean(tf.reduce_sum(loss, [1, 2]) / tf.reduce_sum(valid, [1, 2])))


@tf.function(reduce_retracing=True)
def _newton_step(theta, phi, x, main, aux):
    """theta - H^-1 g of the float64 L_T, and max |g|."""
    with tf.GradientTape() as outer:
        outer.watch(theta)
        with tf.GradientTape() as inner:
            inner.watch(theta)
            loss = _lower64(theta, phi, x, main, aux)
        grad = inner.gradient(loss, theta)
    hessian = tf.reshape(outer.jacobian(grad, theta), (6, 6))
    step = tf.reshape(tf.linalg.solve(hessian, tf.reshape(grad, (6, 1))), (3, 2))
    return theta - step, tf.reduce_max(tf.abs(grad))


def _inner_solution(phi, x, labels):
    """theta*(phi) by Newton's method on the strictly convex float64 L_T (tolerance 1e-12)."""
    args = ([tf.constant(p, tf.float64) for p in phi], tf.constant(x),
            tf.constant(labels["seg"]), tf.constant(labels["aux"]))
    theta = tf.zeros((3, 2), tf.float64)
    for _ in range(50):
        new, size = _newton_step(theta, *args)
        if float(size) < 1e-12:
            return theta.numpy()
        theta = new
    raise AssertionError("Newton did not converge")


def test_convnet_hypergradient_matches_finite_differences():
    """AuxiliaryModel's implicit hypergradient (conjugate gradient, exact on 6 parameters) at
    theta*(phi) against central differences of L_dev(theta*(phi)), theta* re-solved in float64 for
    each perturbed phi: along one coordinate of every kernel and bias and two random directions.
    The model's lower objective first matches the float64 transcription of the reference network."""
    x, labels, x_dev, dev = _tiny_pixel_problem()
    tasks = [tfaux.Task("seg", role="primary", kind="dense_classification", num_classes=2,
                        head_fn=keras.layers.Identity),
             tfaux.Task("aux", kind="dense_classification", num_classes=2, head_fn=keras.layers.Identity)]
    encoder = keras.layers.Conv2D(2, 1, use_bias=False, kernel_regularizer=keras.regularizers.L2(LAM_PIXEL))
    model = tfaux.AuxiliaryModel(encoder, tasks, strategies.AuxiLearn(combiner="convnet"),
                                 tf.TensorSpec((H_TINY, W_TINY, 3), tf.float32),
                                 solver=hypergrad.ConjugateGradient(iterations=10))
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    rng = np.random.default_rng(4)
    phi = [rng.uniform(0.05, 0.3, v.shape) if len(v.shape) > 1 else rng.uniform(-0.5, 0.5, v.shape)
           for v in model.method.upper_variables]
    for v, value in zip(model.method.upper_variables, phi):
        v.assign(value.astype("float32"))
    batch = {"x": tf.constant(x, tf.float32), "labels": {k: tf.constant(v, tf.int32) for k, v in labels.items()}}
    dev_batch = {"x": tf.constant(x_dev, tf.float32), "labels": {"seg": tf.constant(dev, tf.int32)}}

    theta_any = rng.normal(size=(3, 2))
    encoder.kernel.assign(theta_any[None, None].astype("float32"))
    reference = _lower64(tf.constant(theta_any), [tf.constant(p) for p in phi], tf.constant(x),
                         tf.constant(labels["seg"]), tf.constant(labels["aux"]))
    np.testing.assert_allclose(float(model.lower_objective(batch)), float(reference), rtol=1e-5)

    theta_star = _inner_solution(phi, x, labels)
    encoder.kernel.assign(theta_star[None, None].astype("float32"))
    hyper = [h.numpy().astype("float64") for h in model.hypergradient(batch, dev_batch)[0]]
    assert all(np.isfinite(h).all() for h in hyper)

    directions = []
    for j, value in enumerate(phi):
        d = [np.zeros_like(p) for p in phi]
        d[j][tuple(rng.integers(0, s) for s in value.shape)] = 1.0
        directions.append(d)
    directions += [[rng.normal(size=p.shape) for p in phi] for _ in range(2)]
    eps = 1e-4
    for d in directions:
        moved = [[p + sign * eps * e for p, e in zip(phi, d)] for sign in (1.0, -1.0)]
        plus, minus = (_dev64(_inner_solution(m, x, labels), x_dev, dev) for m in moved)
        fd = (plus - minus) / (2 * eps)
        analytic = sum(float(np.sum(h * e)) for h, e in zip(hyper, d))
        assert abs(analytic - fd) <= 1e-4 * abs(fd) + 1e-9, (analytic, fd)


# ------------------------------------------------------------------ ConvNet on NYUv2-format data
def test_segnet_with_three_dense_heads_trains_with_the_convnet_combiner(tmp_path):
    """`auxilearn` with combiner=convnet through AuxiliaryModel + fit on generated NYUv2 files (8x12
    images, 13-class segmentation, depth, normals): one epoch runs, an upper step moves phi with a
    finite non-zero hypergradient, and every kernel stays >= 0."""
    make_nyuv2(tmp_path, n_train=16, n_val=4)
    data = pipelines.load("nyuv2", str(tmp_path), pipelines.Setting(rotation=False, val_fraction=0.25, dev_size=2))
    keras.utils.set_random_seed(0)
    strategy = strategies.get("auxilearn", **strategies.method_args("auxilearn", "combiner=convnet"))
    model = tfaux.AuxiliaryModel(segnet(data.input_spec.shape, filters=(4, 8)), data.tasks, strategy,
                                 data.input_spec, num_examples=data.num_train, upper_interval=2)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    assert model.upper.learning_rate == 1e-4 and model.upper.clipnorm == 100.0  # the reference ConvNet run's
    phi = [v.numpy().copy() for v in strategy.upper_variables]
    logs = {k: v[-1] for k, v in model.fit(data.train_with_dev(4), epochs=1, verbose=0).history.items()}
    assert np.isfinite(logs["loss"]) and np.isfinite(logs["hypergrad_norm"]) and logs["hypergrad_norm"] > 0
    assert any(np.any(v.numpy() != p) for v, p in zip(strategy.upper_variables, phi))
    assert all(k.numpy().min() >= 0.0 for k in strategy.kernels)
