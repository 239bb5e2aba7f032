"""Seed 001's DTG-AuxL binary (apps.dtg_auxl): the appendix's per-experiment defaults as the binary
resolves them, and end-to-end runs on small generated raw files in the official formats.

The runs are separate processes started at once, one epoch each on a few dozen examples: a
shared-input image experiment (CIFAR-100 fine with its coarse auxiliary), a different-input one
(CIFAR-10 with CIFAR-100 as the auxiliary dataset) and the Amazon rating / CTR one (AutoInt).
Their backbones are the defaults' (ConvNet-4, AutoInt); the upper step comes every 2 lower steps
so that the generator learns within the epoch.
"""

import json
import subprocess
import sys

import numpy as np
import pytest

from apps.flags import inapplicable
from test_pipelines_datasets import write
from test_pipelines_settings_extra import write_cifar

COMMON = ["--epochs=1", "--verbose=0", "--upper_interval=2"]

# ------------------------------------------------------------------ per-experiment paper defaults
# Appendix Sec. 4.1-4.5, typed from the paper (grid values: see the binary's docstring).
MULTISTEP = "60=0.1,120=0.01,160=0.001"
CIFAR = dict(encoder="convnet4", optimizer="sgd", lr=0.1, lr_decay=MULTISTEP, epochs=200, batch_size=256,
             val_fraction=0.5, upper_interval=20)
APPENDIX = {
    "cub": dict(encoder="resnet18", optimizer="adam", lr=1e-4, lr_decay="cosine", epochs=100, batch_size=32,
                upper_optimizer="adam", upper_lr=1e-2, upper_interval=20, privileged_tasks=["attr_210"],
                aux_dataset=None, shots_per_class=0),
    "cifar100": dict(CIFAR, upper_optimizer="adam", upper_lr=1e-3, dataset_args="coarse=True", aux_dataset=None),
    "amazon": dict(encoder="autoint", optimizer="adam", lr=1e-3, lr_decay="", epochs=20, batch_size=256,
                   upper_optimizer="adam", upper_lr=1e-2, upper_interval=50, aux_dataset=None),
    "cifar10": dict(CIFAR, upper_optimizer="sgd", upper_lr=1e-2, aux_dataset="cifar100"),
    "oxford_iiit_pet": dict(encoder="resnet18", optimizer="adam", lr=1e-4, lr_decay="cosine", epochs=200,
                            batch_size=32, upper_optimizer="adam", upper_lr=1e-3, upper_interval=20,
                            dataset_args="species=False", aux_dataset="cub"),
}
SHOWN = ("method", "method_args", "rotation", "aux_dataset", "neumann_terms", "dev_batch_size", "drop_unlabelled",
         "weight_decay", "dataset_args", "val_fraction", "shots_per_class", "privileged_tasks", "chronological",
         "test_fraction")
RESOLVE = """
import json, sys
from apps import dtg_auxl
from apps.flags import FLAGS
shown = set(json.loads(sys.argv[2])).union(*dtg_auxl.PAPER.values())
out = {}
for argv in json.loads(sys.argv[1]):
    FLAGS.unparse_flags()
    FLAGS(["dtg_auxl", *argv])
    dtg_auxl.apply_defaults(FLAGS)
    out[" ".join(argv)] = {n: FLAGS[n].value for n in shown}
print(json.dumps(out))
"""


