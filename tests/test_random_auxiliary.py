"""--random_auxiliary: an auxiliary task "random" whose labels are drawn uniformly once per run,
pure noise w.r.t. the input (a deliberately harmful auxiliary for DTG-AuxL, seed 001).

Checked on digits (bundled), on toy sources and on real MovieLens-100K when ../shared/data holds it.
"""

import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from scipy import stats

import pipelines
from apps import experiment
from apps import train as train_app  # noqa: F401  (defines the flags)
from pipelines import DataError, Setting, Source, make_dataset
from tfaux.tasks import Task

N = 10


def gather(ds):
    batches = list(ds.as_numpy_iterator())
    return tf.nest.map_structure(lambda *a: np.concatenate(a), *batches)


def by_row(data):
    """{split: (source rows, served batches)} of the ordered splits train, val and test."""
    return {split: (data.indices[split], gather(getattr(data, "train_eval" if split == "train" else split)(512)))
            for split in ("train", "val", "test")}


def random_labels(data):
    """[num source rows] random labels gathered from train, val and test (-1 for dev rows)."""
    n = sum(len(rows) for rows in data.indices.values())
    labels = np.full(n, -1)
    for rows, b in by_row(data).values():
        labels[rows] = b["labels"]["random"]
    return labels


@pytest.fixture(scope="module")
def digits():
    return pipelines.load("digits", setting=Setting(random_auxiliary=N, rotation=False, seed=3))


def test_task_and_labels_in_every_split(digits):
    task = digits.tasks[-1]
    assert (task.name, task.role, task.kind, task.num_classes, task.input_key) == (
        "random", "auxiliary", "classification", N, None)
    for rows, b in by_row(digits).values():
        y, m = b["labels"]["random"], b["mask"]["random"]
        assert y.dtype == np.int32 and y.shape == (len(rows),) and y.min() >= 0 and y.max() < N
        assert m.dtype == np.float32 and np.all(m == 1.0)
    dev = next(iter(digits.dev(32)))  # the upper level sees the primary task only
    assert set(dev["labels"]) == set(dev["mask"]) == {"label", "random"}
    assert np.all(dev["mask"]["random"].numpy() == 0) and set(dev) == {"x", "labels", "mask", "id"}
    batch = next(iter(digits.train(64)))
    assert set(batch) == {"x", "labels", "mask", "id"} and np.all(batch["mask"]["random"].numpy() == 1)


def test_labels_are_fixed_for_the_run_and_follow_the_seed(digits):
    expected = gather(digits.train_eval(512))["labels"]["random"]
    for b in digits.train(64, epochs=2).as_numpy_iterator():  # no redraw between epochs
        np.testing.assert_array_equal(b["labels"]["random"], expected[b["id"]])
    again = pipelines.load("digits", setting=Setting(random_auxiliary=N, rotation=False, seed=3))
    other = pipelines.load("digits", setting=Setting(random_auxiliary=N, rotation=False, seed=4))
    np.testing.assert_array_equal(random_labels(again), random_labels(digits))
    first, second = random_labels(digits), random_labels(other)
    both = (first >= 0) & (second >= 0)
    assert np.mean(first[both] == second[both]) < 0.2


def test_labels_are_uniform_and_independent_of_the_primary(digits):
    labels, primary = [], []
    for _, b in by_row(digits).values():
        labels.append(b["labels"]["random"])
        primary.append(b["labels"]["label"])
    labels, primary = np.concatenate(labels), np.concatenate(primary)
    assert len(labels) > 1500
    assert stats.chisquare(np.bincount(labels, minlength=N)).pvalue > 1e-3
    table = np.zeros((10, N))
    np.add.at(table, (primary, labels), 1)
    assert stats.chi2_contingency(table).pvalue > 1e-3


def test_other_draws_do_not_move():
    """Adding the random task leaves splits, label selection and noise as without it."""
    base = dict(rotation=False, seed=1, label_fraction=0.5, noise_rate=0.3, dev_size=50)
    plain, with_random = (pipelines.load("digits", setting=Setting(**base, random_auxiliary=k)) for k in (0, 4))
    for split in ("train", "dev", "val", "test"):
        np.testing.assert_array_equal(plain.indices[split], with_random.indices[split])
    np.testing.assert_array_equal(plain.train_labels, with_random.train_labels)
    np.testing.assert_array_equal(plain.corrupted, with_random.corrupted)
    assert [t.name for t in plain.tasks] == ["label"]


@pytest.mark.parametrize("value", [1, -1, True, 2.5, "3"])
def test_bad_values_are_one_sentence(value):
    with pytest.raises(DataError) as error:
        Setting(random_auxiliary=value)
    text = str(error.value)
    assert text.startswith("--random_auxiliary must be >= 2") and text.count(". ") == 0 and text.endswith("."), text


def test_the_flag_reaches_the_setting_and_refuses_bad_values(tmp_path, parse):
    data = experiment.load_data(parse("--dataset=digits", "--random_auxiliary=4", "--norotation", "--dev_size=60"))
    assert data.tasks[-1].name == "random" and data.tasks[-1].num_classes == 4
    assert parse().random_auxiliary == 0
    with pytest.raises(flags.IllegalFlagValueError, match="random_auxiliary"):
        parse("--random_auxiliary=-1")
    with pytest.raises(SystemExit) as stop:
        experiment.main_with_errors(parse("--random_auxiliary=1", f"--output_dir={tmp_path}", "--epochs=1",
                                          "--verbose=0"))
    message = str(stop.value)
    assert "--random_auxiliary must be >= 2" in message and message.count("\n") == 0, message


def table_source(tasks=None, fixed=None, n=200):
    """A toy regression-primary table (as MovieLens' rating), optionally with extra tasks."""
    tasks = tasks or [Task("y", role="primary", kind="regression")]
    labels = {t.name: np.arange(n) % 3 for t in tasks}
    return Source(name="toy_random", tasks=tasks, features=np.arange(n, dtype=np.float32)[:, None],
                  labels=labels, fixed_settings=fixed)


def test_clash_and_fixed_settings():
    clash = table_source([Task("y", role="primary", kind="regression"),
                          Task("random", role="auxiliary", num_classes=3)])
    with pytest.raises(DataError, match="--random_auxiliary would add task 'random'"):
        make_dataset(clash, Setting(random_auxiliary=3, dev_size=10))
    with pytest.raises(DataError, match="--random_auxiliary does not apply to dataset 'toy_random': chosen"):
        make_dataset(table_source(fixed={"random_auxiliary": "chosen"}), Setting(random_auxiliary=3, dev_size=10))
    data = make_dataset(table_source(fixed={"noise_rate": "chosen"}), Setting(random_auxiliary=3, dev_size=10))
    b = next(iter(data.train(16)))  # vectorised batches (no per-example work) carry it too
    assert b["labels"]["random"].shape == (16,) and b["labels"]["y"].dtype == tf.float32


def test_movielens_100k(shared_data):
    data = pipelines.load("movielens_100k", data_dir=str(shared_data / "ml-100k"),
                          setting=Setting(random_auxiliary=5))
    assert [t.name for t in data.tasks][-1] == "random" and data.primary.kind == "regression"
    b = next(iter(data.train(1024)))
    y = b["labels"]["random"].numpy()
    assert y.shape == (1024,) and set(np.unique(y)) == set(range(5))
    assert np.all(b["mask"]["random"].numpy() == 1) and isinstance(b["x"], dict)
    assert np.all(next(iter(data.dev(64)))["mask"]["random"].numpy() == 0)
