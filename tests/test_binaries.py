"""Every experiment binary runs end to end, as a user starts it, on small generated files in
its dataset's own format (digits are bundled): one epoch, then metrics.json, TensorBoard
logs, the primary SavedModel and, for bi-level methods, schedule.npz.

The binaries run concurrently (each is a separate process) to keep the suite fast. The
CIFAR one runs with ConvNet-4 (ResNet-18's own training is covered in test_backbones); CUB
keeps its default ResNet-18 at 224 x 224 with 313 heads (minutes on two CPU cores), so it is
marked slow: its loader is covered by test_pipelines_datasets and the shared experiment path
by the other binaries.
"""

import json
import pickle
import subprocess
import sys

import numpy as np
import pytest

from apps.flags import inapplicable
from pipelines import celeb_a, cifar
from test_pipelines_datasets import cifar_images, write, write_idx, write_image
from test_pipelines_nyuv2 import make_nyuv2
from test_pipelines_pacs import make_pacs

RNG = np.random.default_rng(3)
COMMON = ["--epochs=1", "--verbose=0", "--upper_interval=2"]


def cifar10_dir(root):
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    for name, n in [(b, 24) for b in cifar.C10_BATCHES if b != "test_batch"] + [("test_batch", 24)]:
        _, rows = cifar_images(n)
        with open(d / name, "wb") as f:
            pickle.dump({b"data": rows, b"labels": RNG.integers(0, 10, n).tolist(), b"batch_label": b"x"}, f,
                        protocol=2)
    return root


def cub_dir(root, n=40):
    top = root / "CUB_200_2011"
    classes = ["001.Albatross", "002.Auklet"]
    imgs = [(i, classes[i % 2], f"img_{i}.jpg", int(i % 4 != 0)) for i in range(1, n + 1)]
    write(top / "classes.txt", "".join(f"{i + 1} {c}\n" for i, c in enumerate(classes)))
    write(top / "images.txt", "".join(f"{i} {c}/{name}\n" for i, c, name, _ in imgs))
    write(top / "image_class_labels.txt", "".join(f"{i} {classes.index(c) + 1}\n" for i, c, _, _ in imgs))
    write(top / "train_test_split.txt", "".join(f"{i} {t}\n" for i, _, _, t in imgs))
    present = RNG.integers(0, 2, (n, 312))
    write(top / "attributes" / "image_attribute_labels.txt",
          "".join(f"{i} {a + 1} {present[i - 1, a]} 3 1.0\n" for i in range(1, n + 1) for a in range(312)))
    for _, c, name, _ in imgs:
        write_image(top / "images" / c / name, 40, 32)
    return root


def mnist_dir(root):
    root.mkdir(parents=True)
    for prefix, n in (("train", 200), ("t10k", 60)):
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", RNG.integers(0, 256, (n, 28, 28)))
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", RNG.integers(0, 10, n))
    return root


def celeb_a_dir(root, n=60):
    """CelebA raw files: n 20x16 images, random attributes, the official three-way partition."""
    names = [f"{i:06d}.jpg" for i in range(1, n + 1)]
    for name in names:
        write_image(root / "img_align_celeba" / name, 20, 16)
    values = RNG.choice([-1, 1], (n, 40))
    write(root / "list_attr_celeba.txt", "\n".join([str(n), " ".join(celeb_a.ATTRIBUTES)] + [
        f"{name} " + " ".join(f"{v:2d}" for v in row) for name, row in zip(names, values)]) + "\n")
    write(root / "list_eval_partition.txt", "".join(f"{name} {0 if i < 40 else 1 if i < 50 else 2}\n"
                                                    for i, name in enumerate(names)))
    return root


