"""Settings beyond the core ones: a different-input auxiliary dataset (--aux_dataset, DTG-AuxL),
the reordered training stream as upper objective, and the flags the settings must accept.

Expected auxiliary inputs are computed here in numpy from the auxiliary source's own pixels,
never read back from the pipeline.
"""

import contextlib
import dataclasses
import pickle

import keras
import numpy as np
import pytest
import tensorflow as tf

import pipelines
import tfaux
from pipelines import DataError, Setting, Source, make_dataset
from pipelines.contract import DATASETS
from tfaux.tasks import Task

PRIMARY, AUX = "tmp_extra_primary", "tmp_extra_aux"


def gather(ds):
    batches = list(ds.as_numpy_iterator())
    return tf.nest.map_structure(lambda *a: np.concatenate(a), *batches)


def image_source(name, n, shape, classes, seed, low=0, high=256, split=None, constant=False):
    """Random uint8 images in [low, high) (constant per image and channel if `constant`)."""
    rng = np.random.default_rng(seed)
    size = (n, 1, 1, shape[-1]) if constant else (n,) + shape
    x = np.broadcast_to(rng.integers(low, high, size), (n,) + shape).astype(np.uint8)
    return Source(name=name, tasks=[Task("label", role="primary", num_classes=classes)], features=x,
                  labels={"label": rng.integers(0, classes, n).astype(np.int64)}, official_split=split,
                  is_image=True, image_shape=shape)


def table_source(name, n=300, classes=3):
    rows = np.arange(n)
    return Source(name=name, tasks=[Task("y", role="primary", num_classes=classes)],
                  features=rows.astype(np.float32)[:, None], labels={"y": (rows * 7 % classes).astype(np.int32)})


@contextlib.contextmanager
def registered(**sources):
    """Register in-memory sources under temporary names; always removed afterwards."""
    for name, src in sources.items():
        pipelines.register(name, lambda data_dir, s=src: s)
    try:
        yield
    finally:
        for name in sources:
            DATASETS.pop(name, None)


def aux_pair(aux_shape=(8, 8, 3), constant=False):
    """Primary: 240 8x8x3 images, 3 classes, pixels in [0, 100). Auxiliary: 150 images, 5 classes,
    pixels in [120, 256), official split 120 train + 30 test (the test rows must never be served)."""
    primary = image_source(PRIMARY, 240, (8, 8, 3), 3, seed=1, high=100)
    aux = image_source(AUX, 150, aux_shape, 5, seed=2, low=120, constant=constant,
                       split=np.array(["train"] * 120 + ["test"] * 30))
    return primary, aux


def expected_aux(aux):
    """Auxiliary training images in [0, 1], z-scored with their own per-channel statistics (what the
    model sees of task_x["aux"], which is served in the primary's raw pixel scale)."""
    x = aux.features[:120].astype(np.float64) / 255.0
    mean, std = x.reshape(-1, 3).mean(0), x.reshape(-1, 3).std(0)
    return (x - mean) / std, aux.labels["label"][:120]


def seen(data, x):
    """What the model sees of served images x: the dataset's preprocessing applied (numpy)."""
    return data.preprocessing()(x).numpy()


def match_rows(served, expected):
    """The expected row each served auxiliary image is (asserting it is one of them)."""
    d = ((served.reshape(len(served), 1, -1) - expected.reshape(1, len(expected), -1)) ** 2).sum(-1)
    rows = d.argmin(1)
    np.testing.assert_allclose(served, expected[rows], atol=1e-4)
    return rows


@pytest.fixture(scope="module")
def pair():
    primary, aux = aux_pair()
    with registered(**{PRIMARY: primary, AUX: aux}):
        data = pipelines.load(PRIMARY, setting=Setting(aux_dataset=AUX, dev_size=12, seed=5))
    return primary, aux, data


# ---------------------------------------------------------------- auxiliary dataset
def test_aux_task_and_elements_of_every_split(pair):
    _, aux, data = pair
    task = data.tasks[-1]
    assert [t.name for t in data.tasks] == ["label", "rotation", "aux_label"]
    assert (task.input_key, task.role, task.kind, task.num_classes) == ("aux", "auxiliary", "classification", 5)
    expected, aux_y = expected_aux(aux)
    streams = {"train": data.train(16), "train_eval": data.train_eval(64), "val": data.val(64),
               "test": data.test(64), "dev": data.dev(12).take(1)}
    for split, ds in streams.items():
        b = gather(ds)
        assert b["task_x"]["aux"].shape == b["x"].shape and b["task_x"]["aux"].dtype == np.float32
        rows = match_rows(seen(data, b["task_x"]["aux"]), expected)
        np.testing.assert_array_equal(b["labels"]["aux_label"], aux_y[rows])
        np.testing.assert_array_equal(b["mask"]["aux_label"], 0.0 if split == "dev" else 1.0)
        assert "rotation" in b["task_x"]  # both auxiliary inputs coexist
        if split != "train":  # the documented fixed pairing
            key = "train" if split == "train_eval" else split
            np.testing.assert_array_equal(rows, data.aux_indices[key][b["id"]])


