"""Many-task datasets with several targets (seed 004 Sec. 5.3): CIFAR-100 as 20 five-way tasks
("cifar100_tasks") and CelebA's 40 attributes with the 23 hardest as targets ("celeb_a_tasks"),
read from tiny raw files in the official formats."""

import ast
import pickle
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import pipelines
from pipelines import celeb_a, cifar
from pipelines.errors import DataError

RNG = np.random.default_rng(4)
APPS = Path(__file__).resolve().parents[1] / "apps"


def rows_of(x):
    return x.transpose(0, 3, 1, 2).reshape(len(x), -1)  # CIFAR files store R, G, B planes


def fine_labels(per_superclass):
    """Fine labels covering every superclass `per_superclass` times (shuffled), and their superclasses."""
    fine = np.array([RNG.choice(cifar.superclass_members(k)) for k in range(20) for _ in range(per_superclass)])
    fine = RNG.permutation(fine)
    return fine, np.asarray(cifar.FINE_TO_COARSE)[fine]


@pytest.fixture
def cifar100_py(tmp_path):
    """cifar-100-python/{train,test}: 10 train and 2 test images per superclass."""
    d, out = tmp_path / "cifar-100-python", {}
    d.mkdir()
    for split, per in (("train", 10), ("test", 2)):
        fine, coarse = fine_labels(per)
        x = RNG.integers(0, 256, (len(fine), 32, 32, 3), dtype=np.uint8)
        with open(d / split, "wb") as f:
            pickle.dump({b"data": rows_of(x), b"fine_labels": fine.tolist(), b"coarse_labels": coarse.tolist(),
                         b"filenames": [b"x.png"] * len(fine)}, f, protocol=2)
        out[split] = (x, fine, coarse)
    (d / "meta").write_bytes(b"")
    fine = np.concatenate([out["train"][1], out["test"][1]])
    coarse = np.concatenate([out["train"][2], out["test"][2]])
    return tmp_path, fine, coarse


# ----------------------------------------------------------------------------- CIFAR-100 tasks

def test_superclass_map():
    members = [cifar.superclass_members(k) for k in range(20)]
    assert all(len(m) == 5 and m == sorted(m) for m in members)
    assert sorted(f for m in members for f in m) == list(range(100))
    assert members[0] == [4, 30, 55, 72, 95]          # aquatic mammals: beaver, dolphin, otter, seal, whale
    assert members[14] == [2, 11, 35, 46, 98]         # people: baby, boy, girl, man, woman
    lab = cifar.fine_to_task_label()
    assert all(list(lab[m]) == [0, 1, 2, 3, 4] for m in members)
    assert len(cifar.TASK_NAMES) == 20 and len(set(cifar.TASK_NAMES)) == 20
    assert cifar.TASK_NAMES[9] == "large_man_made_outdoor_things"


def test_targets_fixed_and_nested():
    ten = cifar.target_superclasses()
    assert ten == cifar.target_superclasses(10) == sorted(np.random.default_rng(0).permutation(20)[:10].tolist())
    assert len(set(ten)) == 10
    assert set(cifar.target_superclasses(3)) <= set(ten) <= set(cifar.target_superclasses(15))
    for bad in (0, 21, 2.5, True, "10"):
        with pytest.raises(DataError, match="targets"):
            cifar.target_superclasses(bad)


def test_cifar100_tasks_source(cifar100_py):
    root, fine, coarse = cifar100_py
    s = cifar.load_cifar100_tasks(str(root))
    s.validate()
    names = [t.name for t in s.tasks]
    targets = cifar.target_superclasses(10)
    assert len(s.tasks) == 20 and sorted(names) == sorted(cifar.TASK_NAMES)
    assert names[:10] == [cifar.TASK_NAMES[k] for k in targets]
    assert all(t.is_primary for t in s.tasks[:10]) and not any(t.is_primary for t in s.tasks[10:])
    assert all(t.kind == "classification" and t.num_classes == 5 for t in s.tasks)
    masks = np.stack([s.mask(n) for n in cifar.TASK_NAMES], 1)          # [N, 20] in superclass order
    np.testing.assert_array_equal(masks.sum(1), np.ones(len(fine)))      # one task per image
    np.testing.assert_array_equal(masks.argmax(1), coarse)               # ... its superclass's
    for k, name in enumerate(cifar.TASK_NAMES):
        y = s.labels[name]
        assert y.dtype.kind == "i" and set(np.unique(y)) <= set(range(5))
        np.testing.assert_array_equal(y[coarse != k], 0)
        members = cifar.superclass_members(k)
        np.testing.assert_array_equal(np.asarray(members)[y[coarse == k]], fine[coarse == k])
    assert (s.official_split == "train").sum() == 200 and s.image_shape == (32, 32, 3)
    again = cifar.load_cifar100_tasks(str(root))
    assert [t.name for t in again.tasks] == names                       # deterministic across loads
    s3 = cifar.load_cifar100_tasks(str(root), targets=3)
    assert sum(t.is_primary for t in s3.tasks) == 3