def movielens_dir(root, users=30, items=40, ratings=600):
    d = root / "ml-100k"
    pairs = RNG.choice(users * items, ratings, replace=False)
    write(d / "u.data", "".join(f"{p // items + 1}\t{p % items + 1}\t{RNG.integers(1, 6)}\t{1000 + k}\n"
                                for k, p in enumerate(pairs)))
    write(d / "u.user", "".join(f"{u}|{20 + u}|{'MF'[u % 2]}|other|00000\n" for u in range(1, users + 1)))
    genres = lambda i: "|".join("1" if g == i % 19 else "0" for g in range(19))  # noqa: E731
    write(d / "u.item", "".join(f"{i}|Movie {i} (1995)|01-Jan-1995||http://x|{genres(i)}\n"
                                for i in range(1, items + 1)), encoding="latin-1")
    return root


def binaries(tmp):
    """binary -> (its arguments, what its metrics.json must say about its defaults)."""
    return {
        "image_classification": ([f"--data_dir={cifar10_dir(tmp / 'cifar')}", "--encoder=convnet4",
                                  "--batch_size=16", "--dev_size=10"],
                                 {"dataset": "cifar10", "method": "jtds", "rotation": True}),
        "cub_attributes": ([f"--data_dir={cub_dir(tmp / 'cub')}", "--method=equal", "--batch_size=4",
                            "--dev_size=2"], {"dataset": "cub", "encoder": "resnet18", "rotation": False}),
        "recommendation": ([f"--data_dir={movielens_dir(tmp / 'ml')}", "--batch_size=64", "--dev_size=40"],
                           {"dataset": "movielens_100k", "encoder": "autoint", "upper_optimizer": "adam",
                            "upper_lr": 0.01}),
        "corrupted_labels": (["--batch_size=64", "--dev_size=60"], {"dataset": "digits", "noise_rate": 0.4,
                                                                    "upper_optimizer": None}),
        "semi_supervised": (["--batch_size=64", "--dev_size=60"], {"dataset": "digits", "label_fraction": 0.2}),
        "multi_mnist": ([f"--data_dir={mnist_dir(tmp / 'mnist')}", "--batch_size=16", "--dev_size=10"],
                        {"dataset": "multi_mnist", "encoder": "lenet"}),
        # seed 003's apps: their paper defaults, on small data (the default backbones are
        # covered by test_backbones; one epoch of ResNet-18 / WRN-28-2 is minutes here)
        "s4l": ([f"--data_dir={cifar10_dir(tmp / 's4l')}", "--encoder=convnet4", "--batch_size=16", "--dev_size=4",
                 "--num_labelled=40"],
                {"dataset": "cifar10", "method": "arml", "exemplar": True, "rotation": True, "lr": 0.005,
                 "lr_decay": "910=0.2", "val_fraction": 0.1}),
        "celeb_a_attribute": ([f"--data_dir={celeb_a_dir(tmp / 'celeba')}", "--encoder=convnet4", "--batch_size=8",
                               "--dev_size=4", "--label_fraction=0.25",  # 3 of the 39 auxiliaries: a CPU budget
                               "--privileged_tasks=Goatee,Male,Smiling"],
                              {"dataset": "celeb_a", "method": "arml", "optimizer": "sgd",
                               "dataset_args": 'primary="5_o_Clock_Shadow"', "lr_decay": "30=0.1,60=0.01"}),
        "pacs": ([f"--data_dir={make_pacs(tmp / 'pacs')}", "--encoder=convnet4", "--batch_size=8",
                  "--dev_size=4", "--dataset_args=image_size=16"],
                 {"dataset": "pacs", "method": "arml", "optimizer": "sgd", "lr_decay": "80=0.1"}),
        # seed 002's NYUv2 app: full SegNet (its pooling needs H, W divisible by 32), AuxiLearn
        "nyuv2": ([f"--data_dir={nyuv2_dir(tmp / 'nyuv2')}", "--batch_size=4", "--dev_size=2", "--val_fraction=0.3"],
                  {"dataset": "nyuv2", "method": "auxilearn", "encoder": "segnet", "lr_decay": "100=0.5",
                   "eval_batch_size": 8}),
    }


def nyuv2_dir(root):
    make_nyuv2(root, n_train=12, n_val=3, h=32, w=32)
    return root


