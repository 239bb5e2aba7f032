"""Seed 002's learned-auxiliary-labels (Table 3) and CUB K-shot (Table 1) binaries, end to end on
small generated raw files, with the paper defaults they set; the VGG-16 backbone of the CIFAR runs.

The binaries run concurrently (each a separate process), one epoch each, on tiny images
(--dataset_args=image_size=16 where the loader has that option) with ConvNet-4 in place of their
VGG-16 / ResNet-18 (one epoch of those is minutes on two CPU cores; VGG-16 is checked here
against its published size, ResNet-18 in test_backbones). The per-dataset defaults are checked
as the binary resolves its flags.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
import scipy.io
import tensorflow as tf

from apps.flags import inapplicable
from test_binaries import cifar10_dir, cub_dir
from test_pipelines_cars import make_cars
from test_pipelines_datasets import write, write_image
from tfaux.models import vgg16
from tfaux.strategies import label_generation

RNG = np.random.default_rng(7)
COMMON = ["--epochs=1", "--verbose=0"]


# ------------------------------------------------------------------ VGG-16
def conv(k, c_in, c_out):  # k x k convolution with bias
    return k * k * c_in * c_out + c_out


def test_vgg16_has_the_parameters_of_vgg16_bn_features():
    """13 convolutions of configuration D (Simonyan & Zisserman, Table 1) with bias, each followed
    by BatchNorm: counted from the table, and equal to the well-known counts of the convolutional
    part of VGG-16 (14,714,688, e.g. Keras' VGG16(include_top=False)) plus its 13 BatchNorms'
    gamma / beta (torchvision vgg16_bn minus vgg16: 138,365,992 - 138,357,544 = 8,448)."""
    table = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256),
             (256, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)]
    convs = sum(conv(3, c_in, c_out) for c_in, c_out in table)
    bn_trainable = sum(2 * c_out for _, c_out in table)
    assert convs == 14_714_688 and bn_trainable == 138_365_992 - 138_357_544

    model = vgg16()
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    moving = sum(int(np.prod(v.shape)) for v in model.non_trainable_weights)
    assert trainable == convs + bn_trainable == 14_723_136
    assert moving == bn_trainable  # moving mean and variance
    assert len([layer for layer in model.layers if "pool" in layer.name and "block" in layer.name]) == 5
    assert model(tf.zeros((2, 32, 32, 3))).shape == (2, 512)  # 32 / 2^5 = 1: MAXL's flattened 1x1x512
    assert model(tf.zeros((1, 64, 96, 3))).shape == (1, 512)


def test_vgg16_is_a_label_generator_backbone():
    spec = tf.TensorSpec((32, 32, 3), tf.float32)
    body = label_generation.BACKBONES["vgg16"](spec)
    assert body(tf.zeros((1, 32, 32, 3))).shape == (1, 512)
    assert label_generation.AuxiLearnLabels(backbone="vgg16").backbone == "vgg16"


# ------------------------------------------------------------------ per-dataset paper defaults
# App. B.3 ("Multi-class" / "Fine-grain classification datasets"), typed from the paper.
MULTI_CLASS = dict(optimizer="sgd", weight_decay=5e-4, lr_decay="cosine", label_fraction=0.05, drop_unlabelled=True)
FINE_GRAINED = dict(encoder="resnet18", optimizer="adam", lr=1e-4, weight_decay=5e-3, epochs=150)
TABLE_3 = {
    "cifar10": dict(MULTI_CLASS, encoder="vgg16", lr=0.1, epochs=200, upper_interval=15),
    "cifar100": dict(MULTI_CLASS, encoder="vgg16", lr=0.01, epochs=200, upper_interval=15,
                     dataset_args="coarse=False"),
    "svhn": dict(MULTI_CLASS, encoder="convnet4", lr=0.1, epochs=50, upper_interval=15),
    "cub": dict(FINE_GRAINED, batch_size=64, upper_interval=40, dataset_args="attributes=False",
                label_fraction=1.0, shots_per_class=0, drop_unlabelled=False),
    "oxford_iiit_pet": dict(FINE_GRAINED, batch_size=16, val_fraction=0.3, upper_interval=30, shots_per_class=30,
                            drop_unlabelled=True, dataset_args="species=False"),
    "cars196": dict(FINE_GRAINED, batch_size=64, val_fraction=0.3, upper_interval=40, label_fraction=1.0,
                    shots_per_class=0, drop_unlabelled=False),
}
RESOLVE = """
import json, sys
from apps import learned_labels
from apps.flags import FLAGS, apply_dataset_defaults
out = {}
for argv in json.loads(sys.argv[1]):
    FLAGS.unparse_flags()
    FLAGS(["learned_labels", *argv])
    apply_dataset_defaults(FLAGS)
    out[" ".join(argv)] = dict({n: FLAGS[n].value for n in FLAGS if n in learned_labels.PAPER["cub"] or n in (
        "method", "rotation")}, generator=FLAGS.method_args)
print(json.dumps(out))
"""


def resolved(*argvs):
    """{argv: the flag values the learned_labels binary runs with}, flags parsed as it does."""
    done = subprocess.run([sys.executable, "-c", RESOLVE, json.dumps(argvs)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_learned_labels_sets_each_datasets_paper_defaults():
    argvs = [[f"--dataset={d}"] for d in TABLE_3] + [
        ["--dataset=cifar100", "--lr=0.05", "--method=maxl"],             # the command line wins
        ["--dataset=cars196", "--method=stl"],                            # no generator, no generator args
        ["--dataset=svhn", "--method_args=psi=3,head_units=(64,)"],       # given generator args kept
        ["--dataset=cub", "--method=maxl_f", "--encoder=convnet4"]]
    got = resolved(*argvs)
    for dataset, paper in TABLE_3.items():
        values = got[f"--dataset={dataset}"]
        assert values["method"] == "auxilearn_labels" and values["rotation"] is False
        for flag, value in paper.items():
            assert values[flag] == value, (dataset, flag)
        assert values["generator"] == f"backbone={paper['encoder']!r},head_units=(512,)"
    assert [got["--dataset=cifar100 --lr=0.05 --method=maxl"][k] for k in ("lr", "optimizer", "generator")] == [
        0.05, "sgd", "backbone='vgg16',head_units=(512,)"]
    assert got["--dataset=cars196 --method=stl"]["generator"] == ""
    assert got["--dataset=svhn --method_args=psi=3,head_units=(64,)"]["generator"] == \
        "psi=3,head_units=(64,),backbone='convnet4'"
    assert got["--dataset=cub --method=maxl_f --encoder=convnet4"]["generator"] == \
        "backbone='convnet4',head_units=(512,)"


# ------------------------------------------------------------------ generated raw files
def svhn_dir(root, n_train=120, n_test=20):
    root.mkdir(parents=True)
    for name, n in (("train_32x32.mat", n_train), ("test_32x32.mat", n_test)):
        x = RNG.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = (np.arange(n) % 10 + 1).reshape(-1, 1).astype(np.uint8)  # 10 is digit 0, as the official files
        scipy.io.savemat(root / name, {"X": x, "y": y})
    return root


def pet_dir(root, per_class=3):
    """37 breeds, `per_class` trainval images each and one test image per breed."""
    rows = {"trainval.txt": [], "test.txt": []}
    for c in range(1, 38):
        species = 1 if c <= 12 else 2
        rows["trainval.txt"] += [(f"breed{c}_{i}", c, species) for i in range(per_class)]
        rows["test.txt"].append((f"breed{c}_test", c, species))
    for fname, items in rows.items():
        write(root / "annotations" / fname, "".join(f"{n} {c} {sp} {c}\n" for n, c, sp in items))
        for n, _, _ in items:
            write_image(root / "images" / f"{n}.jpg", 18, 14)
    return root


def cars_dir(root):
    train = [(f"{i + 1:05d}.jpg", (1, 50, 196)[i % 3]) for i in range(30)]
    test = [(f"{i + 1:05d}.jpg", (1, 50, 196)[i % 3]) for i in range(6)]
    return make_cars(root, train=train, test=test)


def runs(tmp):
    """run name -> (binary, arguments, the flags metrics.json must show, other metrics it must show)."""
    generator = "backbone='{}',head_units=(512,)"
    return {
        # CIFAR-10, 5%: SGD 0.1, weight decay 5e-4, cosine; a generator step every step
        "cifar10": ("learned_labels", [f"--data_dir={cifar10_dir(tmp / 'cifar')}", "--encoder=convnet4",
                                       "--batch_size=2", "--dev_size=2", "--upper_interval=1", "--neumann_terms=1"],
                    {"method": "auxilearn_labels", "dataset": "cifar10", "optimizer": "sgd",
                     "lr": 0.1, "weight_decay": 5e-4, "lr_decay": "cosine", "label_fraction": 0.05,
                     "drop_unlabelled": True, "shots_per_class": 0, "val_fraction": 0.1, "rotation": False,
                     "method_args": generator.format("convnet4")},
                    {"num_train": 5, "num_val": 10, "targets": ["label"]}),  # 5% of 108 (12 of 120 validate)
        # SVHN, 5%: its 4-layer ConvNet; MAXL with a generator step every step
        "svhn": ("learned_labels", [f"--data_dir={svhn_dir(tmp / 'svhn')}", "--dataset=svhn", "--method=maxl",
                                    "--batch_size=2", "--dev_size=2", "--upper_interval=1"],
                 {"method": "maxl", "encoder": "convnet4", "optimizer": "sgd", "lr": 0.1, "weight_decay": 5e-4,
                  "lr_decay": "cosine", "label_fraction": 0.05, "drop_unlabelled": True,
                  "method_args": generator.format("convnet4")},
                 {"num_train": 5}),
        # Cars, every remaining training image after 30% validation: Adam 1e-4, decay 5e-3
        "cars196": ("learned_labels", [f"--data_dir={cars_dir(tmp / 'cars')}", "--dataset=cars196",
                                       "--method=maxl_f", "--encoder=convnet4", "--dataset_args=image_size=16",
                                       "--batch_size=4", "--dev_size=2"],
                    {"method": "maxl_f", "optimizer": "adam", "lr": 1e-4, "weight_decay": 5e-3, "lr_decay": "",
                     "val_fraction": 0.3, "label_fraction": 1.0, "shots_per_class": 0, "drop_unlabelled": False,
                     "upper_interval": 40, "dev_batch_size": 64, "method_args": generator.format("convnet4")},
                    {"num_train": 21, "num_val": 7, "num_test": 6, "targets": ["car"]}),
        # Pet, 30% validation then K shots per class, the rest dropped; STL takes no generator
        "oxford_iiit_pet": ("learned_labels", [f"--data_dir={pet_dir(tmp / 'pet')}", "--dataset=oxford_iiit_pet",
                                               "--method=stl", "--encoder=convnet4",
                                               "--dataset_args=species=False,image_size=16", "--batch_size=4",
                                               "--dev_size=2", "--shots_per_class=1"],
                            {"method": "stl", "optimizer": "adam", "lr": 1e-4, "weight_decay": 5e-3,
                             "val_fraction": 0.3, "drop_unlabelled": True, "upper_interval": 30,
                             "dev_batch_size": 16, "method_args": ""},
                            {"num_train": 37, "targets": ["breed"]}),
        # CUB K-shot, Table 1: 5 labelled images per class, the other training images kept with
        # their attributes (semi-supervised); AuxiLearn's 5-layer nonlinear combiner. Two of the
        # 312 attribute tasks are trained (313 heads take minutes to build here; the loader's 312
        # tasks are covered by test_pipelines_datasets).
        "cub_kshot": ("cub_kshot", [f"--data_dir={cub_dir(tmp / 'cub')}", "--encoder=convnet4",
                                    "--dataset_args=image_size=16", "--batch_size=4", "--dev_size=2",
                                    "--upper_interval=2", "--privileged_tasks=attr_001,attr_312"],
                      {"method": "auxilearn", "dataset": "cub", "shots_per_class": 5, "drop_unlabelled": False,
                       "optimizer": "adam", "lr": 1e-4, "weight_decay": 5e-4, "rotation": False,
                       "method_args": "hidden=(10, 10, 10, 10)"},
                      {"num_train": 24, "targets": ["species"]}),  # 30 training images, 6 validate
    }


def launch(tmp, names):
    """Start the runs `names` at once; name -> (return code, stdout, stderr, output dir, flags, metrics)."""
    procs = {}
    for name, (binary, args, flags, metrics) in runs(tmp).items():
        if name not in names:
            continue
        out = tmp / "runs" / name
        procs[name] = (subprocess.Popen([sys.executable, "-m", f"apps.{binary}", *COMMON, *args, f"--output_dir={out}"],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
                       out, flags, metrics)
    results = {}
    for name, (proc, out, flags, metrics) in procs.items():
        stdout, stderr = proc.communicate(timeout=600)
        results[name] = (proc.returncode, stdout, stderr, out, flags, metrics)
    return results


# In the default run: one multi-class (CIFAR), one fine-grained (Cars) and the K-shot binary. SVHN and
# Pet differ from them only in their defaults (checked above, as the binary resolves them) and loaders
# (tests/test_pipelines_*), so their end-to-end runs are slow.
DEFAULT_RUNS = ("cifar10", "cars196", "cub_kshot")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    return launch(tmp_path_factory.mktemp("auxilearn_apps"), DEFAULT_RUNS)


@pytest.mark.parametrize("name", [*DEFAULT_RUNS, pytest.param("svhn", marks=pytest.mark.slow),
                                  pytest.param("oxford_iiit_pet", marks=pytest.mark.slow)])
def test_binary_runs_with_the_paper_defaults(tmp_path, request, name):
    finished = request.getfixturevalue("finished") if name in DEFAULT_RUNS else launch(tmp_path, [name])
    code, stdout, stderr, out, flags, expected = finished[name]
    assert code == 0, stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["epochs"] == 1 and np.isfinite(metrics["test"])
    skipped = inapplicable(metrics["method"])  # flags the method does not read are not recorded
    for flag, value in flags.items():
        assert metrics["flags"][flag] == value if flag not in skipped else flag not in metrics["flags"], flag
    for key, value in expected.items():
        assert metrics[key] == value, key
    assert f"{metrics['method']} on {metrics['dataset']}" in stdout
    assert (out / "saved_model" / "saved_model.pb").exists()
    bilevel = metrics["method"] in ("auxilearn", "auxilearn_labels", "maxl")
    assert (out / "schedule.npz").exists() == bilevel
    if name == "cub_kshot":  # 5 labelled per class of the 24 training images, every one with attributes
        schedule = np.load(out / "schedule.npz")
        assert schedule["labelled"].sum() == 10 and len(schedule["labelled"]) == 24
        assert list(schedule["tasks"]) == ["species", "attr_001", "attr_312"]
        assert np.isfinite(metrics["history"]["attr_312_loss"][0])
    if metrics["method"] in ("auxilearn_labels", "maxl", "maxl_f"):  # the generated soft-label task trains
        assert np.isfinite(metrics["history"]["generated_loss"][0])
    if name == "oxford_iiit_pet":  # the primary task only
        assert not any(k.startswith("species") for k in metrics["history"])