def test_cifar100_tasks_binary_format(tmp_path):
    d = tmp_path / "cifar-100-binary"
    d.mkdir()
    fine, coarse = fine_labels(1)
    x = RNG.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    for split in ("train", "test"):  # records: coarse byte, fine byte, pixels
        np.concatenate([coarse[:, None], fine[:, None], rows_of(x)], 1).astype(np.uint8).tofile(d / f"{split}.bin")
    s = cifar.load_cifar100_tasks(str(d))
    s.validate()
    np.testing.assert_array_equal(s.features[:20], x)
    for k, name in enumerate(cifar.TASK_NAMES):
        np.testing.assert_array_equal(s.masks[name], np.tile(coarse == k, 2))


def test_cifar100_tasks_inconsistent_superclass(tmp_path):
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    fine, coarse = fine_labels(1)
    coarse[3] = (coarse[3] + 1) % 20
    x = RNG.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    for split in ("train", "test"):
        with open(d / split, "wb") as f:
            pickle.dump({b"data": rows_of(x), b"fine_labels": fine.tolist(), b"coarse_labels": coarse.tolist()}, f)
    with pytest.raises(DataError, match="superclass") as e:
        cifar.load_cifar100_tasks(str(tmp_path))
    assert "example 3" in str(e.value)


def test_cifar100_tasks_pipeline_and_dev(cifar100_py):
    root, _, coarse = cifar100_py
    assert "cifar100_tasks" in pipelines.DATASETS
    setting = pipelines.Setting(rotation=False, val_fraction=0.3, dev_size=30)
    data = pipelines.load("cifar100_tasks", data_dir=str(root), setting=setting)
    targets = [cifar.TASK_NAMES[k] for k in cifar.target_superclasses()]
    assert [t.name for t in data.tasks][:10] == targets and len(data.tasks) == 20
    batch = next(iter(data.train(16)))
    assert set(batch["mask"]) == set(batch["labels"]) == set(cifar.TASK_NAMES)
    m = np.stack([batch["mask"][n].numpy() for n in cifar.TASK_NAMES], 1)
    np.testing.assert_array_equal(m.sum(1), np.ones(16))
    np.testing.assert_array_equal(m.argmax(1), coarse[data.indices["train"][batch["id"].numpy()]])
    for split in ("val", "test"):
        b = next(iter(getattr(data, split)(1000)))
        m = np.stack([b["mask"][n].numpy() for n in cifar.TASK_NAMES], 1)
        np.testing.assert_array_equal(m.argmax(1), coarse[data.indices[split][b["id"].numpy()]])
        np.testing.assert_array_equal(m.sum(1), 1)
    dev = next(iter(data.dev(data.num_dev, epochs=1, steps=1)))
    assert data.num_dev == 30 and dev["id"].shape == (30,)
    dev_coarse = coarse[data.indices["dev"][dev["id"].numpy()]]
    for k, name in enumerate(cifar.TASK_NAMES):
        mask = dev["mask"][name].numpy()
        if name in targets:   # the upper level sees every target task's labels
            np.testing.assert_array_equal(mask, (dev_coarse == k).astype(np.float32))
        else:                 # and no auxiliary's
            np.testing.assert_array_equal(mask, 0.0)
            np.testing.assert_array_equal(dev["labels"][name].numpy(), 0)
    assert any(dev["mask"][n].numpy().any() for n in targets)


# ----------------------------------------------------------------------------- CelebA tasks

