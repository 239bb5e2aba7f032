"""Exemplar-MT (S4L, as ARML uses it): the augmented copy and the consistency loss."""

import keras
import numpy as np
import tensorflow as tf

import pipelines
import tfaux
from pipelines import exemplar


def test_the_augmented_copy_is_flipped_noised_and_cut_out():
    x = tf.random.stateless_uniform([16, 16, 1], seed=[1, 2])
    seed = tf.constant([3, 4], tf.int64)
    a, b = exemplar.augmented(x, seed).numpy(), exemplar.augmented(x, seed).numpy()
    np.testing.assert_array_equal(a, b)  # a function of the seed
    cut = a == 0.0
    assert cut.sum() >= 16 and cut.sum() <= 64  # one square of side 8, clipped at the border
    rows, cols = np.nonzero(cut[..., 0])
    assert rows.max() - rows.min() <= 7 and cols.max() - cols.min() <= 7
    unflipped, flipped = x.numpy(), x.numpy()[:, ::-1]
    residual = min(np.abs(a - unflipped)[~cut].std(), np.abs(a - flipped)[~cut].std())
    noise = min((a - unflipped)[~cut].std(), (a - flipped)[~cut].std())
    assert abs(noise - exemplar.NOISE_STD) < 0.02, (noise, residual)
    other = exemplar.augmented(x, tf.constant([5, 6], tf.int64)).numpy()
    assert not np.array_equal(a, other)


def test_the_consistency_loss_is_one_minus_cosine():
    task = exemplar.exemplar_task()
    rng = np.random.default_rng(0)
    z, z_aug = rng.normal(size=(5, 7)), rng.normal(size=(5, 7))
    cos = np.sum(z * z_aug, 1) / np.linalg.norm(z, axis=1) / np.linalg.norm(z_aug, axis=1)
    np.testing.assert_allclose(task.per_example_loss(tf.constant(z), tf.constant(z_aug)).numpy(), 1 - cos, rtol=1e-5)
    np.testing.assert_allclose(task.per_example_loss(tf.constant(z), tf.constant(3 * z)).numpy(), 0.0, atol=1e-6)


def test_a_model_with_exemplar_pulls_the_two_copies_together(parse):
    """Pipeline + model: the exemplar task's loss is 1 - cos between the encoder's features of x
    and of its copy, and training on it alone (STL-free: Equal with the label weight 0) lowers it."""
    data = pipelines.load("digits", setting=pipelines.Setting(dev_size=60, exemplar=True, rotation=False))
    assert [t.name for t in data.tasks] == ["label", "exemplar"]
    keras.utils.set_random_seed(0)
    encoder = keras.Sequential([data.preprocessing(), tfaux.models.convnet4()])  # x and its copy alike
    model = tfaux.AuxiliaryModel(encoder, data.tasks,
                                 tfaux.strategies.Equal(task_weights={"label": 0.0}),
                                 input_spec=data.input_spec, num_examples=data.num_train)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    batch = next(iter(data.train_eval(64)))
    z, z_aug = model.encoder(batch["x"]).numpy(), model.encoder(batch["task_x"]["exemplar"]).numpy()
    cos = np.sum(z * z_aug, 1) / np.linalg.norm(z, axis=1) / np.linalg.norm(z_aug, axis=1)
    losses = model.forward(batch, training=False).losses.numpy()
    np.testing.assert_allclose(losses[:, 1], 1 - cos, atol=1e-5)
    before = losses[:, 1].mean()
    model.fit(data.train(64), epochs=2, verbose=0)
    assert model.forward(batch, training=False).losses.numpy()[:, 1].mean() < before
