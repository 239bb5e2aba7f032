"""Research tools: apps.compare, apps.tune, apps.plots and tfaux.callbacks.ScheduleRecorder.

apps.compare runs for real once, through its binary: one tiny JTDS run on digits with 40%
corrupted labels (apps.corrupted_labels in a subprocess); the compare, plots and
ScheduleRecorder-in-a-run tests share it. The aggregation is also checked on metrics.json
files written here, against numpy, and the recorder on a toy problem over several epochs.
"""

import csv
import json
import math
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import scipy.stats
import tensorflow as tf
from absl import flags

import tfaux
import toy
from apps import compare, experiment
from apps import train as train_app  # noqa: F401  (defines the experiment flags)
from tfaux.callbacks import ScheduleRecorder

FAST = ["--dataset=digits", "--epochs=1", "--dev_size=60", "--upper_interval=5", "--batch_size=64", "--verbose=0"]
PNG = b"\x89PNG\r\n\x1a\n"


def _compare_binary(*args):
    return subprocess.run([sys.executable, "-m", "apps.compare", *args], capture_output=True, text=True,
                          timeout=300)


COMPARE_ARGS = ["--experiment=corrupted_labels", "--methods=jtds", "--seeds=0", "--set=noise_rate=0.4", "--", *FAST]


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """apps.compare over one real JTDS run (digits, 40% corrupted labels, one epoch)."""
    out = tmp_path_factory.mktemp("compare")
    done = _compare_binary(f"--output_dir={out}", *COMPARE_ARGS)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return out, done


def _csv(path):
    with open(path) as f:
        return {row["method"]: row for row in csv.DictReader(f)}


# ---------------------------------------------------------------- apps.compare
def test_compare_runs_each_seed_as_a_process_and_tabulates_it(compared):
    out, done = compared
    run = out / "jtds_seed0"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["method"] == "jtds" and metrics["flags"]["noise_rate"] == 0.4 and metrics["flags"]["seed"] == 0
    assert metrics["flags"]["epochs"] == 1 and metrics["flags"]["dev_size"] == 60
    assert (run / "compare.log").exists() and "--noise_rate=0.4" in (run / "command.txt").read_text()
    row = _csv(out / "results.csv")["jtds"]
    assert float(row["mean"]) == metrics["test"] and float(row["sem"]) == 0.0 and row["runs"] == "1"
    assert float(row["wall_seconds"]) == metrics["wall_seconds"]
    assert float(row["peak_rss_mib"]) == metrics["peak_rss_mib"]
    assert row["delta_vs_stl"] == "" and row["wall_ratio_vs_stl"] == ""  # no STL among the methods
    table = (out / "results.md").read_text()
    assert f"| jtds | {metrics['test'] * 100:.2f} ± 0.00 | — |" in table and table in done.stdout
    # Resumable: a finished run is not run again.
    stamp = os.path.getmtime(run / "metrics.json")
    again = _compare_binary(f"--output_dir={out}", *COMPARE_ARGS)
    assert again.returncode == 0 and "done already" in again.stdout, again.stdout + again.stderr
    assert os.path.getmtime(run / "metrics.json") == stamp


def _fake_run(out, method, seed, test, wall, rss, metric="primary_accuracy"):
    where = out / f"{method}_seed{seed}"
    where.mkdir(parents=True)
    (where / "metrics.json").write_text(json.dumps({
        "method": method, "dataset": "digits", "primary_metric": metric, "test": test,
        "wall_seconds": wall, "peak_rss_mib": rss}))


