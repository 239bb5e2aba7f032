"""PCGrad, CosineSim (GCS) and OL_AUX against their papers' formulas, recomputed in numpy
from per-task gradients taken independently (one plain GradientTape per task)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfaux
from tfaux.strategies.gcs import GCS
from tfaux.strategies.ol_aux import OLAux
from tfaux.strategies.pcgrad import PCGrad, orders, project_conflicting

import toy

LR = 0.1


def _tasks(num_tasks):
    """main (target), then binary auxiliaries: aux (agrees with main), flip (its opposite),
    other (an unrelated feature)."""
    aux = [tfaux.Task("aux", kind="binary"), tfaux.Task("flip", kind="binary"), tfaux.Task("other", kind="binary")]
    return [tfaux.Task("main", role="primary", num_classes=2)] + aux[:num_tasks - 1]


def _examples(n=toy.N, seed=0):
    data = toy.examples(n, seed)
    x = data["x"]
    data["labels"].update(flip=1.0 - data["labels"]["aux"], other=(x[:, 2] > 0).astype("float32"))
    data["mask"].update(flip=np.ones(n, "float32"), other=np.ones(n, "float32"))
    return data


def _batches(size=32, count=1):
    data = tf.data.Dataset.from_tensor_slices(_examples()).batch(size)
    return list(data.take(count))


def _model(strategy, num_tasks, encoder=None, run_eagerly=True):
    """A model with `num_tasks` tasks; eager by default (no tracing: fast single steps)."""
    encoder = encoder or keras.Sequential([keras.layers.Dense(16, activation="tanh")])
    model = tfaux.AuxiliaryModel(encoder, _tasks(num_tasks), strategy, tf.TensorSpec((toy.DIM,), tf.float32),
                                 num_examples=toy.N)
    model.compile(optimizer=keras.optimizers.SGD(LR), run_eagerly=run_eagerly)
    return model


def _conflict(model, scale=0.1):
    """Hand-made conflict: the heads of "aux" and "flip" (opposite labels) share small
    weights and no bias, so both predict ~1/2 and their gradients are nearly opposite."""
    heads = {t.name: h for t, h in zip(model.tasks, model.heads)}
    kernel = heads["aux"].layers[-1].kernel.numpy() * scale
    for name in ("aux", "flip"):
        heads[name].layers[-1].kernel.assign(kernel)
        heads[name].layers[-1].bias.assign(np.zeros(heads[name].layers[-1].bias.shape))
    return model


def _task_gradients(model, batch):
    """[task][variable of theta.all]: d mean_i l_ik / d theta, each task on its own tape
    with Keras' own losses (not tfaux's)."""
    out = []
    for task in model.tasks:
        with tf.GradientTape() as tape:
            logits = model(batch["x"], training=True)[task.name]
            y = batch["labels"][task.name]
            if task.kind == "binary":
                loss = keras.losses.binary_crossentropy(tf.cast(y, tf.float32)[:, None], logits, from_logits=True)
            else:
                loss = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
            loss = tf.reduce_mean(loss)
        grads = tape.gradient(loss, model.theta.all)
        out.append([np.zeros(v.shape, "float32") if g is None else g.numpy() for g, v in zip(grads, model.theta.all)])
    return out


def _flat(arrays):
    return np.concatenate([a.ravel() for a in arrays])


def _one_sgd_step(model, batch):
    """The update the strategy applied in one train_step (SGD: (before - after) / lr)."""
    before = [v.numpy().copy() for v in model.theta.all]
    model.fit(tf.data.Dataset.from_tensors(batch), epochs=1, verbose=0)
    return [(b - v.numpy()) / LR for b, v in zip(before, model.theta.all)]


def _split(model, grads):
    """(shared part, [head part of task k]) of a list aligned with theta.all."""
    n = len(model.theta.shared)
    heads, start = [], n
    for head in model.theta.heads:
        heads.append(grads[start:start + len(head)])
        start += len(head)
    return grads[:n], heads


def _assert_update(model, got, shared, heads, atol=2e-5):
    got_shared, got_heads = _split(model, got)
    np.testing.assert_allclose(_flat(got_shared), shared, atol=atol, rtol=1e-4)
    for k, (g, want) in enumerate(zip(got_heads, heads)):
        np.testing.assert_allclose(_flat(g), _flat(want), atol=atol, rtol=1e-4, err_msg=f"head {k}")


def _own_heads(model, grads):
    """Each task's head gradient of its own loss."""
    return [_split(model, g)[1][k] for k, g in enumerate(grads)]