def launch(tmp, names):
    """Start the binaries `names` at once; binary -> (return code, stdout, stderr, output dir,
    expected flags)."""
    runs = {}
    for name, (args, expected) in binaries(tmp).items():
        if name not in names:
            continue
        out = tmp / "runs" / name
        proc = subprocess.Popen([sys.executable, "-m", f"apps.{name}", *COMMON, *args, f"--output_dir={out}"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        runs[name] = (proc, out, expected)
    results = {}
    for name, (proc, out, expected) in runs.items():
        stdout, stderr = proc.communicate(timeout=600)
        results[name] = (proc.returncode, stdout, stderr, out, expected)
    return results


FAST = ["image_classification", "recommendation", "semi_supervised", "multi_mnist", "s4l", "celeb_a_attribute",
        "pacs"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    return launch(tmp_path_factory.mktemp("binaries"), FAST)


@pytest.mark.parametrize("name", FAST)
def test_binary_runs_end_to_end(finished, name):
    check(*finished[name])


@pytest.mark.slow  # tests/test_tools.py runs apps.corrupted_labels end to end through apps.compare
def test_corrupted_labels_binary_runs_end_to_end(tmp_path):
    check(*launch(tmp_path, ["corrupted_labels"])["corrupted_labels"])


@pytest.mark.slow
def test_cub_attributes_binary_runs_end_to_end(tmp_path):
    check(*launch(tmp_path, ["cub_attributes"])["cub_attributes"])


@pytest.mark.slow  # the full SegNet; test_nyuv2_binary_defaults and test_dense cover its parts
def test_nyuv2_binary_runs_end_to_end(tmp_path):
    check(*launch(tmp_path, ["nyuv2"])["nyuv2"])


def test_nyuv2_binary_defaults():
    """apps.nyuv2's paper defaults, as the binary parses them (seed 002, App. B.2)."""
    code = ("import json; from apps import nyuv2; from apps.flags import FLAGS; FLAGS(['nyuv2']); "
            "print(json.dumps({n: FLAGS[n].value for n in ('method', 'dataset', 'encoder', 'epochs', 'batch_size', "
            "'lr', 'optimizer', 'lr_decay', 'upper_interval', 'dev_batch_size', 'eval_batch_size', 'rotation')}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == dict(
        method="auxilearn", dataset="nyuv2", encoder="segnet", epochs=200, batch_size=8, lr=1e-4, optimizer="adam",
        lr_decay="100=0.5", upper_interval=50, dev_batch_size=2, eval_batch_size=8, rotation=False)


def check(code, stdout, stderr, out, expected):
    assert code == 0, stderr[-3000:]
    for notice in ("oneDNN", "cuda", "cuInit", "absl::InitializeLog", "retracing"):
        assert notice not in stderr, f"start-up / retracing notice on stderr: {stderr[:2000]}"
    metrics = json.loads((out / "metrics.json").read_text())
    skipped = inapplicable(metrics["method"])  # flags the method does not read are not recorded
    for flag, value in expected.items():
        if flag in skipped:
            assert flag not in metrics["flags"], flag
        else:
            assert metrics["flags"].get(flag, metrics.get(flag)) == value, flag
    assert metrics["epochs"] == 1 and np.isfinite(metrics["test"])
    assert f"{metrics['method']} on {metrics['dataset']}" in stdout
    assert (out / "saved_model" / "saved_model.pb").exists()
    assert any(p.is_file() for p in (out / "logs").rglob("*")), "no TensorBoard event file"
    assert (out / "history.csv").read_text().count("\n") == 2  # header + one epoch
    assert (out / "schedule.npz").exists() == (metrics["method"] in ("jtds", "njtds", "auxilearn"))
    if metrics["method"] == "arml":  # learned auxiliary weights, ranked (seed 003, Table 3)
        aux = [t for t in metrics["task_weights"] if t not in metrics["targets"]]
        assert aux and all(w >= 0 for w in metrics["task_weights"].values())
        table = (out / "task_weights.md").read_text()
        assert all(f"| {t} |" in table for t in aux)
