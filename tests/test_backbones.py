"""Backbones of tfaux.models: shapes, parameter counts (worked out by hand), training
through AuxiliaryModel.fit, and ResNet-18 weight files."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfaux
from tfaux.models import autoint, lenet, mlp_head, resnet18

B = 8
MOVIELENS_SPEC = {"user": tf.TensorSpec((), tf.int32), "item": tf.TensorSpec((), tf.int32),
                  "age": tf.TensorSpec((), tf.int32), "gender": tf.TensorSpec((), tf.int32),
                  "occupation": tf.TensorSpec((), tf.int32), "genres": tf.TensorSpec((19,), tf.float32)}


def conv(k, c_in, c_out):  # bias-free k x k convolution
    return k * k * c_in * c_out


def bn(c):  # trainable gamma, beta (moving mean / variance counted apart)
    return 2 * c


def basic_block(c_in, c_out, stride):
    n = conv(3, c_in, c_out) + bn(c_out) + conv(3, c_out, c_out) + bn(c_out)
    if stride != 1 or c_in != c_out:
        n += conv(1, c_in, c_out) + bn(c_out)
    return n


def count(variables):
    return sum(int(np.prod(v.shape)) for v in variables)


def movielens_x(n, seed=0):
    rng = np.random.default_rng(seed)
    return {"user": rng.integers(0, 50, n).astype("int32"), "item": rng.integers(0, 40, n).astype("int32"),
            "age": rng.integers(0, 7, n).astype("int32"), "gender": rng.integers(0, 2, n).astype("int32"),
            "occupation": rng.integers(0, 21, n).astype("int32"),
            "genres": (rng.random((n, 19)) < 0.2).astype("float32")}


# ------------------------------------------------------------------ shapes
def test_output_shapes():
    assert resnet18("cifar")(tf.zeros((B, 16, 16, 3))).shape == (B, 512)
    assert resnet18("imagenet")(tf.zeros((B, 32, 32, 3))).shape == (B, 512)
    assert lenet()(tf.zeros((B, 28, 28, 1))).shape == (B, 50)
    x = tf.nest.map_structure(tf.constant, movielens_x(B))
    assert autoint(MOVIELENS_SPEC, num_bins=64)(x).shape == (B, 6 * 16)  # 6 fields x (4 heads x 4)
    assert autoint(MOVIELENS_SPEC, heads=2, head_dim=8, num_bins=64)(x).shape == (B, 6 * 2 * 8)


# ------------------------------------------------------------------ parameter counts
def test_resnet18_parameter_counts():
    stages = (basic_block(64, 64, 1) + basic_block(64, 64, 1)            # 147,968
              + basic_block(64, 128, 2) + basic_block(128, 128, 1)      # 525,568
              + basic_block(128, 256, 2) + basic_block(256, 256, 1)     # 2,099,712
              + basic_block(256, 512, 2) + basic_block(512, 512, 1))    # 8,393,728
    assert stages == 11_166_976
    imagenet = conv(7, 3, 64) + bn(64) + stages  # 9,408 + 128 + stages
    cifar = conv(3, 3, 64) + bn(64) + stages     # 1,728 + 128 + stages
    # torchvision resnet18: 11,689,512 parameters, minus its fc (512 * 1000 + 1000).
    assert imagenet == 11_689_512 - (512 * 1000 + 1000) == 11_176_512
    assert cifar == 11_176_512 - (9_408 - 1_728) == 11_168_832
    # BN moving mean + variance: 20 BN layers over
    # 64 + 4*64 + (4*128 + 128) + (4*256 + 256) + (4*512 + 512) = 4,800 channels.
    moving = 2 * 4_800
    for stem, trainable in (("cifar", 11_168_832), ("imagenet", 11_176_512)):
        model = resnet18(stem)
        assert count(model.trainable_variables) == trainable, stem
        assert count(model.non_trainable_variables) == moving, stem
        assert model.count_params() == trainable + moving, stem


def test_lenet_parameter_count():
    conv1 = 5 * 5 * 1 * 10 + 10    # 260;   28 -> 24 -> pool 12
    conv2 = 5 * 5 * 10 * 20 + 20   # 5,020; 12 -> 8 -> pool 4
    fc = (4 * 4 * 20) * 50 + 50    # 16,050 (320 inputs)
    model = lenet()
    assert count(model.trainable_variables) == model.count_params() == conv1 + conv2 + fc == 21_330


def test_autoint_parameter_count_tiny_config():
    spec = {"a": tf.TensorSpec((), tf.int32), "b": tf.TensorSpec((), tf.int64), "g": tf.TensorSpec((3,), tf.float32)}
    model = autoint(spec, embedding_dim=4, blocks=2, heads=2, head_dim=3, num_bins=10)
    embeddings = 2 * (10 * 4)                 # a, b: 10 rows x 4
    projection = 3 * 4 + 4                    # g: Dense(4) on 3 inputs, with bias
    block1 = 4 * (4 * (2 * 3))                # W_Q, W_K, W_V, W_Res: 4 -> 2 heads x 3
    block2 = 4 * ((2 * 3) * (2 * 3))          # 6 -> 6
    x = {"a": tf.constant([1, 12]), "b": tf.constant([3, 4], tf.int64), "g": tf.ones((2, 3))}
    assert model(x).shape == (2, 3 * 6)
    assert model.count_params() == embeddings + projection + block1 + block2 == 80 + 16 + 96 + 144


# ------------------------------------------------------------------ heads
def test_mlp_head():
    one, two = mlp_head(5)(), mlp_head(5, layers=2, hidden=7)()
    h = tf.zeros((B, 12))
    assert one(h).shape == two(h).shape == (B, 5)
    assert one.count_params() == 12 * 5 + 5
    assert two.count_params() == (12 * 7 + 7) + (7 * 5 + 5)
    factory = mlp_head(3)
    assert factory() is not factory()  # a fresh head per task
    with pytest.raises(ValueError, match="layers"):
        mlp_head(5, layers=3)


# ------------------------------------------------------------------ training through fit
def _images(n, size, channels, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, size, size, channels)).astype("float32")
    left = x[:, :, : size // 2].mean(axis=(1, 2, 3))
    top = x[:, : size // 2].mean(axis=(1, 2, 3))
    return x, (left > 0).astype("int32"), (top > 0).astype("float32")


def _problem(name, n):
    if name == "autoint":
        x = movielens_x(n)
        primary, aux = (x["item"] % 2).astype("int32"), x["gender"].astype("float32")
        return autoint(MOVIELENS_SPEC, num_bins=64), x, MOVIELENS_SPEC, primary, aux
    if name == "lenet":
        x, primary, aux = _images(n, 28, 1)
        return lenet(), x, tf.TensorSpec((28, 28, 1), tf.float32), primary, aux
    x, primary, aux = _images(n, 16, 3)
    return resnet18("cifar"), x, tf.TensorSpec((16, 16, 3), tf.float32), primary, aux


@pytest.mark.parametrize("name, n, epochs, lr", [("resnet18", 16, 3, 1e-3), ("lenet", 32, 5, 3e-3),
                                                  ("autoint", 32, 5, 1e-2)])
def test_backbone_trains_inside_auxiliary_model(name, n, epochs, lr):
    keras.utils.set_random_seed(0)
    encoder, x, spec, primary, aux = _problem(name, n)
    data = {"x": x, "labels": {"main": primary, "aux": aux},
            "mask": {"main": np.ones(n, "float32"), "aux": np.ones(n, "float32")}, "id": np.arange(n, dtype="int64")}
    tasks = [tfaux.Task("main", role="primary", num_classes=2, head_fn=mlp_head(2, layers=2, hidden=16)),
             tfaux.Task("aux", kind="binary", head_fn=mlp_head(1))]
    model = tfaux.AuxiliaryModel(encoder, tasks, tfaux.strategies.Equal(), input_spec=spec, num_examples=n)
    model.compile(optimizer=keras.optimizers.Adam(lr))
    train = tf.data.Dataset.from_tensor_slices(data).batch(B)
    history = model.fit(train, epochs=epochs, verbose=0).history["loss"]
    assert np.all(np.isfinite(history)), history
    assert history[-1] < history[0], history


# ------------------------------------------------------------------ weight files
def test_resnet18_missing_weights_file_is_a_clear_error():
    with pytest.raises(ValueError, match="/no/file"):
        resnet18(weights="/no/file")


def test_resnet18_weights_round_trip(tmp_path):
    keras.utils.set_random_seed(1)
    x = tf.random.normal((B, 16, 16, 3))
    model = resnet18("cifar")
    model(x, training=True)  # move the BN statistics off their initial values
    path = tmp_path / "resnet18.weights.h5"
    model.save_weights(path)
    loaded = resnet18("cifar", weights=path)
    expected = model(x, training=False).numpy()
    assert not np.allclose(resnet18("cifar")(x, training=False).numpy(), expected)
    np.testing.assert_allclose(loaded(x, training=False).numpy(), expected, rtol=1e-5, atol=1e-6)