def _algorithm_1(flat, order):
    """Yu et al. 2020, Algorithm 1, written plainly: every g_i projected against the
    original g_j (j in the given order) it conflicts with."""
    out = []
    for i, g in enumerate(flat):
        g = g.astype("float64").copy()
        for j in order[i]:
            dot = g @ flat[j]
            if dot < 0:
                g -= dot / (flat[j] @ flat[j]) * flat[j]
        out.append(g)
    return np.array(out)


# ---------------------------------------------------------------------------------- PCGrad
def test_pcgrad_two_tasks_projects_only_a_conflict_and_then_agrees_with_both():
    seen = set()
    for task in ("aux", "flip"):  # the auxiliary's labels, or their opposite: one of them conflicts
        keras.utils.set_random_seed(0)
        model = _model(PCGrad(), 2)
        batch = _batches()[0]
        batch = dict(batch, labels={"main": batch["labels"]["main"], "aux": batch["labels"][task]})
        grads = _task_gradients(model, batch)
        g1, g2 = (_flat(_split(model, g)[0]) for g in grads)
        dot = g1 @ g2
        seen.add(dot < 0)
        if dot < 0:
            p1, p2 = g1 - dot / (g2 @ g2) * g2, g2 - dot / (g1 @ g1) * g1
        else:
            p1, p2 = g1, g2  # nothing to project: the plain sum
        got = _one_sgd_step(model, batch)
        _assert_update(model, got, p1 + p2, _own_heads(model, grads))
        # The projected gradients of the module no longer conflict, and the update decreases
        # neither loss to first order.
        proj = project_conflicting(tf.constant(np.stack([g1, g2])), orders(0, 2)).numpy()
        scale = np.linalg.norm(g1) * np.linalg.norm(g2)
        assert proj[0] @ g2 >= -1e-5 * scale and proj[1] @ g1 >= -1e-5 * scale
        update = _flat(_split(model, got)[0])
        assert update @ g1 >= -1e-5 * scale and update @ g2 >= -1e-5 * scale
    assert seen == {True, False}, "the toy should give one conflicting and one agreeing auxiliary"


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_pcgrad_four_tasks_equals_algorithm_1_in_the_drawn_order(reduction):
    keras.utils.set_random_seed(1)
    model = _conflict(_model(PCGrad(reduction=reduction), 4))
    step = 7
    model.optimizer.iterations.assign(step)
    batch = _batches()[0]
    grads = _task_gradients(model, batch)
    flat = np.stack([_flat(_split(model, g)[0]) for g in grads])
    assert (flat @ flat.T < 0).any(), "some pair of tasks should conflict"
    order = orders(step, 4).numpy()
    projected = _algorithm_1(flat, order)
    shared = projected.sum(0) if reduction == "sum" else projected.mean(0)
    assert not np.allclose(shared, flat.sum(0) if reduction == "sum" else flat.mean(0), atol=1e-4)
    got = _one_sgd_step(model, batch)
    _assert_update(model, got, shared, _own_heads(model, grads))


def test_pcgrad_order_is_a_stateless_draw_of_the_other_tasks():
    first = orders(tf.constant(3, tf.int64), 5).numpy()
    np.testing.assert_array_equal(first, orders(3, 5).numpy())  # same step, same order (replicas, resume)
    for i, row in enumerate(first):
        assert sorted(row) == [j for j in range(5) if j != i]
    assert any(not np.array_equal(first, orders(s, 5).numpy()) for s in range(4, 10))


# ---------------------------------------------------------------------------- CosineSim
def test_cosinesim_drops_exactly_the_auxiliaries_with_negative_cosine():
    keras.utils.set_random_seed(2)
    model = _conflict(_model(GCS(weighted=False), 4))
    batch = _batches()[0]
    grads = _task_gradients(model, batch)
    flat = np.stack([_flat(_split(model, g)[0]) for g in grads])
    cos = flat[1:] @ flat[0] / np.linalg.norm(flat[1:], axis=1) / np.linalg.norm(flat[0])
    assert (cos > 0).any() and (cos < 0).any(), cos
    shared = flat[0] + flat[1:][cos > 0].sum(0)
    got = _one_sgd_step(model, batch)
    _assert_update(model, got, shared, _own_heads(model, grads))


def test_gcs_adds_an_l2_regularizer_gradient_once():
    keras.utils.set_random_seed(3)
    lam = 0.05
    encoder = keras.Sequential([keras.layers.Dense(16, activation="tanh",
                                                   kernel_regularizer=keras.regularizers.L2(lam))])
    model = _conflict(_model(GCS(), 3, encoder=encoder))
    batch = _batches()[0]
    grads = _task_gradients(model, batch)  # the task losses alone, without the regularizer
    flat = np.stack([_flat(_split(model, g)[0]) for g in grads])
    cos = flat[1:] @ flat[0] / np.linalg.norm(flat[1:], axis=1) / np.linalg.norm(flat[0])
    kernel = encoder.layers[0].kernel
    reg = _flat([2 * lam * kernel.numpy() if v is kernel else np.zeros(v.shape) for v in model.theta.shared])
    shared = flat[0] + flat[1:][cos > 0].sum(0) + reg  # d(lam ||W||^2)/dW = 2 lam W, added once
    got = _one_sgd_step(model, batch)
    _assert_update(model, got, shared, _own_heads(model, grads))


