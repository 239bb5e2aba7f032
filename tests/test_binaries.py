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

from pipelines import cifar
from test_pipelines_datasets import cifar_images, write, write_idx, write_image

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
    }


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


FAST = ["image_classification", "recommendation", "corrupted_labels", "semi_supervised", "multi_mnist"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    return launch(tmp_path_factory.mktemp("binaries"), FAST)


@pytest.mark.parametrize("name", FAST)
def test_binary_runs_end_to_end(finished, name):
    check(*finished[name])


@pytest.mark.slow
def test_cub_attributes_binary_runs_end_to_end(tmp_path):
    check(*launch(tmp_path, ["cub_attributes"])["cub_attributes"])


def check(code, stdout, stderr, out, expected):
    assert code == 0, stderr[-3000:]
    for notice in ("oneDNN", "cuda", "cuInit", "absl::InitializeLog", "retracing"):
        assert notice not in stderr, f"start-up / retracing notice on stderr: {stderr[:2000]}"
    metrics = json.loads((out / "metrics.json").read_text())
    for flag, value in expected.items():
        assert metrics["flags"].get(flag, metrics.get(flag)) == value, flag
    assert metrics["epochs"] == 1 and np.isfinite(metrics["test"])
    assert f"{metrics['method']} on {metrics['dataset']}" in stdout
    assert (out / "saved_model" / "saved_model.pb").exists()
    assert any(p.is_file() for p in (out / "logs").rglob("*")), "no TensorBoard event file"
    assert (out / "history.csv").read_text().count("\n") == 2  # header + one epoch
    assert (out / "schedule.npz").exists() == (metrics["method"] in ("jtds", "njtds", "auxilearn"))