def test_aux_train_pairing_changes_each_epoch_and_follows_the_seed(pair):
    primary, aux, data = pair
    expected, _ = expected_aux(aux)
    ds = data.train(22)
    epochs = [match_rows(seen(data, gather(ds)["task_x"]["aux"]), expected) for _ in range(2)]
    assert data.num_train >= 120 and all(len(np.unique(e[:120])) == 120 for e in epochs)  # a shuffle of all rows
    assert np.mean(epochs[0] != epochs[1]) > 0.5
    with registered(**{PRIMARY: primary, AUX: aux}):
        same = pipelines.load(PRIMARY, setting=Setting(aux_dataset=AUX, dev_size=12, seed=5))
        other = pipelines.load(PRIMARY, setting=Setting(aux_dataset=AUX, dev_size=12, seed=6))
    np.testing.assert_array_equal(match_rows(seen(same, gather(same.train(22))["task_x"]["aux"]), expected), epochs[0])
    assert np.mean(match_rows(seen(other, gather(other.train(22))["task_x"]["aux"]), expected) != epochs[0]) > 0.5


def test_aux_images_resized_to_the_primary_shape():
    primary, aux = aux_pair(aux_shape=(12, 12, 3), constant=True)
    data = make_dataset(primary, Setting(aux_dataset=AUX, dev_size=12, rotation=False), aux_source=aux)
    colour = aux.features[:120, 0, 0].astype(np.float64) / 255.0  # constant images survive any resize
    expected = np.broadcast_to(((colour - colour.mean(0)) / colour.std(0))[:, None, None], (120, 8, 8, 3))
    b = gather(data.val(64))
    assert data.input_spec == tf.TensorSpec((8, 8, 3), tf.float32) and b["task_x"]["aux"].shape[1:] == (8, 8, 3)
    np.testing.assert_allclose(seen(data, b["task_x"]["aux"]), expected[data.aux_indices["val"][b["id"]]], atol=1e-4)


def error_of(fn):
    with pytest.raises(DataError) as e:
        fn()
    text = str(e.value)
    assert "--aux_dataset" in text and text.endswith(".") and ". " not in text.rstrip(".").replace("e.g. ", ""), text
    return text


def test_aux_dataset_errors_name_the_flag():
    primary, aux = aux_pair()
    gray = image_source("tmp_extra_gray", 60, (8, 8, 1), 2, seed=3)
    with registered(**{PRIMARY: primary, "tmp_extra_gray": gray, "tmp_extra_table": table_source("tmp_extra_table")}):
        assert "not a registered dataset" in error_of(
            lambda: pipelines.load(PRIMARY, setting=Setting(aux_dataset="tmp_extra_nope")))
        assert "not an image dataset" in error_of(
            lambda: pipelines.load(PRIMARY, setting=Setting(aux_dataset="tmp_extra_table")))
        assert "3-channel" in error_of(lambda: pipelines.load(PRIMARY, setting=Setting(aux_dataset="tmp_extra_gray")))
        assert "is an image dataset" in error_of(
            lambda: pipelines.load("tmp_extra_table", setting=Setting(aux_dataset=PRIMARY, dev_size=10)))
    error_of(lambda: Setting(aux_dataset=3))
    error_of(lambda: make_dataset(primary, Setting(dev_size=12), aux_source=aux))
    assert PRIMARY not in DATASETS and "tmp_extra_gray" not in DATASETS