def test_hardest_23_constant():
    h = celeb_a.HARDEST_23
    assert len(h) == 23 and len(set(h)) == 23 and set(h) <= set(celeb_a.ATTRIBUTES)
    assert set(celeb_a.TRAIN_POSITIVE_RATE) == set(celeb_a.ATTRIBUTES)
    balance = {a: abs(celeb_a.TRAIN_POSITIVE_RATE[a] - 0.5) for a in celeb_a.ATTRIBUTES}
    assert max(balance[a] for a in h) < min(balance[a] for a in celeb_a.ATTRIBUTES if a not in h)
    assert h[0] == "Attractive" and "Bald" not in h and "Male" in h and "Young" in h
    # ranking from label arrays, restricted to some rows
    labels = {a: np.zeros(10, np.float32) for a in celeb_a.ATTRIBUTES}
    labels["Bald"][:5] = 1          # balanced on all rows, all-positive on the first five
    labels["Smiling"][:3] = 1
    assert celeb_a.rank_by_entropy(labels)[:2] == ("Bald", "Smiling")
    rows = np.arange(10) < 6
    assert celeb_a.rank_by_entropy(labels, rows)[0] == "Smiling"


def write_celeba(root, n=12):
    names = [f"{i:06d}.jpg" for i in range(1, n + 1)]
    (root / "img_align_celeba").mkdir(parents=True)
    for name in names:
        img = tf.constant(RNG.integers(0, 256, (22, 18, 3)), tf.uint8)
        (root / "img_align_celeba" / name).write_bytes(tf.io.encode_jpeg(img).numpy())
    values = RNG.choice([-1, 1], (n, 40))
    lines = [str(n), " ".join(celeb_a.ATTRIBUTES)] + [f"{nm} " + " ".join(f"{v:2d}" for v in row)
                                                      for nm, row in zip(names, values)]
    (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    parts = [0] * (n - 6) + [1] * 4 + [2] * 2
    (root / "list_eval_partition.txt").write_text("\n".join(f"{nm} {p}" for nm, p in zip(names, parts)) + "\n")
    return values


def test_celeb_a_tasks(tmp_path):
    values = write_celeba(tmp_path)
    s = celeb_a.load_celeb_a_tasks(str(tmp_path), image_size=32)
    s.validate()
    names = [t.name for t in s.tasks]
    assert s.name == "celeb_a_tasks" and len(s.tasks) == 40 and sorted(names) == sorted(celeb_a.ATTRIBUTES)
    assert tuple(names[:23]) == celeb_a.HARDEST_23
    assert all(t.is_primary for t in s.tasks[:23]) and not any(t.is_primary for t in s.tasks[23:])
    assert all(t.kind == "binary" for t in s.tasks) and s.masks is None
    for a in ("Male", "Bald"):
        np.testing.assert_array_equal(s.labels[a], values[:, celeb_a.ATTRIBUTES.index(a)] > 0)
    assert s.image_shape == (32, 32, 3)
    assert "celeb_a_tasks" in pipelines.DATASETS and pipelines.DATASETS["celeb_a"] is celeb_a.load_celeb_a

    data = pipelines.load("celeb_a_tasks", data_dir=str(tmp_path),
                          setting=pipelines.Setting(rotation=False, dev_size=2))
    dev = next(iter(data.dev(2, epochs=1, steps=1)))
    for t in data.tasks:
        assert dev["mask"][t.name].numpy().tolist() == ([1.0, 1.0] if t.is_primary else [0.0, 0.0])


# ----------------------------------------------------------------------------- binaries

def app_defaults(name):
    """The keyword arguments of the app's define_flags call (read, not run: flags are process-global)."""
    tree = ast.parse((APPS / f"{name}.py").read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "define_flags"]
    assert len(calls) == 1
    return {k.arg: ast.literal_eval(k.value) for k in calls[0].keywords}


def test_app_defaults():
    from apps.flags import DEFAULTS
    for name, encoder in (("cifar100_tasks", "convnet4"), ("celeb_a_tasks", "resnet18")):
        d = app_defaults(name)
        assert set(d) <= set(DEFAULTS)
        assert d["method"] == "ptl" and d["dataset"] == name and d["rotation"] is False and d["encoder"] == encoder
    assert app_defaults("celeb_a_tasks")["lr"] == 5e-4 and app_defaults("celeb_a_tasks")["batch_size"] == 256
