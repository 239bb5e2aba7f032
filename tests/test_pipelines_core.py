"""Core pipelines: the data contract, settings, digits and MNIST readers.

Facts are checked against independent sources (sklearn, the published MNIST class
counts, files the test writes itself, a source whose input is its own row index),
never against the pipeline's own output.
"""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import pipelines
from pipelines import DataError, Setting, Source, make_dataset
from pipelines.mnist import IMAGES_MAGIC, LABELS_MAGIC, load_mnist, read_idx
from tfaux.tasks import Task

MNIST_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
MNIST_T10K_CLASS_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]  # published test-set counts


def gather(ds):
    """All batches of a finite dataset, concatenated along the batch axis (numpy)."""
    batches = list(ds.as_numpy_iterator())
    return tf.nest.map_structure(lambda *a: np.concatenate(a), *batches)


def tracking_source(n=600, classes=3, split=None, time=None, kind="classification"):
    """Non-image source whose input x is the example's own source row index."""
    rows = np.arange(n)
    primary = Task("y", role="primary", kind=kind, num_classes=classes)
    y = (rows * 7) % classes if kind == "classification" else rows / n
    return Source(name="track", tasks=[primary, Task("aux", kind="regression")],
                  features=rows.astype(np.float32)[:, None],
                  labels={"y": y.astype(np.int32 if kind == "classification" else np.float32),
                          "aux": (rows / n + 1).astype(np.float32)},
                  official_split=split, time=time)


def source_rows(batch):
    return batch["x"][:, 0].astype(int)


@pytest.fixture(scope="module")
def digits():
    return pipelines.load("digits")


def write_idx(path, array, magic):
    data = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(data)


# ---------------------------------------------------------------- datasets
def test_digits_source_matches_sklearn():
    from sklearn.datasets import load_digits

    src = pipelines.DATASETS["digits"](None)
    bunch = load_digits()
    assert src.features.shape == (1797, 8, 8, 1) and src.features.dtype == np.uint8
    np.testing.assert_array_equal(src.labels["label"], bunch.target)
    assert set(np.unique(src.labels["label"])) == set(range(10))
    np.testing.assert_allclose(src.features[..., 0] / 255.0, bunch.images / 16.0, atol=0.5 / 255)
    assert src.official_split is None and src.is_image and src.image_shape == (8, 8, 1)


def test_digits_default_split_sizes(digits):
    assert digits.num_train + digits.num_dev + digits.num_val + digits.num_test == 1797
    assert digits.num_test == round(0.2 * 1797)
    assert 1100 <= digits.num_train <= 1200 and 100 <= digits.num_dev <= 200 and digits.num_val >= 180
    assert [t.name for t in digits.tasks] == ["label", "rotation"]
    assert digits.input_spec == tf.TensorSpec((8, 8, 1), tf.float32)


@pytest.mark.skipif(not MNIST_DIR.is_dir(), reason=f"real MNIST t10k files not found at {MNIST_DIR}")
def test_real_mnist_t10k():
    src = load_mnist(MNIST_DIR)
    assert src.features.shape == (10000, 28, 28, 1) and src.features.max() == 255 and src.features.min() == 0
    np.testing.assert_array_equal(np.bincount(src.labels["label"], minlength=10), MNIST_T10K_CLASS_COUNTS)
    assert src.official_split is None
    data = make_dataset(src, Setting(dev_size=200))
    assert data.num_test == 2000 and data.num_dev == 200
    assert data.num_train + data.num_dev + data.num_val + data.num_test == 10000
    assert sum(np.bincount(src.labels["label"][data.indices[s]], minlength=10).sum()
               for s in ("train", "dev", "val", "test")) == 10000