def write_cifar(root, n_per_file, rng):
    """Official-format python pickles of CIFAR-10 (5 train batches + test) and CIFAR-100."""
    def rows(n):
        x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        return x, x.transpose(0, 3, 1, 2).reshape(n, -1)

    c10, c100 = root / "cifar-10-batches-py", root / "cifar-100-python"
    c10.mkdir(), c100.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(c10 / name, "wb") as f:
            pickle.dump({b"data": rows(n_per_file)[1], b"labels": rng.integers(0, 10, n_per_file).tolist()}, f)
    written = {}
    for name, n in (("train", 3 * n_per_file), ("test", n_per_file)):
        x, data = rows(n)
        fine = rng.integers(0, 100, n)
        with open(c100 / name, "wb") as f:
            pickle.dump({b"data": data, b"fine_labels": fine.tolist(), b"coarse_labels": (fine // 5).tolist()}, f)
        written[name] = x, fine
    return written


def test_cifar10_with_cifar100_from_official_files(tmp_path):
    written = write_cifar(tmp_path, 20, np.random.default_rng(4))
    data = pipelines.load("cifar10", data_dir=str(tmp_path), aux_data_dir=str(tmp_path),
                          setting=Setting(aux_dataset="cifar100", dev_size=5))
    assert [t.name for t in data.tasks] == ["label", "rotation", "aux_label"] and data.tasks[-1].num_classes == 100
    x, fine = written["train"]  # the auxiliary rows: CIFAR-100's training images only
    x = x.astype(np.float64) / 255.0
    expected = (x - x.reshape(-1, 3).mean(0)) / x.reshape(-1, 3).std(0)
    b = gather(data.train(16))
    rows = match_rows(seen(data, b["task_x"]["aux"]), expected)
    np.testing.assert_array_equal(b["labels"]["aux_label"], fine[rows])


# ---------------------------------------------------------------- reordered training stream
def test_train_with_reordered_serves_training_examples_in_another_order():
    rows = np.arange(400)
    src = Source(name="track", tasks=[Task("y", role="primary", num_classes=4), Task("side", kind="regression")],
                 features=rows.astype(np.float32)[:, None],
                 labels={"y": (rows * 7 % 4).astype(np.int32), "side": (rows / 400).astype(np.float32)})
    data = make_dataset(src, Setting(dev_size=20, label_fraction=0.5, noise_rate=0.3, seed=2))
    pairs = data.train_with_reordered(16)
    assert set(pairs.element_spec) == {"train", "dev"}
    assert sum(1 for _ in pairs) == data.num_train // 16
    n_labelled = int(data.labelled.sum())
    dev = gather(data.reordered(16).take(2 * (n_labelled // 16)))  # endless: two passes
    ids = dev["id"]
    first = ids[: (n_labelled // 16) * 16]
    assert len(np.unique(first)) == len(first) and set(first) <= set(np.flatnonzero(data.labelled))
    np.testing.assert_array_equal(dev["x"][:, 0].astype(int), data.indices["train"][ids])  # training rows
    np.testing.assert_array_equal(dev["labels"]["y"], data.train_labels[ids])  # served (noisy) labels
    assert data.corrupted[ids].any()
    assert np.all(dev["mask"]["y"] == 1) and np.all(dev["mask"]["side"] == 1)
    train = gather(pairs.map(lambda p: p["train"]))
    assert not np.array_equal(train["id"][: len(first)], first)
    assert not np.array_equal(first[:64], ids[len(first): len(first) + 64])  # reshuffled each pass
    again = gather(make_dataset(src, Setting(dev_size=20, label_fraction=0.5, noise_rate=0.3, seed=2))
                   .reordered(16).take(3))
    np.testing.assert_array_equal(again["id"], ids[:48])  # seeded


def test_reordered_is_unaugmented_images(pair):
    _, _, data = pair
    plain = gather(data.train_eval(512))
    b = next(iter(data.train_with_reordered(16)))["dev"]
    np.testing.assert_allclose(b["x"].numpy(), plain["x"][b["id"].numpy()], atol=1e-6)
    np.testing.assert_array_equal(b["labels"]["rotation"].numpy(), b["id"].numpy() % 4)


# ---------------------------------------------------------------- flags
def test_setting_accepts_every_flag_of_the_issue():
    flags = {"--label_fraction": 0.25, "--shots_per_class": 3, "--noise_rate": 0.4, "--noise_kind": "pair_flip",
             "--dev_size": 50, "--aux_dataset": "cifar100"}
    fields = {f.name for f in dataclasses.fields(Setting)}
    for flag, value in flags.items():
        name = flag[2:]
        assert name in fields
        assert getattr(Setting(**{name: value}), name) == value
    assert Setting(noise_kind="uniform").noise_kind == "uniform"
    assert Setting().aux_dataset is None


# ---------------------------------------------------------------- model
def test_auxiliary_model_trains_on_an_aux_dataset(pair):
    _, _, data = pair
    keras.utils.set_random_seed(0)
    encoder = keras.Sequential([data.preprocessing(), keras.layers.Flatten(),
                                keras.layers.Dense(16, activation="relu")])
    model = tfaux.AuxiliaryModel(encoder, data.tasks, tfaux.strategies.Equal(), data.input_spec,
                                 num_examples=data.num_train)
    model.compile(keras.optimizers.SGD(0.05))
    history = model.fit(data.train(32), epochs=1, validation_data=data.val(64), verbose=0)
    assert np.isfinite(history.history["aux_label_loss"][0]) and history.history["aux_label_loss"][0] > 0
    assert "val_aux_label_loss" in history.history
    batch = next(iter(data.val(16)))
    losses, _, _, _ = model.task_losses(batch, training=False, all_tasks=True)
    k = [t.name for t in model.tasks].index("aux_label")
    own = model.tasks[k].per_example_loss(batch["labels"]["aux_label"], model.heads[k](encoder(batch["task_x"]["aux"])))
    np.testing.assert_allclose(losses[:, k].numpy(), own.numpy(), rtol=1e-5)  # the head read task_x["aux"]