def _sem(values):
    return float(np.std(values, ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0


def test_compare_counts_a_diverged_run_as_failed_not_as_a_number(tmp_path):
    _fake_run(tmp_path, "stl", 0, 0.9, 10.0, 500.0)
    where = tmp_path / "jtds_seed0"
    where.mkdir()
    (where / "metrics.json").write_text(json.dumps({"status": "diverged", "method": "jtds",
                                                    "diverged": {"epoch": 1, "step": 3, "loss": "nan"}}))
    echoed = []
    failed = compare.run_all("train", ["stl", "jtds"], [0], str(tmp_path), echo=echoed.append)
    assert failed == [("jtds", 0)] and "diverged" in echoed[-1]
    runs = compare.collect(str(tmp_path), ["stl", "jtds"], [0])
    assert [s for s, _ in runs["stl"]] == [0] and runs["jtds"] == []


@pytest.mark.parametrize("metric, scale", [("primary_accuracy", 100.0), ("primary_rmse", 1.0)])
def test_compare_table_equals_the_per_run_metrics(tmp_path, metric, scale):
    rng = np.random.default_rng(7)
    runs = {"stl": [0, 1, 2], "jtds": [0, 1, 2], "equal": [1]}  # equal: one finished run
    values = {}
    for method, seeds in runs.items():
        for seed in seeds:
            v = (float(rng.uniform(0.7, 0.9)), float(rng.uniform(5, 50)), float(rng.uniform(500, 900)))
            values.setdefault(method, []).append(v)
            _fake_run(tmp_path, method, seed, *v, metric=metric)
    compare.tabulate("train", ["stl", "equal", "jtds"], [0, 1, 2], str(tmp_path))
    rows = _csv(tmp_path / "results.csv")
    assert list(rows) == ["stl", "equal", "jtds"]
    stl = np.array(values["stl"])
    table = (tmp_path / "results.md").read_text()
    for method, v in values.items():
        v = np.array(v)
        row = rows[method]
        mean, sem = v[:, 0].mean(), _sem(v[:, 0])
        assert int(row["runs"]) == len(v) and row["metric"] == metric
        assert math.isclose(float(row["mean"]), mean, rel_tol=1e-12)
        assert math.isclose(float(row["sem"]), sem, rel_tol=1e-12, abs_tol=1e-15)
        assert math.isclose(float(row["delta_vs_stl"]), (mean - stl[:, 0].mean()) * scale, rel_tol=1e-9,
                            abs_tol=1e-12)
        assert math.isclose(float(row["wall_ratio_vs_stl"]), v[:, 1].mean() / stl[:, 1].mean(), rel_tol=1e-12)
        assert math.isclose(float(row["memory_ratio_vs_stl"]), v[:, 2].mean() / stl[:, 2].mean(), rel_tol=1e-12)
        digits = 2 if scale == 100.0 else 4
        assert f"| {method} | {mean * scale:.{digits}f} ± {sem * scale:.{digits}f} |" in table
    assert rows["equal"]["sem"] == "0.0" and rows["stl"]["delta_vs_stl"] == "0.0"
    assert ("Accuracy % (mean ± SEM)" if scale == 100.0 else "RMSE (mean ± SEM)") in table


def test_compare_reports_each_target_with_several_targets(tmp_path):
    """Two targets: the main table is the mean (metrics.json `test`), and each target's own
    test accuracy gets a row: mean ± SEM over seeds, per method (results_targets.csv too)."""
    rng = np.random.default_rng(3)
    values = {}
    for method in ("stl", "ptl"):
        for seed in (0, 1):
            a, b = rng.uniform(0.6, 0.95, 2)
            values.setdefault(method, []).append((a, b))
            where = tmp_path / f"{method}_seed{seed}"
            where.mkdir()
            (where / "metrics.json").write_text(json.dumps({
                "status": "ok", "method": method, "dataset": "multi_mnist", "primary_metric": "primary_accuracy",
                "targets": ["top_left", "bottom_right"], "test": (a + b) / 2, "wall_seconds": 1.0,
                "peak_rss_mib": 1.0, "test_metrics": {"top_left_accuracy": a, "bottom_right_accuracy": b}}))
    compare.tabulate("train", ["stl", "ptl"], [0, 1], str(tmp_path))
    table = (tmp_path / "results.md").read_text()
    rows = list(csv.DictReader(open(tmp_path / "results_targets.csv")))
    assert len(rows) == 4
    for method, v in values.items():
        v = np.array(v)
        for k, target in enumerate(("top_left", "bottom_right")):
            assert f"{v[:, k].mean() * 100:.2f} ± {_sem(v[:, k]) * 100:.2f}" in table
            row = next(r for r in rows if r["method"] == method and r["target"] == target)
            assert math.isclose(float(row["mean"]), v[:, k].mean(), rel_tol=1e-12)
    assert "| top_left |" in table and "| bottom_right |" in table


def test_compare_flags_and_errors(tmp_path):
    assert compare.passthrough_args(["aux_weights=rotation=0.5,coarse=2", "--epochs=2"], ["--norotation"]) == [
        "--aux_weights=rotation=0.5,coarse=2", "--epochs=2", "--norotation"]
    with pytest.raises(compare.CompareError, match="--seed"):
        compare.passthrough_args(["seed=3"])
    assert compare.command("train", "stl", 2, str(tmp_path), ["--epochs=1"])[2:] == [
        "apps.train", "--method=stl", "--seed=2", f"--output_dir={tmp_path}/stl_seed2", "--epochs=1"]
    wrong = _compare_binary("--experiment=nope", f"--output_dir={tmp_path}")
    assert wrong.returncode != 0 and "Traceback" not in wrong.stderr
    assert "--experiment=nope" in wrong.stderr.strip().splitlines()[-1]


# ---------------------------------------------------------------- apps.plots
def test_plots_of_a_real_jtds_run_with_corrupted_labels(compared):
    pytest.importorskip("matplotlib")
    from apps import plots
    run = compared[0] / "jtds_seed0"
    made = plots.make_plots(str(run), echo=lambda *_: None)
    for name in plots.FIGURES:
        path = run / f"{name}.png"
        assert made[name] == str(path), made[name]
        data = path.read_bytes()
        assert len(data) > 1024 and data.startswith(PNG), name


def test_plots_skip_what_a_run_lacks(tmp_path):
    pytest.importorskip("matplotlib")
    from apps import plots
    (tmp_path / "metrics.json").write_text(json.dumps({
        "method": "stl", "dataset": "digits", "primary_metric": "primary_accuracy", "best_epoch": 2,
        "history": {"loss": [2.0, 1.5], "label_loss": [2.0, 1.5], "primary_accuracy": [0.3, 0.5],
                    "val_loss": [1.8, 1.4], "val_primary_accuracy": [0.4, 0.6]}}))
    printed = []
    made = plots.make_plots(str(tmp_path), echo=printed.append)
    assert made["loss_curves"] == str(tmp_path / "loss_curves.png")
    for name in ("schedule_evolution", "loss_filter", "corrupted_vs_clean"):
        assert made[name].startswith("skipped: ") and not (tmp_path / f"{name}.png").exists()
        assert any(line.startswith(f"skipped {name}.png: ") for line in printed)


# ---------------------------------------------------------------- ScheduleRecorder
def test_schedule_recorder_in_a_run_matches_example_weights_after_training(compared, parse):
    """The run's schedule_history.npz against example_weights of a model rebuilt here from the
    run's best.weights.h5 (one epoch, so the best epoch is the last)."""
    run = compared[0] / "jtds_seed0"
    h = np.load(run / "schedule_history.npz")
    flags_ = parse("--method=jtds", "--noise_rate=0.4", *FAST)
    data = experiment.load_data(flags_)
    model = experiment.build_model(flags_, data)
    model.load_weights(run / "best.weights.h5")
    weights = tfaux.schedule.example_weights(model, data.train_eval(256), data.num_train)
    assert h["weights"].shape == (1, 64, 2) and list(h["epochs"]) == [1] and list(h["tasks"]) == ["label", "rotation"]
    np.testing.assert_array_equal(h["ids"], np.sort(np.random.default_rng(0).choice(data.num_train, 64, replace=False)))
    np.testing.assert_allclose(h["weights"][-1], weights[h["ids"]], rtol=1e-5)
    np.testing.assert_allclose(h["loss_scale"][-1], model.method.loss_scale.numpy())
    np.testing.assert_allclose(h["loss_shift"][-1], model.method.loss_shift.numpy())
    np.testing.assert_array_equal(h["corrupted"], data.corrupted[h["ids"]])
    assert h["corrupted"].any() and not h["corrupted"].all()
    u = scipy.stats.mannwhitneyu(weights[~data.corrupted, 0], weights[data.corrupted, 0]).statistic
    auc = u / ((~data.corrupted).sum() * data.corrupted.sum())  # P(clean weight > corrupted weight)
    assert h["primary_auc"].shape == (1,) and math.isclose(h["primary_auc"][0], auc, rel_tol=1e-4)
    # TensorBoard scalars over the whole training split.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(run / "logs" / "schedule"), size_guidance={"tensors": 0}).Reload()
    scalars = {tag: [float(tf.make_ndarray(e.tensor_proto)) for e in events.Tensors(tag)]
               for tag in events.Tags()["tensors"]}
    expected = {"schedule/mean_weight/label": weights[:, 0].mean(),
                "schedule/mean_weight/rotation": weights[:, 1].mean(),
                "schedule/primary_weight_corrupted": weights[data.corrupted, 0].mean(),
                "schedule/primary_weight_clean": weights[~data.corrupted, 0].mean(),
                "schedule/primary_auc": auc}
    assert set(scalars) == set(expected), scalars
    for tag, value in expected.items():
        assert len(scalars[tag]) == 1 and math.isclose(scalars[tag][0], value, rel_tol=1e-5), tag


class _SetFilterJTDS(tfaux.strategies.JTDS):
    """JTDS whose loss filter the test sets each epoch (not learned: no hypergradient to trace)."""

    bilevel = False


def test_schedule_recorder_over_epochs_on_a_toy_problem(tmp_path):
    model = toy.model(_SetFilterJTDS())
    every = tf.data.Dataset.from_tensor_slices(toy.examples()).batch(48)
    recorder = ScheduleRecorder(every, toy.N, sample=16, seed=2, log_dir=str(tmp_path))
    scale, shift = np.array([[1.0, -1.0], [2.0, -2.0], [3.0, -3.0]]), np.array([[0.0, 0.5], [0.5, 1.0], [1.0, 1.5]])
    set_filter = keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: (
        model.method.loss_scale.assign(scale[epoch]), model.method.loss_shift.assign(shift[epoch])))
    model.fit(toy.streams()[0], epochs=3, callbacks=[set_filter, recorder], verbose=0)
    h = recorder.history()
    assert h["weights"].shape == (3, 16, 2) and list(h["epochs"]) == [1, 2, 3] and list(h["tasks"]) == ["main", "aux"]
    np.testing.assert_array_equal(h["ids"], np.sort(np.random.default_rng(2).choice(toy.N, 16, replace=False)))
    np.testing.assert_allclose(h["weights"][-1], tfaux.schedule.example_weights(model, every, toy.N)[h["ids"]],
                               rtol=1e-6)
    np.testing.assert_allclose(h["loss_scale"], scale)  # one row per epoch, as set during that epoch
    np.testing.assert_allclose(h["loss_shift"], shift)
    assert not np.allclose(h["weights"][0], h["weights"][2])
    assert "corrupted" not in h and np.isnan(h["primary_auc"]).all()  # no corrupted flags given
    assert list(tmp_path.iterdir())  # events written


def test_schedule_recorder_arguments():
    recorder = ScheduleRecorder(None, 10, sample=64, seed=1)
    assert len(recorder.ids) == 10 and list(recorder.ids) == list(range(10))  # capped at num_examples
    with pytest.raises(ValueError, match="corrupted"):
        ScheduleRecorder(None, 10, corrupted=np.zeros(9, bool))


# ---------------------------------------------------------------- apps.tune
@pytest.mark.parametrize("method", ["equal", "uniform"])  # uniform: S4L's grid search (labelled stream)
def test_tune_writes_a_flag_file_absl_parses(tmp_path, parse, method):
    from apps import tune
    flags_ = parse(f"--method={method}", f"--output_dir={tmp_path}", *FAST)
    values, score, trials = tune.search(flags_, max_trials=2)
    assert len(trials) == 2 and all(t["score"] is not None for t in trials)
    assert score == max(t["score"] for t in trials)  # accuracy: higher is better
    path = tmp_path / "best_flags.txt"
    parsed = parse(f"--flagfile={path}")
    assert parsed.method == method and parsed.lr in tune.LR_GRID and parsed.lr == values["lr"]
    weights = experiment.parse_aux_weights(parsed.aux_weights)
    assert set(weights) == {"rotation"} and weights["rotation"] in tune.WEIGHT_GRID
    assert json.loads((tmp_path / "trials.json").read_text())["objective"] == "val_primary_accuracy"


def test_quality_benchmark_auc_matches_sklearn():
    from sklearn.metrics import roc_auc_score

    from benchmarks.quality import auc
    rng = np.random.default_rng(0)
    scores = np.round(rng.normal(size=300), 1)  # many ties
    positive = rng.random(300) < 0.3
    assert auc(scores, positive) == pytest.approx(roc_auc_score(positive, scores), abs=1e-12)
    assert auc([0.1, 0.2, 0.9], [False, False, True]) == 1.0 and np.isnan(auc([1.0, 2.0], [True, True]))


def test_hypergradient_benchmark_spectrum_and_damped_solve_against_numpy():
    from benchmarks.hypergrad_accuracy import damped_solve_check, extreme_eigenvalues
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(12, 12)))
    eigenvalues = np.linspace(-1.5, 9.0, 12)  # indefinite, like a network away from a minimum
    h = (q * eigenvalues) @ q.T
    theta = [tf.zeros([4, 2]), tf.zeros([4])]

    def hvp(u):
        flat = np.concatenate([np.ravel(x) for x in u]) @ h
        return [tf.constant(flat[:8].reshape(4, 2), tf.float32), tf.constant(flat[8:], tf.float32)]

    top, bottom = extreme_eigenvalues(hvp, theta, iterations=400)
    assert top == pytest.approx(9.0, rel=1e-3) and bottom == pytest.approx(-1.5, rel=1e-2)
    v = [tf.constant(rng.normal(size=(4, 2)), tf.float32), tf.constant(rng.normal(size=4), tf.float32)]
    solve, residual, agreement = damped_solve_check(hvp, v, 3.0, 30, 800, (top, bottom))
    assert residual < 1e-4 and agreement == pytest.approx(1.0, abs=1e-5)
    rhs = np.concatenate([np.ravel(x) for x in v])
    np.testing.assert_allclose(solve, np.linalg.solve(h + 3.0 * np.eye(12), rhs), rtol=1e-3, atol=1e-5)
    assert damped_solve_check(hvp, v, 0.0, 30, 10, (top, bottom))[2] is None  # the series would diverge
