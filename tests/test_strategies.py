"""Each strategy trains through model.fit, and does what its paper says."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfaux
from tfaux import strategies

import toy


@pytest.mark.parametrize("name", sorted(strategies.METHODS))
def test_every_strategy_learns_the_primary_task_through_fit(name):
    keras.utils.set_random_seed(0)
    model = toy.model(strategies.get(name))
    train, both = toy.streams()
    val = tf.data.Dataset.from_tensor_slices(toy.examples(256, seed=5)).batch(64)
    before = model.evaluate(val, return_dict=True, verbose=0)["primary_accuracy"]
    model.fit(both if model.method.bilevel else train, epochs=8, verbose=0)
    after = model.evaluate(val, return_dict=True, verbose=0)["primary_accuracy"]
    assert after > max(before, 0.8), (before, after)


def test_bilevel_strategy_fed_plain_batches_is_a_clear_error():
    model = toy.model(strategies.JTDS())
    train, _ = toy.streams()
    with pytest.raises(ValueError, match="train_with_dev"):
        model.fit(train, epochs=1, verbose=0)


def _one_sgd_step(model, batch):
    before = [v.numpy().copy() for v in model.theta.all]
    model.fit(tf.data.Dataset.from_tensors(batch), epochs=1, verbose=0)
    return [(b - v.numpy()) / 0.1 for b, v in zip(before, model.theta.all)]  # = gradient (SGD lr 0.1)


def _manual_gradient(model, batch, task_weights):
    """Gradient of sum_k lambda_k mean_i l_ik, computed with plain Keras ops."""
    with tf.GradientTape() as tape:
        out = model(batch["x"], training=True)
        main = keras.losses.sparse_categorical_crossentropy(batch["labels"]["main"], out["main"], from_logits=True)
        aux = keras.losses.binary_crossentropy(batch["labels"]["aux"][:, None], out["aux"], from_logits=True)
        loss = task_weights[0] * tf.reduce_mean(main) + task_weights[1] * tf.reduce_mean(aux)
    return [np.zeros(v.shape) if g is None else g.numpy() for g, v in
            zip(tape.gradient(loss, model.theta.all), model.theta.all)]


@pytest.mark.parametrize("strategy, lambdas", [(strategies.STL(), (1.0, 0.0)),
                                               (strategies.Equal({"aux": 0.3}), (1.0, 0.3))])
def test_fixed_weight_strategies_take_the_weighted_loss_gradient(strategy, lambdas):
    model = toy.model(strategy)
    batch = {k: v for k, v in next(iter(tf.data.Dataset.from_tensor_slices(toy.examples()).batch(32))).items()}
    expected = _manual_gradient(model, batch, lambdas)
    for got, want in zip(_one_sgd_step(model, batch), expected):
        np.testing.assert_allclose(got, want, atol=2e-5)


def test_gcs_drops_an_auxiliary_gradient_that_conflicts_and_keeps_one_that_agrees():
    """Linear encoder z = w.x, heads fixed: the aux gradient on w is kept iff its
    cosine with the primary gradient is positive (checked with plain TF)."""
    for aux_sign in (1.0, -1.0):
        model = toy.model(strategies.GCS())
        batch = next(iter(tf.data.Dataset.from_tensor_slices(toy.examples()).batch(32)))
        batch = dict(batch, labels={"main": batch["labels"]["main"],
                                    "aux": batch["labels"]["aux"] if aux_sign > 0 else 1 - batch["labels"]["aux"]})
        shared = model.theta.shared
        with tf.GradientTape(persistent=True) as tape:
            out = model(batch["x"], training=True)
            main = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
                batch["labels"]["main"], out["main"], from_logits=True))
            aux = tf.reduce_mean(keras.losses.binary_crossentropy(
                batch["labels"]["aux"][:, None], out["aux"], from_logits=True))
        gm = tape.gradient(main, shared)
        ga = tape.gradient(aux, shared)
        flat = lambda gs: np.concatenate([g.numpy().ravel() for g in gs])  # noqa: E731
        cos = flat(gm) @ flat(ga) / np.linalg.norm(flat(gm)) / np.linalg.norm(flat(ga))
        expected = [m.numpy() + (a.numpy() if cos > 0 else 0.0) for m, a in zip(gm, ga)]
        got = _one_sgd_step(model, batch)[:len(shared)]
        for g, e in zip(got, expected):
            np.testing.assert_allclose(g, e, atol=2e-5)


def test_jtds_weights_follow_equation_4():
    model = toy.model(strategies.JTDS())
    s = model.method
    rng = np.random.default_rng(1)
    for v in s.trainable_weights:
        v.assign(rng.normal(size=v.shape).astype("float32"))
    losses = rng.random((8, 2)).astype("float32")
    masks = np.ones((8, 2), "float32")
    feats = rng.normal(size=(8, 2, 16)).astype("float32")
    ctx = strategies.Context(losses=tf.constant(losses), masks=tf.constant(masks), features=tf.constant(feats),
                             ids=tf.range(8))
    got = s.example_weights(ctx).numpy()
    sp = lambda z: np.log1p(np.exp(z))  # noqa: E731
    z = (losses - losses.mean(0)) / (losses.std(0, ddof=1) + 1e-6)
    relation = np.einsum("bkd,dk->bk", feats, s.prototypes.numpy()) + s.prototype_bias.numpy()
    want = sp(s.task_prior.numpy()) * sp(relation) / (1 + np.exp(-(s.loss_scale.numpy() * z + s.loss_shift.numpy())))
    np.testing.assert_allclose(got, want, rtol=1e-4)


def test_jtds_normalized_divides_by_the_mean_labelled_pair_weight():
    """Every weight of the batch over the mean of Eq. 4's weights over its labelled
    (example, task) pairs, computed in numpy."""
    plain, normed = toy.model(strategies.JTDS()).method, toy.model(strategies.JTDS(normalize=True)).method
    rng = np.random.default_rng(2)
    for a, b in zip(plain.trainable_weights, normed.trainable_weights):
        value = rng.normal(size=a.shape).astype("float32")
        a.assign(value), b.assign(value)
    masks = np.ones((8, 2), "float32")
    masks[:3, 0] = 0.0
    ctx = strategies.Context(losses=tf.constant(rng.random((8, 2)), tf.float32), masks=tf.constant(masks),
                             features=tf.constant(rng.normal(size=(8, 2, 16)), tf.float32), ids=tf.range(8))
    w = plain.example_weights(ctx).numpy()
    np.testing.assert_allclose(normed.example_weights(ctx).numpy(), w / w[masks > 0].mean(), rtol=1e-5)


def test_njtds_upper_step_changes_only_the_rows_of_the_batch():
    model = toy.model(strategies.NJTDS(), upper_interval=1, upper=keras.optimizers.SGD(10.0))
    _, both = toy.streams()
    before = model.method.table.numpy().copy()
    model.optimizer.iterations.assign(1)
    model.fit(both.take(1), epochs=1, verbose=0)
    changed = np.any(model.method.table.numpy() != before, axis=1)
    assert changed[:32].any() and not changed[32:].any()


def test_auxilearn_combiner_stays_monotone():
    model = toy.model(strategies.AuxiLearn(), upper_interval=1, upper=keras.optimizers.SGD(100.0))
    _, both = toy.streams()
    model.fit(both, epochs=2, verbose=0)
    assert all(k.numpy().min() >= 0.0 for k in model.method.kernels)
    losses = tf.constant(np.random.default_rng(0).random((50, 2)), tf.float32)
    bigger = losses + tf.constant([[0.0, 0.5]])
    assert np.all(model.method.combine(bigger).numpy() >= model.method.combine(losses).numpy() - 1e-6)
    # Non-negative weights and Softplus make g convex, so an example's effective primary
    # weight 1 + dg/dl_main never falls as its own primary loss grows (noisy labels get more).
    main_losses = tf.Variable(np.stack([np.linspace(0.0, 5.0, 50), np.full(50, 0.3)], 1), dtype=tf.float32)
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(model.method.combine(main_losses))
    slopes = tape.gradient(total, main_losses).numpy()[:, 0]
    assert np.all(np.diff(slopes) >= -1e-6)


def test_unknown_method_is_a_clear_error():
    with pytest.raises(ValueError, match="Unknown method 'nope'"):
        strategies.get("nope")


def test_scheduler_weights_are_logged_per_task():
    """Initial N-JTDS weights are softplus(log(e - 1)) = 1 for every pair, so the
    first epoch's logged mean weights (before any upper step, M = 100) are 1."""
    model = toy.model(strategies.NJTDS(), upper_interval=100)
    _, both = toy.streams()
    history = model.fit(both, epochs=1, verbose=0).history
    np.testing.assert_allclose([history["main_weight"][0], history["aux_weight"][0]], [1.0, 1.0], rtol=1e-5)
