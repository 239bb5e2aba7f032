"""Fashion-MNIST and the Multi-MNIST variants of seed 004 Sec. 5.2 (Multi-Fashion, Multi-(MNIST+Fashion)).

Raw files are idx files the test writes itself in the official format (tiny: 30 train / 12 test);
composites are checked against an independent construction (a 36x36 canvas resized by PIL's
nearest-neighbour filter, as the reference loader's scipy.misc.imresize did), never against
the pipeline's own output.
"""

import runpy

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

import apps.flags
import pipelines
from pipelines import Setting, fashion_mnist, multi_mnist
from test_pipelines_datasets import checked, expect_error, write_idx

N = {"train": 30, "test": 12}
PREFIX = {"train": "train", "test": "t10k"}


def write_family(folder, seed, splits=("train", "test")):
    """Random 28x28 items and labels 0..9 as idx files (train gzipped, t10k plain); {split: (x, y)}."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for s in splits:
        x, y = rng.integers(0, 256, (N[s], 28, 28)).astype(np.uint8), rng.integers(0, 10, N[s])
        gz = s == "train"
        suffix = ".gz" if gz else ""
        write_idx(folder / f"{PREFIX[s]}-images-idx3-ubyte{suffix}", x, gz)
        write_idx(folder / f"{PREFIX[s]}-labels-idx1-ubyte{suffix}", y, gz)
        written[s] = x, y
    return written


def layout(root, name):
    """Raw files for variant `name`: {split: (top-left x, y, bottom-right x, y)} of what was written."""
    if name == "multi_mnist":  # the MNIST files in --data_dir itself
        m = write_family(root, 1)
        return {s: (*m[s], *m[s]) for s in m}
    if name == "multi_fashion":  # the Fashion-MNIST files in --data_dir/fashion_mnist/
        f = write_family(root / "fashion_mnist", 2)
        return {s: (*f[s], *f[s]) for s in f}
    m, f = write_family(root / "mnist", 1), write_family(root / "fashion_mnist", 2)
    return {s: (*m[s], *f[s]) for s in m}


def reference(left, right):
    """The reference construction of one composite: left at 0:28, right at 6:34 (max), NN resize to 28."""
    canvas = np.zeros((36, 36), np.uint8)
    canvas[0:28, 0:28] = left
    canvas[6:34, 6:34] = np.maximum(canvas[6:34, 6:34], right)
    return np.asarray(Image.fromarray(canvas).resize((28, 28), Image.NEAREST))


# ----------------------------------------------------------------------------- Fashion-MNIST

def test_fashion_mnist_from_idx(tmp_path):
    written = write_family(tmp_path, 3)
    s = checked(pipelines.DATASETS["fashion_mnist"](str(tmp_path)), ["label"])
    assert s.name == "fashion_mnist" and s.features.shape == (42, 28, 28, 1) and s.features.dtype == np.uint8
    assert s.is_image and s.image_shape == (28, 28, 1) and s.tasks[0].num_classes == 10
    np.testing.assert_array_equal(s.features[..., 0], np.concatenate([written["train"][0], written["test"][0]]))
    np.testing.assert_array_equal(s.labels["label"], np.concatenate([written["train"][1], written["test"][1]]))
    assert list(s.official_split) == ["train"] * 30 + ["test"] * 12
    only_test = write_family(tmp_path / "t10k_only", 4, splits=("test",))
    s = fashion_mnist.load_fashion_mnist(tmp_path / "t10k_only")
    assert s.official_split is None and s.num_examples == len(only_test["test"][1])


def test_fashion_mnist_errors(tmp_path):
    expect_error(lambda: fashion_mnist.load_fashion_mnist(tmp_path / "nope"), "nope", "does not exist")
    (tmp_path / "empty").mkdir()
    expect_error(lambda: fashion_mnist.load_fashion_mnist(tmp_path / "empty"), "holds no Fashion-MNIST idx files",
                 "train-images-idx3-ubyte")
    write_family(tmp_path / "half", 5)
    (tmp_path / "half" / "t10k-labels-idx1-ubyte").unlink()
    expect_error(lambda: fashion_mnist.load_fashion_mnist(tmp_path / "half"), "t10k-labels-idx1-ubyte", "missing")
    if not tfds.builder("fashion_mnist").is_prepared():  # offline, no prepared copy: one sentence naming --data_dir
        expect_error(lambda: fashion_mnist.load_fashion_mnist(None), "fashion_mnist", "--data_dir")


# ----------------------------------------------------------------------------- Multi-* construction

@pytest.mark.parametrize("name", ["multi_fashion", "multi_mnist_fashion", "multi_mnist"])
def test_composites_follow_the_reference_construction(tmp_path, name):
    parts = layout(tmp_path, name)
    s = checked(pipelines.DATASETS[name](str(tmp_path)), ["top_left", "bottom_right"])
    assert s.name == name and s.features.shape == (42, 28, 28, 1) and s.features.dtype == np.uint8
    assert s.image_shape == (28, 28, 1) and [t.num_classes for t in s.tasks] == [10, 10]
    assert list(s.official_split) == ["train"] * 30 + ["test"] * 12
    start = 0
    for split, (x, y, x2, y2) in parts.items():
        out = s.features[start:start + N[split], ..., 0]
        np.testing.assert_array_equal(s.labels["top_left"][start:start + N[split]], y)
        for i in range(N[split]):
            # top-left 5x5 corner: canvas rows/cols 0, 1, 3, 4, 5 of item i alone (the partner starts at 6)
            np.testing.assert_array_equal(out[i, :5, :5], x[i][np.ix_([0, 1, 3, 4, 5], [0, 1, 3, 4, 5])])
            partners = [j for j in range(len(x2)) if np.array_equal(reference(x[i], x2[j]), out[i])]
            assert len(partners) == 1, (split, i, partners)  # its partner is an item of the same split
            assert s.labels["bottom_right"][start + i] == y2[partners[0]]
        start += N[split]


def test_seed_reproduces_and_changes_the_pairing(tmp_path):
    layout(tmp_path, "multi_mnist_fashion")
    a, b = (multi_mnist.load_multi_mnist_fashion(str(tmp_path), seed=7) for _ in range(2))
    np.testing.assert_array_equal(a.features, b.features)
    np.testing.assert_array_equal(a.labels["bottom_right"], b.labels["bottom_right"])
    c = multi_mnist.load_multi_mnist_fashion(str(tmp_path), seed=8)
    assert not np.array_equal(a.features, c.features)
    np.testing.assert_array_equal(a.labels["top_left"], c.labels["top_left"])  # item i stays put


def test_mnist_fashion_needs_both_subfolders(tmp_path):
    load = multi_mnist.load_multi_mnist_fashion
    expect_error(lambda: load(str(tmp_path / "nope")), "nope")
    write_family(tmp_path / "mnist", 1)
    msg = expect_error(lambda: load(str(tmp_path)), "'fashion_mnist/'", "multi_mnist_fashion")
    assert msg.count(". ") == 0 and msg.endswith(".")  # one sentence
    (tmp_path / "fashion_mnist").mkdir()
    expect_error(lambda: load(str(tmp_path)), str(tmp_path / "fashion_mnist"), "holds no idx files")
    write_family(tmp_path / "fashion_mnist", 2, splits=("test",))
    expect_error(lambda: load(str(tmp_path)), "same split", "t10k")
    other = tmp_path / "other"
    write_family(other / "fashion_mnist", 2)
    expect_error(lambda: load(str(other)), "'mnist/'")
    write_family(other / "mnist", 1)  # MNIST items in the flat --data_dir do not stand in for mnist/
    write_idx(other / "fashion_mnist" / "t10k-images-idx3-ubyte", np.zeros((12, 20, 20)), gz=False)
    expect_error(lambda: load(str(other)), "28x28 Fashion-MNIST", "(20, 20)")


def test_load_yields_batches(tmp_path):
    layout(tmp_path, "multi_mnist_fashion")
    data = pipelines.load("multi_mnist_fashion", data_dir=str(tmp_path), setting=Setting(dev_size=2, rotation=False))
    assert [t.name for t in data.tasks] == ["top_left", "bottom_right"] and data.num_test == 12
    batch = next(iter(data.train(8)))
    assert batch["x"].shape == (8, 28, 28, 1) and batch["x"].dtype == tf.float32
    assert set(batch["labels"]) == {"top_left", "bottom_right"} and batch["labels"]["top_left"].shape == (8,)
    test = list(data.test(5).as_numpy_iterator())
    assert sum(len(b["id"]) for b in test) == 12


@pytest.mark.parametrize("loader,tasks", [(fashion_mnist.load_fashion_mnist, ["label"]),
                                         (multi_mnist.load_multi_fashion, ["top_left", "bottom_right"]),
                                         (multi_mnist.load_multi_mnist_fashion, ["top_left", "bottom_right"])],
                         ids=["fashion_mnist", "multi_fashion", "multi_mnist_fashion"])
def test_tfds_sources(loader, tasks):
    with tfds.testing.mock_data(num_examples=4):
        s = checked(loader(None), tasks)
    assert s.num_examples == 8 and s.features.shape[1:] == (28, 28, 1) and s.features.dtype == np.uint8
    assert list(s.official_split) == ["train"] * 4 + ["test"] * 4


# ----------------------------------------------------------------------------- binaries

def test_binaries_change_only_the_dataset(monkeypatch):
    seen = {}
    monkeypatch.setattr(apps.flags, "define_flags", lambda **d: seen.setdefault(d["dataset"], d))
    for app in ("multi_mnist", "multi_fashion", "multi_mnist_fashion"):
        runpy.run_module(f"apps.{app}")  # not as __main__: defines (here: records) the flags only
    base = {k: v for k, v in seen.pop("multi_mnist").items() if k not in ("dataset", "output_dir")}
    for name, d in seen.items():
        assert d == {**base, "dataset": name, "output_dir": f"runs/{name}"}
    assert sorted(seen) == ["multi_fashion", "multi_mnist_fashion"]