def test_idx_roundtrip_gz_and_plain(tmp_path):
    rng = np.random.default_rng(1)
    written = {}
    for stem, n, gz in (("train", 30, True), ("t10k", 12, False)):
        images, labels = rng.integers(0, 256, (n, 28, 28)), rng.integers(0, 10, n)
        suffix = ".gz" if gz else ""
        write_idx(tmp_path / f"{stem}-images-idx3-ubyte{suffix}", images, IMAGES_MAGIC)
        write_idx(tmp_path / f"{stem}-labels-idx1-ubyte{suffix}", labels, LABELS_MAGIC)
        written[stem] = images, labels
    np.testing.assert_array_equal(read_idx(tmp_path / "train-images-idx3-ubyte.gz", IMAGES_MAGIC), written["train"][0])
    np.testing.assert_array_equal(read_idx(tmp_path / "t10k-labels-idx1-ubyte", LABELS_MAGIC), written["t10k"][1])
    src = pipelines.DATASETS["mnist"](str(tmp_path))
    np.testing.assert_array_equal(src.features[..., 0], np.concatenate([written["train"][0], written["t10k"][0]]))
    np.testing.assert_array_equal(src.labels["label"], np.concatenate([written["train"][1], written["t10k"][1]]))
    assert list(src.official_split) == ["train"] * 30 + ["test"] * 12


def _idx_dir(tmp_path, n_images=5, n_labels=5):
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((n_images, 28, 28)), IMAGES_MAGIC)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(n_labels), LABELS_MAGIC)
    return tmp_path


def test_idx_errors_name_the_file(tmp_path):
    images = _idx_dir(tmp_path) / "t10k-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte is truncated.*5 images of 28x28"):
        load_mnist(tmp_path)
    images.write_bytes(struct.pack(">I", 0x0803)[:2])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte is truncated"):
        load_mnist(tmp_path)
    write_idx(images, np.zeros((5, 28, 28)), 0x0903)
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte has magic number 0x00000903"):
        load_mnist(tmp_path)
    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:-6])
    write_idx(images, np.zeros((5, 28, 28)), IMAGES_MAGIC)
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz is truncated"):
        load_mnist(tmp_path)


@pytest.mark.parametrize("dims, words", [((0, 28, 28), "none may be 0"), ((5, 0, 28), "none may be 0"),
                                         ((2**32 - 1,) * 3, "truncated: its header announces 4294967295 images")])
def test_idx_headers_with_zero_or_huge_dimensions_are_refused(tmp_path, dims, words):
    images = _idx_dir(tmp_path) / "t10k-images-idx3-ubyte"
    images.write_bytes(struct.pack(">I", IMAGES_MAGIC) + struct.pack(">3I", *dims) + bytes(100))
    with pytest.raises(DataError, match=words):
        load_mnist(tmp_path)