# ---------------------------------------------------------------------------------- OL_AUX
def test_ol_aux_weights_move_by_beta_times_the_accumulated_gradient_products():
    """Four SGD steps with horizon 2, replayed by hand: theta follows the w-weighted loss,
    and after every 2nd step w <- max(0, w + beta * sum_t lr g_main(theta_t) . g_k(theta_t))."""
    horizon, beta = 2, 5.0
    keras.utils.set_random_seed(4)
    model = _conflict(_model(OLAux(horizon=horizon, weight_lr=beta), 3))
    keras.utils.set_random_seed(4)
    replay = _model(OLAux(), 3)
    replay.set_weights(model.get_weights())
    batches = _batches(count=4)
    weights, acc = np.ones(2), np.zeros(2)
    for t, batch in enumerate(batches):
        grads = _task_gradients(replay, batch)
        flat = np.stack([_flat(_split(replay, g)[0]) for g in grads]).astype("float64")
        acc += LR * flat[1:] @ flat[0]
        for j, v in enumerate(replay.theta.all):
            v.assign(v - LR * (grads[0][j] + weights[0] * grads[1][j] + weights[1] * grads[2][j]))
        _one_sgd_step(model, batch)
        if (t + 1) % horizon == 0:
            weights, acc = np.maximum(weights + beta * acc, 0.0), np.zeros(2)
        np.testing.assert_allclose(model.method.accumulated.numpy(), acc, rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(model.method.aux_weights.numpy(), weights, rtol=1e-5)
    assert weights.max() > 1.001 and weights.min() < 0.999, weights  # helpful aux up, conflicting one down
    for got, want in zip(model.theta.all, replay.theta.all):
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=2e-5)


def test_ol_aux_weights_stay_non_negative():
    keras.utils.set_random_seed(5)
    model = _conflict(_model(OLAux(horizon=1, weight_lr=1e4), 3))
    batch = _batches()[0]
    grads = _task_gradients(model, batch)
    flat = np.stack([_flat(_split(model, g)[0]) for g in grads])
    dots = flat[1:] @ flat[0]
    assert (dots < 0).any() and (dots > 0).any(), dots
    _one_sgd_step(model, batch)
    np.testing.assert_array_equal(model.method.aux_weights.numpy()[dots < 0], 0.0)
    assert (model.method.aux_weights.numpy()[dots > 0] > 1.0).all()


def test_bad_arguments_are_clear_errors_and_configs_round_trip():
    with pytest.raises(ValueError, match="reduction"):
        PCGrad(reduction="max")
    with pytest.raises(ValueError, match="horizon"):
        OLAux(horizon=0)
    with pytest.raises(ValueError, match="weight_lr"):
        OLAux(weight_lr=-1.0)
    assert PCGrad.from_config(PCGrad(reduction="mean").get_config()).reduction == "mean"
    config = OLAux(horizon=3, weight_lr=0.5).get_config()
    assert (config["horizon"], config["weight_lr"]) == (3, 0.5)
    assert (OLAux().horizon, OLAux().weight_lr, PCGrad().reduction) == (5, 5.0, "sum")  # the papers' defaults


# (training through fit: tests/test_strategies.py runs every method of the table)


@pytest.mark.parametrize("make", [PCGrad, lambda: OLAux(horizon=3)])
def test_mirrored_two_devices_equals_one_device(make, two_devices):
    """Per-replica shares of PCGrad's nonlinear update, and OL_AUX's state written from
    all-replica gradients: two replicas give what one device gives."""
    data = tf.data.Dataset.from_tensor_slices(_examples(64)).batch(16, drop_remainder=True)

    def train(strategy, initial=None):
        with strategy.scope():
            model = _model(make(), 3, run_eagerly=initial is None)  # one device eager, two traced
            if initial is not None:
                model.set_weights(initial)
        start = model.get_weights()
        model.fit(data, epochs=1, verbose=0)
        return start, model

    start, single = train(tf.distribute.get_strategy())
    _, mirrored = train(two_devices, start)
    for v, a, b, s in zip(single.weights, single.get_weights(), mirrored.get_weights(), start):
        np.testing.assert_allclose(b, a, atol=2e-5, rtol=1e-4, err_msg=v.path)
    if isinstance(single.method, OLAux):
        assert not np.allclose(single.method.aux_weights.numpy(), 1.0)