def resolved(*argvs):
    """{argv: the flag values the dtg_auxl binary runs with}, flags parsed as it does."""
    done = subprocess.run([sys.executable, "-c", RESOLVE, json.dumps(argvs), json.dumps(SHOWN)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_dtg_auxl_sets_each_experiments_appendix_defaults():
    argvs = [[f"--dataset={d}"] for d in APPENDIX] + [
        [],                                                               # CUB is the default experiment
        ["--dataset=cub", "--shots_per_class=10"],                        # K-shot: N = 4
        ["--dataset=cub", "--shots_per_class=5", "--upper_interval=5"],   # the command line wins
        ["--dataset=cifar100", "--lr=0.01", "--encoder=resnet18", "--method=stl"],
        ["--dataset=oxford_iiit_pet", "--aux_dataset="],                  # the implied aux dataset dropped
        ["--dataset=cifar10", "--aux_dataset=svhn"],
        ["--dataset=cub", "--method=maxl"],                               # MAXL's generator: the backbone
        ["--dataset=cub", "--method=maxl", "--method_args=backbone='convnet4'"],
        ["--dataset=amazon", "--method=dtg_auxl_no_linear", "--method_args=width=32"]]
    got = resolved(*argvs)
    for dataset, paper in APPENDIX.items():
        values = got[f"--dataset={dataset}"]
        assert values["method"] == "dtg_auxl" and values["method_args"] == "" and values["rotation"] is False
        assert values["neumann_terms"] == 3 and values["weight_decay"] == 0.0
        assert values["dev_batch_size"] == values["batch_size"]  # the reordered (upper) batch
        for flag, value in paper.items():
            assert values[flag] == value, (dataset, flag)
    assert got[""] == got["--dataset=cub"]
    assert got["--dataset=cub"]["val_fraction"] == 0.1 and got["--dataset=cub"]["drop_unlabelled"] is True
    assert got["--dataset=amazon"]["chronological"] and got["--dataset=amazon"]["test_fraction"] == 0.1
    assert abs(got["--dataset=amazon"]["val_fraction"] * 0.9 - 0.1) < 1e-12  # 0.8 / 0.1 / 0.1 by review time
    ten = got["--dataset=cub --shots_per_class=10"]
    assert (ten["shots_per_class"], ten["upper_interval"], ten["drop_unlabelled"]) == (10, 4, True)
    assert got["--dataset=cub --shots_per_class=5 --upper_interval=5"]["upper_interval"] == 5
    mixed = got["--dataset=cifar100 --lr=0.01 --encoder=resnet18 --method=stl"]
    assert (mixed["lr"], mixed["encoder"], mixed["optimizer"], mixed["method"]) == (0.01, "resnet18", "sgd", "stl")
    assert got["--dataset=oxford_iiit_pet --aux_dataset="]["aux_dataset"] is None
    assert got["--dataset=cifar10 --aux_dataset=svhn"]["aux_dataset"] == "svhn"
    assert got["--dataset=cub --method=maxl"]["method_args"] == "backbone='resnet18'"
    assert got["--dataset=cub --method=maxl --method_args=backbone='convnet4'"]["method_args"] == "backbone='convnet4'"
    ablation = got["--dataset=amazon --method=dtg_auxl_no_linear --method_args=width=32"]
    assert ablation["method_args"] == "width=32" and ablation["upper_interval"] == 50


# ------------------------------------------------------------------ generated raw files
def amazon_dir(root, users=25, items=30, reviews=400, seed=5):
    """reviews_Toys_and_Games_5.json (JSON lines, the 2014 fields) and its 2014 metadata."""
    rng = np.random.default_rng(seed)
    pairs = rng.choice(users * items, reviews, replace=False)
    lines = [json.dumps({"reviewerID": f"U{p // items}", "asin": f"I{p % items}",
                         "overall": float(rng.integers(1, 6)), "unixReviewTime": 1_300_000_000 + 3600 * k,
                         "reviewText": "fine"}) for k, p in enumerate(pairs)]
    write(root / "reviews_Toys_and_Games_5.json", "\n".join(lines) + "\n")
    write(root / "meta_Toys_and_Games.json", "".join(
        f"{{'asin': 'I{i}', 'categories': [['Toys & Games', '{'Puzzles' if i % 2 else 'Dolls'}']]}}\n"
        for i in range(items)))
    return root


def runs(tmp):
    """run -> (arguments, the flags metrics.json must show, other metrics it must show)."""
    cifar = tmp / "cifar"
    cifar.mkdir()
    write_cifar(cifar, 16, np.random.default_rng(11))  # CIFAR-10: 80 train / 16 test; CIFAR-100: 48 / 16
    small = ["--batch_size=8", "--dev_batch_size=8", "--eval_batch_size=64"]
    return {
        # 4.2, shared input: fine labels, coarse auxiliary; 48 = 24 train + 24 validation (6 dev)
        "cifar100": ([f"--data_dir={cifar}", "--dataset=cifar100", *small],
                     {"method": "dtg_auxl", "dataset": "cifar100", "encoder": "convnet4", "optimizer": "sgd",
                      "lr": 0.1, "lr_decay": MULTISTEP, "upper_optimizer": "adam", "upper_lr": 1e-3,
                      "val_fraction": 0.5, "dataset_args": "coarse=True", "aux_dataset": None, "rotation": False},
                     {"num_train": 24, "num_test": 16, "targets": ["label"]}),
        # 4.4, different input: CIFAR-10 with CIFAR-100's training images (aux_label, 100-way)
        # (the upper SGD step on the unclipped hypergradient sent the losses of this random-label
        # toy to ~1e7 and beyond: clipped here, as the appendix's settings do not say)
        "cifar10": ([f"--data_dir={cifar}", f"--aux_data_dir={cifar}", "--dataset=cifar10", *small,
                     "--upper_clipnorm=10"],
                    {"method": "dtg_auxl", "dataset": "cifar10", "encoder": "convnet4", "optimizer": "sgd",
                     "upper_optimizer": "sgd", "upper_lr": 1e-2, "val_fraction": 0.5, "aux_dataset": "cifar100"},
                    {"num_train": 40, "num_test": 16, "targets": ["label"]}),
        # 4.3: rating regression with the CTR auxiliary, AutoInt
        "amazon": ([f"--data_dir={amazon_dir(tmp / 'amazon')}", "--dataset=amazon",
                    "--dataset_args=category=\"Toys_and_Games\"", "--batch_size=32", "--dev_batch_size=32"],
                   {"method": "dtg_auxl", "dataset": "amazon", "encoder": "autoint", "optimizer": "adam",
                    "lr": 1e-3, "upper_optimizer": "adam", "upper_lr": 1e-2, "chronological": True,
                    "test_fraction": 0.1},
                   {"num_test": 40, "targets": ["rating"]}),
    }


def run_binary(tmp, name):
    """apps.dtg_auxl for one of `runs`: (return code, stdout, stderr, output dir, flags, metrics)."""
    args, flags, metrics = runs(tmp)[name]
    out = tmp / "runs" / name
    proc = subprocess.run([sys.executable, "-m", "apps.dtg_auxl", *COMMON, *args, f"--output_dir={out}"],
                          capture_output=True, text=True, timeout=600)
    return proc.returncode, proc.stdout, proc.stderr, out, flags, metrics


# The different-input run is the default one; the shared-input and regression paths are also
# covered by tests/test_dtg.py's fit tests and by the defaults test above, so their binaries are slow.
@pytest.mark.parametrize("name", [pytest.param("cifar100", marks=pytest.mark.slow), "cifar10",
                                  pytest.param("amazon", marks=pytest.mark.slow)])
def test_dtg_auxl_binary_runs_with_the_appendix_defaults(tmp_path, name):
    code, stdout, stderr, out, flags, expected = run_binary(tmp_path, name)
    assert code == 0, stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["epochs"] == 1
    assert metrics["primary_metric"].endswith("rmse" if name == "amazon" else "accuracy")
    assert np.isfinite(metrics["test"]) and np.isfinite(metrics["best_val"])
    skipped = inapplicable(metrics["method"])  # flags the method does not read are not recorded
    for flag, value in flags.items():
        assert metrics["flags"][flag] == value if flag not in skipped else flag not in metrics["flags"], flag
    for key, value in expected.items():
        assert metrics[key] == value, key
    history = metrics["history"]
    assert np.isfinite(history["dtg_generated_loss"][0])  # the generated task trained
    assert {"cifar100": "coarse_loss", "cifar10": "aux_label_loss", "amazon": "click_loss"}[name] in history
    assert not any(k.startswith("rotation") for k in history)
    assert f"dtg_auxl on {metrics['dataset']}" in stdout
    assert (out / "saved_model" / "saved_model.pb").exists() and (out / "schedule.npz").exists()