def test_idx_count_mismatch_and_missing(tmp_path):
    _idx_dir(tmp_path, n_images=5, n_labels=4)
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz holds 4 labels but .*t10k-images"):
        load_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.*is missing"):
        load_mnist(tmp_path)
    with pytest.raises(DataError, match=f"--data_dir {tmp_path / 'nope'} does not exist"):
        pipelines.load("mnist", data_dir=str(tmp_path / "nope"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="holds no MNIST idx files"):
        load_mnist(empty)


@pytest.mark.skipif((Path.home() / "tensorflow_datasets" / "mnist").exists(), reason="TFDS mnist is prepared here")
def test_mnist_without_data_dir_fails_fast_offline():
    with pytest.raises(DataError, match="--data_dir"):
        load_mnist(None)


def test_unknown_dataset_lists_names():
    with pytest.raises(DataError, match="Unknown dataset 'foo'; choose one of: .*digits.*mnist"):
        pipelines.load("foo")


# ---------------------------------------------------------------- splits and settings
def test_splits_disjoint_cover_pool_and_dev_is_clean():
    src = tracking_source()
    data = make_dataset(src, Setting(dev_size=30, noise_rate=0.3))
    seen = {"train": source_rows(gather(data.train_eval(64))), "val": source_rows(gather(data.val(64))),
            "test": source_rows(gather(data.test(64))), "dev": source_rows(gather(data.dev(7).take(200)))}
    assert sorted(np.concatenate([np.unique(v) for v in seen.values()])) == list(range(600))
    assert len(seen["train"]) == data.num_train and len(np.unique(seen["dev"])) == data.num_dev == 30
    for split in ("dev", "val", "test"):
        batch = gather(data.val(64) if split == "val" else data.test(64) if split == "test" else data.dev(30).take(1))
        np.testing.assert_array_equal(batch["labels"]["y"], src.labels["y"][source_rows(batch)])
    dev = gather(data.dev(30).take(1))
    assert np.all(dev["mask"]["y"] == 1) and np.all(dev["mask"]["aux"] == 0) and np.all(dev["labels"]["aux"] == 0)
    np.testing.assert_array_equal(np.bincount(src.labels["y"][source_rows(dev)]), [10, 10, 10])


def test_official_and_chronological_splits():
    split = np.array(["train"] * 500 + ["test"] * 100)
    data = make_dataset(tracking_source(split=split), Setting(dev_size=20, val_fraction=0.1))
    assert set(data.indices["test"]) == set(range(500, 600))
    assert data.num_val + data.num_dev == 50 and data.num_train == 450
    time = np.random.default_rng(0).permutation(600)
    data = make_dataset(tracking_source(time=time), Setting(chronological=True, dev_size=10))
    t = {s: time[source_rows(gather(getattr(data, s if s != "train" else "train_eval")(64)))]
         for s in ("train", "val", "test")}
    assert t["train"].max() < t["val"].min() and t["val"].max() < t["test"].min()


def test_dev_per_class_comes_from_train():
    src = tracking_source()
    base = make_dataset(src, Setting(dev_size=30))
    data = make_dataset(src, Setting(dev_per_class=5))
    assert data.num_dev == 15 and data.num_val == base.num_val + base.num_dev
    np.testing.assert_array_equal(np.bincount(src.labels["y"][data.indices["dev"]]), [5, 5, 5])
    assert not set(data.indices["dev"]) & set(data.indices["train"])


def test_label_fraction_and_shots():
    src = tracking_source()
    data = make_dataset(src, Setting(dev_size=30, label_fraction=0.3))
    assert abs(int(data.labelled.sum()) - round(0.3 * data.num_train)) <= 1
    train = gather(data.train_eval(64))
    np.testing.assert_array_equal(train["mask"]["y"], data.labelled[train["id"]])
    assert np.all(train["mask"]["aux"] == 1)
    shots = make_dataset(src, Setting(dev_size=30, shots_per_class=4))
    np.testing.assert_array_equal(np.bincount(src.labels["y"][shots.indices["train"][shots.labelled]]), [4, 4, 4])


@pytest.mark.parametrize("kind", ["uniform", "pair_flip"])
def test_noise_exact_count_and_flags(kind):
    src = tracking_source(classes=5)
    data = make_dataset(src, Setting(dev_size=30, noise_rate=0.4, noise_kind=kind))
    assert abs(int(data.corrupted.sum()) - round(0.4 * data.num_train)) <= 1
    train = gather(data.train_eval(64))
    true = src.labels["y"][source_rows(train)]
    np.testing.assert_array_equal(data.clean_train_labels[train["id"]], true)
    np.testing.assert_array_equal(data.corrupted[train["id"]], train["labels"]["y"] != true)
    flipped = train["labels"]["y"][data.corrupted[train["id"]]]
    if kind == "pair_flip":
        np.testing.assert_array_equal(flipped, (true[data.corrupted[train["id"]]] + 1) % 5)
    else:
        offsets = (flipped - true[data.corrupted[train["id"]]]) % 5
        assert set(offsets) == {1, 2, 3, 4}
    for split in (data.val(64), data.test(64)):
        batch = gather(split)
        np.testing.assert_array_equal(batch["labels"]["y"], src.labels["y"][source_rows(batch)])


def test_same_seed_same_batches_other_seed_differs():
    def first(seed):
        data = pipelines.load("digits", setting=Setting(seed=seed))
        return data.indices["train"], next(iter(data.train(16))), next(iter(data.dev(16)))

    (ia, ta, da), (ib, tb, db), (ic, tc, _) = first(3), first(3), first(4)
    np.testing.assert_array_equal(ia, ib)
    for a, b in ((ta, tb), (da, db)):
        tf.nest.map_structure(lambda u, v: np.testing.assert_array_equal(u.numpy(), v.numpy()), a, b)
    assert not np.array_equal(ia, ic) and not np.array_equal(ta["x"].numpy(), tc["x"].numpy())


def test_train_reshuffles_each_epoch(digits):
    ds = digits.train(32)
    first, second = next(iter(ds))["id"].numpy(), next(iter(ds))["id"].numpy()
    assert not np.array_equal(first, second)


def test_rotation_matches_rot90(digits):
    val = next(iter(digits.val(64)))
    k = val["labels"]["rotation"].numpy()
    np.testing.assert_array_equal(k, val["id"].numpy() % 4)
    train = next(iter(digits.train(64)))
    for batch in (val, train):
        for x, r, kk in zip(batch["x"], batch["task_x"]["rotation"], batch["labels"]["rotation"].numpy()):
            np.testing.assert_array_equal(r.numpy(), tf.image.rot90(x, int(kk)).numpy())
        assert np.all(batch["mask"]["rotation"].numpy() == 1)
    assert len(set(train["labels"]["rotation"].numpy())) == 4
    ds = digits.train(64, shuffle=False)  # a fresh rotation every epoch of one dataset
    epochs = [gather(ds) for _ in range(2)]
    np.testing.assert_array_equal(epochs[0]["id"], epochs[1]["id"])
    assert np.mean(epochs[0]["labels"]["rotation"] != epochs[1]["labels"]["rotation"]) > 0.5


@pytest.mark.parametrize("two_args", [False, True])
def test_decoded_image_source_augments_train_only(two_args):
    n = 200
    src = Source(name="painted", tasks=[Task("y", role="primary", num_classes=2)],
                 features={"row": np.arange(n)}, labels={"y": (np.arange(n) % 2).astype(np.int32)},
                 decode=lambda f: tf.cast(tf.fill([4, 4, 3], f["row"] % 256), tf.uint8),
                 is_image=True, image_shape=(4, 4, 3),
                 augment=(lambda x, seed: x * 0) if two_args else (lambda x: x * 0))
    data = make_dataset(src, Setting(dev_size=10))
    assert data.input_spec == tf.TensorSpec((4, 4, 3), tf.float32)
    train, plain = gather(data.train(16)), gather(data.train_eval(16))
    assert np.ptp(train["x"]) == 0 and np.ptp(plain["x"]) > 0
    pixels = data.indices["train"] % 256  # every pixel of a train example, raw
    np.testing.assert_array_equal(plain["x"][:, 2, 1, 0], pixels[plain["id"]])
    expected = (pixels[plain["id"]] / 255.0 - (pixels / 255.0).mean()) / (pixels / 255.0).std()
    normalised = data.preprocessing()(plain["x"]).numpy()
    np.testing.assert_allclose(normalised[:, 2, 1, 0], expected, rtol=1e-4, atol=1e-5)
    assert data.raw_dtype == tf.uint8


def test_images_come_raw_and_preprocessing_normalises_with_train_statistics(digits):
    from sklearn.datasets import load_digits

    x = gather(digits.train_eval(512))["x"]
    raw = np.round(load_digits().images[digits.indices["train"]] * (255.0 / 16.0))  # the loader's uint8 0..255
    np.testing.assert_array_equal(x[..., 0], raw)
    z = digits.preprocessing()(x).numpy()
    assert abs(z.mean()) < 1e-4 and abs(z.std() - 1) < 1e-3
    layers = digits.preprocessing().layers
    assert [type(layer).__name__ for layer in layers] == ["Rescaling", "Normalization"]
    assert layers[0].scale == 1 / 255 and digits.preprocessing() is not digits.preprocessing()
    assert digits.raw_dtype == tf.uint8


def test_element_spec_and_train_with_dev(digits):
    spec = digits.train(32).element_spec
    assert set(spec) == {"x", "task_x", "labels", "mask", "id"}
    assert spec["x"] == tf.TensorSpec((32, 8, 8, 1), tf.float32)
    assert spec["labels"] == {"label": tf.TensorSpec((32,), tf.int32), "rotation": tf.TensorSpec((32,), tf.int32)}
    assert all(s.dtype == tf.float32 for s in spec["mask"].values()) and spec["id"].dtype == tf.int64
    src = tracking_source(kind="regression")
    tabular = make_dataset(src, Setting(dev_size=20))
    plain = tabular.val(8).element_spec
    assert "task_x" not in plain and plain["labels"]["y"].dtype == tf.float32
    assert tabular.preprocessing() is None and tabular.raw_dtype == tf.float32  # non-image x is fed as it is
    pairs = digits.train_with_dev(100, dev_batch_size=50)
    assert set(pairs.element_spec) == {"train", "dev"} and pairs.element_spec["dev"]["x"].shape[0] == 50
    assert sum(1 for _ in pairs) == digits.num_train // 100
    assert next(iter(digits.dev(10_000)))["x"].shape[0] == digits.num_dev


@pytest.mark.parametrize("field,value", [
    ("noise_rate", 1.5), ("noise_rate", -0.1), ("label_fraction", 0.0), ("val_fraction", 1.0),
    ("test_fraction", -0.2), ("dev_size", -1), ("dev_per_class", 2.5), ("shots_per_class", -3),
    ("noise_kind", "gaussian"), ("seed", -1), ("rotation", "yes")])
def test_invalid_setting_names_the_flag(field, value):
    with pytest.raises(DataError, match=f"--{field}"):
        Setting(**{field: value})


def test_setting_errors_that_depend_on_the_data():
    src = tracking_source()
    with pytest.raises(DataError, match="--dev_size 500"):
        make_dataset(src, Setting(dev_size=500))
    with pytest.raises(DataError, match="--dev_per_class 1000"):
        make_dataset(src, Setting(dev_per_class=1000))
    with pytest.raises(DataError, match="--chronological"):
        make_dataset(src, Setting(chronological=True))
    with pytest.raises(DataError, match="--noise_rate"):
        make_dataset(tracking_source(kind="regression"), Setting(noise_rate=0.2, dev_size=10))
    with pytest.raises(DataError, match="--batch_size"):
        make_dataset(src, Setting(dev_size=10)).train(100_000)


@pytest.mark.parametrize("image", [False, True])
def test_gathered_and_decoded_paths_serve_the_same_batches(image):
    """Decode-free sources shuffle ids and gather (vectorised when not images); a source with
    a decode fn shuffles decoded examples: with one seed both serve identical batches."""
    n = 300
    rows = np.arange(n)
    features = (np.broadcast_to((rows % 256)[:, None, None, None], (n, 4, 4, 1)).astype(np.uint8) if image
                else {"a": rows.astype(np.float64)[:, None], "b": (rows % 7).astype(np.int32)})
    kw = dict(name="same", tasks=[Task("y", role="primary", num_classes=3), Task("aux", kind="regression")],
              features=features, labels={"y": (rows * 7 % 3).astype(np.int32), "aux": (rows / n).astype(np.float32)},
              is_image=image, image_shape=(4, 4, 1) if image else None,
              augment=(lambda x, seed: tf.image.stateless_random_flip_left_right(x, seed)) if image else None)
    setting = Setting(dev_size=20, label_fraction=0.6, seed=1)
    plain, decoded = (make_dataset(Source(**kw, decode=d), setting) for d in (None, lambda f: f))
    for name in ("train", "dev", "val", "reordered"):
        a, b = (list((getattr(d, name)(32) if name in ("train", "val") else getattr(d, name)(16).take(20))
                     .as_numpy_iterator()) for d in (plain, decoded))
        assert len(a) == len(b) > 0
        for u, v in zip(a, b):
            tf.nest.map_structure(np.testing.assert_array_equal, u, v)
