"""PACS loader (pipelines.pacs): tasks, masks, splits and shots on a generated folder of tiny
images in the distribution's layout, determinism, errors, and batches through pipelines.load."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import pipelines
from pipelines import pacs
from pipelines.errors import DataError

PER_CLASS = 6
RNG = np.random.default_rng(0)


def make_pacs(root, per_class=PER_CLASS, size=16, skip=(), png=False):
    """root/<domain>/<class>/<images> for every domain and class (except (domain, class) pairs in
    `skip`, left as empty folders)."""
    root = Path(root)
    for d in pacs.DOMAINS:
        for c in pacs.CLASSES:
            folder = root / d / c
            folder.mkdir(parents=True, exist_ok=True)
            if (d, c) in skip:
                continue
            for i in range(per_class):
                img = Image.fromarray(RNG.integers(0, 256, (size, size, 3), dtype=np.uint8))
                img.save(folder / f"{c}_{i}.{'png' if png else 'jpg'}")
    return root


@pytest.fixture(scope="module")
def pacs_dir(tmp_path_factory):
    return make_pacs(tmp_path_factory.mktemp("pacs") / "kfold").parent  # the usual PACS/kfold/ layout


def domain_of(source):
    return np.array([Path(p).parts[-3] for p in source.features])


def test_tasks_masks_splits_and_shots(pacs_dir):
    s = pacs.load_pacs(str(pacs_dir), target_domain="sketch", shots=2, image_size=16)
    s.validate()
    assert [t.name for t in s.tasks] == ["target", "photo", "art_painting", "cartoon"]
    assert s.tasks[0].is_primary and not any(t.is_primary for t in s.tasks[1:])
    assert all(t.kind == "classification" and t.num_classes == 7 for t in s.tasks)
    assert s.num_examples == 4 * 7 * PER_CLASS and s.name == "pacs_sketch_2shot"
    dom, split, y = domain_of(s), s.official_split, s.labels["target"]
    np.testing.assert_array_equal(y, [pacs.CLASSES.index(Path(p).parts[-2]) for p in s.features])
    tgt = dom == "sketch"
    # target domain: `shots` labelled training images per class, the rest test; never val
    for c in range(7):
        assert np.sum(tgt & (y == c) & (split == "train")) == 2
        assert np.sum(tgt & (y == c) & (split == "test")) == PER_CLASS - 2
    assert not np.any(tgt & (split == "val")) and not np.any(~tgt & (split == "test"))
    # sources: round(6 / 10) = 1 val image per (domain, class), the rest train
    for d in ("photo", "art_painting", "cartoon"):
        for c in range(7):
            assert np.sum((dom == d) & (y == c) & (split == "val")) == 1
        of_d = dom == d
        np.testing.assert_array_equal(s.masks[d], of_d)
        np.testing.assert_array_equal(s.labels[d], np.where(of_d, y, 0))
    # target labels: the shots and the test images of the target domain, and the source val images
    # (model selection); never a source training image
    np.testing.assert_array_equal(s.masks["target"], tgt | (split == "val"))
    assert s.mask("target")[(split == "train") & ~tgt].sum() == 0
    assert s.is_image and s.image_shape == (16, 16, 3)
    x = s.decode(tf.constant(s.features[0]))
    assert x.shape == (16, 16, 3) and x.dtype == tf.float32 and 0 <= float(tf.reduce_min(x))
    aug = s.augment(x, tf.constant([1, 2], tf.int64))
    assert aug.shape == (16, 16, 3)
    np.testing.assert_array_equal(aug, s.augment(x, tf.constant([1, 2], tf.int64)))


def test_deterministic_and_source_split_independent_of_target(pacs_dir):
    a = pacs.load_pacs(str(pacs_dir), target_domain="sketch", shots=2, image_size=16)
    b = pacs.load_pacs(str(pacs_dir), target_domain="sketch", shots=2, image_size=16)
    np.testing.assert_array_equal(a.features, b.features)
    np.testing.assert_array_equal(a.official_split, b.official_split)
    c = pacs.load_pacs(str(pacs_dir), target_domain="photo", shots=2, image_size=16)
    assert [t.name for t in c.tasks] == ["target", "art_painting", "cartoon", "sketch"]
    np.testing.assert_array_equal(a.features, c.features)
    both = np.isin(domain_of(a), ["art_painting", "cartoon"])  # a source domain in both
    np.testing.assert_array_equal(a.official_split[both], c.official_split[both])
    shots = domain_of(c) == "photo"
    assert set(c.official_split[shots]) == {"train", "test"}


def test_layouts_png_and_registered_variants(tmp_path):
    for root in (make_pacs(tmp_path / "plain", png=True), make_pacs(tmp_path / "a" / "PACS" / "kfold").parents[1]):
        s = pacs.load_pacs(str(root), target_domain="cartoon", shots=1, image_size=8)
        assert s.num_examples == 4 * 7 * PER_CLASS and (s.official_split == "test").sum() == 7 * (PER_CLASS - 1)
    assert pipelines.DATASETS["pacs"] is pacs.load_pacs
    for d in pacs.DOMAINS:
        assert {f"pacs_{d}", f"pacs_{d}_1shot"} <= set(pipelines.DATASETS)


def expect_error(fn, *parts):
    with pytest.raises(DataError) as e:
        fn()
    for p in parts:
        assert p in str(e.value), str(e.value)


def test_errors(tmp_path):
    load = pacs.load_pacs
    expect_error(lambda: load(None), "--data_dir", "kfold")
    expect_error(lambda: load(str(tmp_path / "absent")), "--data_dir", "does not exist")
    expect_error(lambda: load(str(tmp_path), target_domain="clipart"), "target_domain", "clipart")
    expect_error(lambda: load(str(tmp_path), shots=0), "shots")
    expect_error(lambda: load(str(tmp_path)), "no PACS domain folder")
    root = make_pacs(tmp_path / "few", per_class=3, skip={("cartoon", "horse")})
    expect_error(lambda: load(str(root), target_domain="photo", shots=2), "cartoon/horse", "no image")
    (root / "cartoon" / "horse").rmdir()
    expect_error(lambda: load(str(root), target_domain="photo", shots=2), "missing class folder", "cartoon/horse")
    make_pacs(root, per_class=3)
    expect_error(lambda: load(str(root), target_domain="photo", shots=3), "'photo'", "'dog'", "shots=3")
    expect_error(lambda: load(str(root), target_domain="photo", shots=2), "validation")  # round(0.3) = 0
    shutil.rmtree(root / "sketch")
    expect_error(lambda: load(str(root)), "missing domain folder", "'sketch'")


def test_load_yields_batches(pacs_dir):
    setting = pipelines.Setting(rotation=False, dev_size=5)
    data = pipelines.load("pacs_art_painting", data_dir=str(pacs_dir), setting=setting)
    assert [t.name for t in data.tasks] == ["target", "photo", "cartoon", "sketch"]
    n_src = 3 * 7 * PER_CLASS
    assert data.num_train == n_src - 21 + 7 * 5 and data.num_val + data.num_dev == 21
    assert data.num_test == 7 * (PER_CLASS - 5)
    assert data.input_spec.shape == (224, 224, 3)
    batch = next(iter(data.train(16)))
    assert batch["x"].shape == (16, 224, 224, 3)
    assert set(batch["labels"]) == set(batch["mask"]) == {"target", "photo", "cartoon", "sketch"}
    # every training image is labelled for exactly one task: its own domain's, or the target's shots
    np.testing.assert_array_equal(tf.add_n(list(batch["mask"].values())).numpy(), np.ones(16))
    shots = sum(float(tf.reduce_sum(b["mask"]["target"])) for b in data.train_eval(64))
    assert shots == 7 * 5
    upper = next(iter(data.reordered(64)))  # the labelled target images, for a method's main-task batch
    assert upper["x"].shape[0] == 35 and float(tf.reduce_min(upper["mask"]["target"])) == 1.0
    for split in (data.val(64), data.test(64)):
        b = next(iter(split))
        assert float(tf.reduce_min(b["mask"]["target"])) == 1.0  # val and test are scored on the target head
    test = next(iter(data.test(64)))
    assert all(float(tf.reduce_sum(test["mask"][d])) == 0 for d in ("photo", "cartoon", "sketch"))
