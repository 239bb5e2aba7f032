"""NYUv2 loader (pipelines.nyuv2): the preprocessed MTAN layout read back exactly from generated
tiny files, splits and settings for a dense primary task, and one-sentence errors naming the file."""

import os
from pathlib import Path

import numpy as np
import pytest

import pipelines
from pipelines import nyuv2
from pipelines.errors import DataError

H, W = 8, 12


def make_nyuv2(root, n_train=6, n_val=3, h=H, w=W, seed=0):
    """root/{train,val}/{image,label,depth,normal}/<i>.npy as the preprocessed NYUv2 stores them
    (label as floats with -1 unlabelled, depth and normals 0 where missing). Returns the arrays."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    data = {}
    for split, n in (("train", n_train), ("val", n_val)):
        for sub in nyuv2.FOLDERS:
            (root / split / sub).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            image = rng.random((h, w, 3)).astype(np.float32)
            label = rng.integers(-1, nyuv2.NUM_CLASSES, (h, w)).astype(np.float32)
            depth = rng.uniform(0.5, 10.0, (h, w, 1)).astype(np.float32)
            depth[rng.random((h, w)) < 0.2] = 0.0
            normal = rng.normal(size=(h, w, 3)).astype(np.float32)
            normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
            normal[rng.random((h, w)) < 0.2] = 0.0
            for sub, a in zip(nyuv2.FOLDERS, (image, label, depth, normal)):
                np.save(root / split / sub / f"{i}.npy", a)
                data.setdefault((split, sub), []).append(a)
    return {k: np.stack(v) for k, v in data.items()}


def one_sentence(message):
    return message.endswith(".") and ". " not in message and "\n" not in message


def test_reads_the_official_layout_exactly(tmp_path):
    files = make_nyuv2(tmp_path)
    s = nyuv2.load_nyuv2(str(tmp_path))
    s.validate()
    assert s.name == "nyuv2" and s.is_image and s.image_shape == (H, W, 3) and s.augment is None
    assert [(t.name, t.role, t.kind) for t in s.tasks] == [
        ("segmentation", "primary", "dense_classification"), ("depth", "auxiliary", "dense_regression"),
        ("normal", "auxiliary", "dense_normal")]
    assert s.tasks[0].num_classes == 13 and s.tasks[0].ignore_index == -1
    np.testing.assert_array_equal(s.official_split, ["train"] * 6 + ["test"] * 3)
    rows = {"train": slice(0, 6), "val": slice(6, 9)}
    for split, r in rows.items():
        np.testing.assert_array_equal(s.features[r], files[(split, "image")])
        np.testing.assert_array_equal(s.labels["segmentation"][r], files[(split, "label")].astype(int))
        np.testing.assert_array_equal(s.labels["depth"][r], files[(split, "depth")])
        np.testing.assert_array_equal(s.labels["normal"][r], files[(split, "normal")])
    assert s.labels["segmentation"].dtype == np.int32 and s.features.dtype == np.float32


def test_folder_may_be_nested_under_nyuv2(tmp_path):
    make_nyuv2(tmp_path / "nyuv2", n_train=2, n_val=1)
    assert nyuv2.load_nyuv2(str(tmp_path)).num_examples == 3


def test_batches_through_pipelines_load_match_the_files(tmp_path):
    files = make_nyuv2(tmp_path, n_train=8, n_val=3)
    data = pipelines.load("nyuv2", str(tmp_path), pipelines.Setting(rotation=False, val_fraction=0.25, dev_size=1))
    assert [t.name for t in data.tasks] == ["segmentation", "depth", "normal"]  # no rotation task
    assert (data.num_train, data.num_dev, data.num_val, data.num_test) == (6, 1, 1, 3)
    assert data.input_spec.shape == (H, W, 3)
    batch = next(iter(data.train(3)))
    assert batch["x"].shape == (3, H, W, 3)
    assert batch["labels"]["segmentation"].shape == (3, H, W) and batch["labels"]["segmentation"].dtype == "int32"
    assert batch["labels"]["depth"].shape == (3, H, W, 1) and batch["labels"]["normal"].shape == (3, H, W, 3)
    assert batch["mask"]["segmentation"].shape == (3,)
    test = next(iter(data.test(8)))  # the val folder, in file order
    np.testing.assert_array_equal(test["labels"]["segmentation"], files[("val", "label")].astype(int))
    np.testing.assert_array_equal(test["labels"]["normal"], files[("val", "normal")])
    train = next(iter(data.train_eval(8)))  # raw; the preprocessing z-scores with the training images' statistics
    pixels = files[("train", "image")][data.indices["train"]].reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(np.asarray(train["x"]).reshape(-1, 3), pixels, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(data.preprocessing()(train["x"]).numpy().reshape(-1, 3),
                               (pixels - pixels.mean(0)) / pixels.std(0), rtol=1e-4, atol=1e-4)
    dev = next(iter(data.dev(1)))
    assert dev["mask"]["depth"].numpy().sum() == 0 and dev["mask"]["segmentation"].numpy().sum() == 1


def test_settings_for_a_dense_primary(tmp_path):
    make_nyuv2(tmp_path, n_train=8, n_val=2)
    with pytest.raises(DataError, match="--rotation needs square images.*8x12") as e:
        pipelines.load("nyuv2", str(tmp_path), pipelines.Setting(dev_size=1))
    assert one_sentence(str(e.value).split("; ")[0] + ".")
    for bad in (dict(noise_rate=0.2), dict(dev_per_class=1), dict(shots_per_class=1)):
        with pytest.raises(DataError, match="is dense_classification"):
            pipelines.load("nyuv2", str(tmp_path), pipelines.Setting(rotation=False, dev_size=1, **bad))
    data = pipelines.load("nyuv2", str(tmp_path), pipelines.Setting(rotation=False, dev_size=1, label_fraction=0.5))
    assert data.labelled.sum() == round(0.5 * data.num_train)
    batch = next(iter(data.train_eval(16)))
    np.testing.assert_array_equal(batch["mask"]["segmentation"], data.labelled.astype(np.float32))
    np.testing.assert_array_equal(batch["mask"]["depth"], np.ones(data.num_train))
    hidden = np.asarray(batch["labels"]["segmentation"])[~data.labelled]
    assert hidden.shape == (data.num_train - data.labelled.sum(), H, W) and not hidden.any()


def _save(path, array):
    np.save(path, array)


CORRUPTIONS = {
    "missing split folder": (lambda r: os.rename(r / "val", r / "other"), "missing folder 'val/'"),
    "missing subfolder": (lambda r: [os.remove(p) for p in (r / "val" / "depth").iterdir()]
                          and os.rmdir(r / "val" / "depth"), "missing folder 'val/depth/'"),
    "count mismatch": (lambda r: os.remove(r / "train" / "normal" / "3.npy"),
                       "folder 'train/normal/' holds 3 .npy files but 'train/image/' holds 4"),
    "index gap": (lambda r: [os.rename(r / "train" / s / "3.npy", r / "train" / s / "7.npy") for s in nyuv2.FOLDERS],
                  "file 'train/image/3.npy' is missing"),
    "depth shape": (lambda r: _save(r / "train" / "depth" / "2.npy", np.ones((H, W))),
                    r"file 'train/depth/2.npy' has shape \(8, 12\), expected \(8, 12, 1\)"),
    "image size": (lambda r: _save(r / "val" / "image" / "1.npy", np.ones((H, W + 1, 3), np.float32)),
                   r"file 'val/image/1.npy' has shape \(8, 13, 3\), expected \(8, 12, 3\)"),
    "first image rank": (lambda r: _save(r / "train" / "image" / "0.npy", np.ones((H, W))),
                         r"file 'train/image/0.npy' has shape \(8, 12\), expected \[H, W, 3\]"),
    "label class": (lambda r: _save(r / "train" / "label" / "1.npy", np.full((H, W), 13.0)),
                    "file 'train/label/1.npy' must hold integer classes 0..12 or -1"),
    "label fraction": (lambda r: _save(r / "train" / "label" / "1.npy", np.full((H, W), 0.5)),
                       "file 'train/label/1.npy' must hold integer classes"),
    "pixel range": (lambda r: _save(r / "train" / "image" / "2.npy", np.full((H, W, 3), 255.0)),
                    r"file 'train/image/2.npy' holds pixel values outside \[0, 1\]"),
    "non-finite": (lambda r: _save(r / "val" / "normal" / "0.npy", np.full((H, W, 3), np.nan)),
                   "file 'val/normal/0.npy' holds non-finite values"),
    "not npy": (lambda r: (r / "val" / "label" / "2.npy").write_bytes(b"not an array"),
                "file 'val/label/2.npy' is not a readable .npy array"),
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_bad_files_give_one_sentence_naming_the_file(tmp_path, name):
    make_nyuv2(tmp_path, n_train=4, n_val=3)
    corrupt, message = CORRUPTIONS[name]
    corrupt(tmp_path)
    with pytest.raises(DataError, match=message) as e:
        nyuv2.load_nyuv2(str(tmp_path))
    assert one_sentence(str(e.value)), str(e.value)


def test_no_data_dir_or_empty_folder(tmp_path):
    with pytest.raises(DataError, match="nyuv2 has no TFDS source; pass --data_dir"):
        nyuv2.load_nyuv2(None)
    with pytest.raises(DataError, match="no 'train/' or 'val/' folder"):
        nyuv2.load_nyuv2(str(tmp_path))
    with pytest.raises(DataError, match="does not exist"):
        nyuv2.load_nyuv2(str(tmp_path / "absent"))
