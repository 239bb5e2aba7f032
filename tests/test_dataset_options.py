"""Loader options (--dataset_args), an exact number of labels (--num_labelled), settings a source
decides itself, the learning-rate step decay, WRN-28-2, and the learned-weight table (seed 003's
apps)."""

import types

import numpy as np
import pytest

import pipelines
from apps import experiment
from pipelines import DataError, Setting, make_dataset
from pipelines.contract import Source, register
from tfaux.tasks import Task


def toy_source(data_dir=None, classes=3, n=300, fixed=None):
    """A registered test loader with options: n examples of `classes` classes, 4 features."""
    rng = np.random.default_rng(1)
    return Source(name="toy_options", tasks=[Task("y", role="primary", num_classes=classes)],
                  features=rng.normal(size=(n, 4)).astype(np.float32),
                  labels={"y": np.arange(n) % classes}, fixed_settings=fixed)


register("toy_options", toy_source)


def test_dataset_args_reach_the_loader_and_are_checked():
    assert pipelines.options("toy_options", "classes=5,n=100") == {"classes": 5, "n": 100}
    data = pipelines.load("toy_options", options=pipelines.options("toy_options", "classes=5,n=100"))
    assert data.tasks[0].num_classes == 5 and data.num_train + data.num_val + data.num_dev + data.num_test == 100
    with pytest.raises(DataError, match="--dataset_args: dataset 'toy_options' has no argument 'size'; it accepts: "
                                        "classes, n, fixed"):
        pipelines.options("toy_options", "size=3")
    with pytest.raises(DataError, match="--dataset_args must look like"):
        pipelines.options("toy_options", "classes")
    with pytest.raises(DataError, match="has no option 'size'"):
        pipelines.load("toy_options", options={"size": 3})
    assert "data_dir" not in pipelines.options("celeb_a", "") and pipelines.options(
        "celeb_a", 'primary="Male",image_size=32') == {"primary": "Male", "image_size": 32}


def test_num_labelled_is_exact_and_stratified():
    data = make_dataset(toy_source(), Setting(num_labelled=30, seed=3))
    kept = data.labelled
    assert kept.sum() == 30
    np.testing.assert_array_equal(np.bincount(data.clean_train_labels[kept], minlength=3), [10, 10, 10])
    with pytest.raises(DataError, match="--num_labelled 5000 exceeds the"):
        make_dataset(toy_source(), Setting(num_labelled=5000))
    with pytest.raises(DataError, match="--label_fraction and --num_labelled each limit"):
        Setting(num_labelled=30, label_fraction=0.5)
    with pytest.raises(DataError, match="keeps no labelled primary example"):
        make_dataset(toy_source(), Setting(label_fraction=0.001))


def test_drop_unlabelled_shrinks_the_training_set_to_the_kept_labels():
    full = make_dataset(toy_source(), Setting(num_labelled=30, seed=3))
    small = make_dataset(toy_source(), Setting(num_labelled=30, seed=3, drop_unlabelled=True))
    assert small.num_train == 30 and small.labelled.all()
    np.testing.assert_array_equal(small.indices["train"], full.indices["train"][full.labelled])
    np.testing.assert_array_equal(small.train_labels, full.train_labels[full.labelled])
    for split in ("dev", "val", "test"):  # nothing else moves
        np.testing.assert_array_equal(small.indices[split], full.indices[split])


def test_a_source_refuses_the_settings_it_fixes():
    source = toy_source(fixed={"shots_per_class": "its loader picks the shots"})
    assert make_dataset(source, Setting()).num_train > 0
    with pytest.raises(DataError, match="^--shots_per_class does not apply to dataset 'toy_options': its loader "
                                        "picks the shots.$"):
        make_dataset(source, Setting(shots_per_class=2))


def flags(**values):
    base = dict(lr=0.1, lr_decay="", optimizer="adam", weight_decay=0.0, epochs=4)
    return types.SimpleNamespace(**{**base, **values})


def test_lr_decay_steps_the_rate_at_epoch_boundaries():
    optimizer = experiment.task_optimizer(flags(lr_decay="2=0.1,3=0.01", optimizer="sgd"), steps_per_epoch=5)
    assert type(optimizer).__name__ == "SGD" and optimizer.momentum == pytest.approx(0.9)
    rates = []
    for step in (0, 9, 10, 14, 15, 100):
        optimizer.iterations.assign(step)
        rates.append(float(optimizer.learning_rate))
    # epochs 0-1 (steps 0-9): 0.1; epoch 2 (steps 10-14): 0.01; from epoch 3: 0.001
    np.testing.assert_allclose(rates, [0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-6)
    assert float(experiment.task_optimizer(flags(), 5).learning_rate) == pytest.approx(0.1)
    cosine = experiment.task_optimizer(flags(lr_decay="cosine", weight_decay=5e-4), steps_per_epoch=5)
    assert cosine.weight_decay == pytest.approx(5e-4)
    for step in (0, 5, 10, 20):  # 0.1 * (1 + cos(pi t / T)) / 2 over T = 4 epochs * 5 steps
        cosine.iterations.assign(step)
        assert float(cosine.learning_rate) == pytest.approx(0.05 * (1 + np.cos(np.pi * step / 20)), abs=1e-7)
    for bad in ("80", "0=0.1", "5=0", "5=0.1,3=0.1", "a=b", "5=nan"):
        with pytest.raises(experiment.ConfigError, match="--lr_decay must look like"):
            experiment.lr_decay_steps(bad)


def test_wide_resnet_28_2_has_the_published_size():
    from tfaux.models import wide_resnet
    model = wide_resnet(28, 2)
    assert model.output_shape == (None, 128)
    count = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    assert count + 128 * 10 + 10 == 1_467_610  # WRN-28-2 with a 10-way classifier (Oliver et al. 2018: 1.5M)
    with pytest.raises(ValueError, match="6n \\+ 4"):
        wide_resnet(27, 2)


def test_task_weight_table_ranks_auxiliaries():
    weights = {"main": 1.0, **{f"a{k}": float(k) for k in range(12)}}
    table = experiment.task_weight_table({"method": "arml", "targets": ["main"], "task_weights": weights})
    lines = table.splitlines()
    assert lines[4].startswith("| a11 | 11 | a0 | 0 |") and lines[8].startswith("| a7 | 7 | a4 | 4 |")
    assert "| main |" not in table and table.count("| a5 |") == 1


def test_a_binary_takes_each_dataset_s_paper_settings_unless_given(parse):
    from apps.flags import apply_dataset_defaults
    table = {"svhn": dict(num_labelled=1000, epochs=776, lr_decay="621=0.2")}  # as apps.s4l's
    flags_ = parse("--dataset=svhn", "--epochs=3")
    apply_dataset_defaults(flags_, table)
    assert (flags_.num_labelled, flags_.epochs, flags_.lr_decay) == (1000, 3, "621=0.2")
    flags_ = parse("--dataset=cifar10", "--num_labelled=250")
    apply_dataset_defaults(flags_, table)
    assert (flags_.num_labelled, flags_.epochs, flags_.lr_decay) == (250, 15, "")
