"""Runs that are killed, corrupted or started twice (the output folder and its backup)."""

import json
import os
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from apps import experiment
from apps import train as train_app  # noqa: F401  (defines the flags)
from tfaux import backup

JTDS = ["--method=jtds", "--epochs=2", "--batch_size=64", "--dev_size=60", "--upper_interval=4",
        "--upper_lr=0.05", "--verbose=0"]
STL = ["--method=stl", "--epochs=1", "--batch_size=128", "--dev_size=60", "--verbose=0"]


def _one_sentence(stop):
    message = str(stop.value)
    assert message.startswith("error: ") and "\n" not in message and "Traceback" not in message, message
    return message


def _same_result(a, b):
    assert a["history"].keys() == b["history"].keys()
    for key, values in a["history"].items():
        np.testing.assert_allclose(b["history"][key], values, rtol=1e-4, atol=1e-5, err_msg=key)
    assert a["best_epoch"] == b["best_epoch"]
    np.testing.assert_allclose(b["test"], a["test"], atol=1e-6)


def test_a_run_killed_while_writing_its_backup_resumes_as_the_uninterrupted_one(tmp_path, parse):
    """SIGKILL inside the write of epoch 2's backup (held open by the test hook): the folder is
    locked meanwhile, the half-written backup is ignored, and the rerun resumes after epoch 1."""
    cut = tmp_path / "cut"
    env = {**os.environ, backup.PAUSE_ENV: "2:300"}
    log = open(tmp_path / "killed.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "apps.train", *JTDS, f"--output_dir={cut}"], env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 240
        while not (cut / "backup" / "writing").exists():
            assert proc.poll() is None, (tmp_path / "killed.log").read_text()
            assert time.time() < deadline, "the run never reached its second backup"
            time.sleep(0.2)
        with pytest.raises(SystemExit) as second:  # a concurrent run on the same folder
            experiment.main_with_errors(parse(*JTDS, f"--output_dir={cut}"))
        assert f"in use by another run (process {proc.pid})" in _one_sentence(second)
    finally:
        proc.kill()
        proc.wait()
    assert (cut / "backup" / "epoch-000002" / "state.weights.h5").exists()  # written, never switched to
    assert backup.finished_epochs(str(cut / "backup")) == 1
    resumed = experiment.run(parse(*JTDS, f"--output_dir={cut}"))
    whole = experiment.run(parse(*JTDS, f"--output_dir={tmp_path / 'whole'}"))
    assert resumed["resumed_at_epoch"] == 1 and whole["resumed_at_epoch"] == 0
    _same_result(whole, resumed)
    assert not (cut / "backup").exists()
    a, b = (np.load(tmp_path / run / "schedule.npz") for run in ("whole", "cut"))  # the learned schedule too
    np.testing.assert_allclose(b["weights"], a["weights"], rtol=1e-4, atol=1e-5)
    a, b = (np.load(tmp_path / run / "schedule_history.npz") for run in ("whole", "cut"))
    assert list(b["epochs"]) == list(a["epochs"]) == [1, 2]
    np.testing.assert_allclose(b["weights"], a["weights"], rtol=1e-4, atol=1e-5)


class _Interrupted(Exception):
    pass


class _FailAt(keras.callbacks.Callback):
    """Stand-in for a kill: at the end of epoch `epoch` (after its backup) or of training."""

    def __init__(self, epoch=None):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epoch:
            raise _Interrupted()

    def on_train_end(self, logs=None):
        if self.epoch is None:
            raise _Interrupted()


def test_a_run_killed_after_training_finishes_without_retraining(tmp_path, parse):
    out = tmp_path / "cut"
    with pytest.raises(_Interrupted):
        experiment.run(parse(*STL, f"--output_dir={out}"), extra_callbacks=[_FailAt()])
    assert backup.finished_epochs(str(out / "backup")) == 1 and not (out / "metrics.json").exists()
    finished = experiment.run(parse(*STL, f"--output_dir={out}"))
    assert finished["resumed_at_epoch"] == 1 and finished["status"] == "ok"
    _same_result(experiment.run(parse(*STL, f"--output_dir={tmp_path / 'whole'}")), finished)


@pytest.mark.parametrize("damage", ["truncated state", "garbled index"])
def test_a_corrupt_backup_is_named_in_one_sentence(tmp_path, parse, damage):
    out = tmp_path / "run"
    args = [*STL, "--epochs=2", f"--output_dir={out}"]
    with pytest.raises(_Interrupted):
        experiment.run(parse(*args), extra_callbacks=[_FailAt(1)])
    if damage == "truncated state":
        state = out / "backup" / "epoch-000001" / "state.weights.h5"
        state.write_bytes(state.read_bytes()[:1000])
    else:
        (out / "backup" / "latest.json").write_text('{"epoch": 1, "fol')
    with pytest.raises(SystemExit) as stop:
        experiment.main_with_errors(parse(*args))
    message = _one_sentence(stop)
    assert str(out / "backup") in message and "delete" in message, message


def test_a_folder_with_another_runs_result_needs_overwrite_which_leaves_no_stale_file(tmp_path, parse):
    out = tmp_path / "run"
    experiment.run(parse(*JTDS[:-2], "--epochs=1", "--verbose=0", f"--output_dir={out}"))
    assert (out / "schedule.npz").exists()
    with pytest.raises(SystemExit) as refused:
        experiment.main_with_errors(parse(*STL, f"--output_dir={out}"))
    message = _one_sentence(refused)
    assert "--overwrite" in message and "--method=jtds there, stl now" in message, message
    assert json.loads((out / "metrics.json").read_text())["method"] == "jtds"  # untouched
    replaced = experiment.run(parse(*STL, "--overwrite", f"--output_dir={out}"))
    assert replaced["method"] == "stl" and not (out / "schedule.npz").exists()
    assert not (out / "schedule_history.npz").exists() and not (out / "logs" / "schedule").exists()
    again = experiment.run(parse(*STL, f"--output_dir={out}"))  # same flags: run again from scratch
    assert again["resumed_at_epoch"] == 0 and again["test"] == replaced["test"]


def test_the_history_of_a_run_killed_while_logging_drops_the_cut_row(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text("epoch,loss,val_primary_accuracy\n0,1.5,0.5\n1,1.2,0.6\n2,1.")
    assert experiment.earlier_history(str(path), 3) == {"loss": [1.5, 1.2], "val_primary_accuracy": [0.5, 0.6]}


@pytest.mark.parametrize("case", ["missing", "corrupt", "other encoder"])
def test_bad_encoder_weights_are_one_sentence(tmp_path, parse, case):
    weights = tmp_path / "resnet.weights.h5"
    if case != "missing":
        weights.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(64))
    encoder = "convnet4" if case == "other encoder" else "resnet18"
    with pytest.raises(SystemExit) as stop:
        experiment.main_with_errors(parse(*STL, f"--encoder={encoder}", f"--encoder_weights={weights}",
                                          f"--output_dir={tmp_path / 'run'}"))
    assert "--encoder_weights" in _one_sentence(stop)
    assert not (tmp_path / "run").exists()  # refused before the folder was touched


def test_a_deleted_backup_index_falls_back_to_the_newest_complete_epoch(tmp_path):
    import keras
    import numpy as np

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    saver = backup.EpochBackup(str(tmp_path / "backup"))
    saver.set_model(model)
    saver.save(1)
    kernel = np.array(model.layers[0].kernel)
    saver.save(2)
    os.makedirs(tmp_path / "backup" / "epoch-000003")  # a half-written one: no completion marker
    os.remove(tmp_path / "backup" / backup.LATEST)
    assert backup.finished_epochs(str(tmp_path / "backup")) == 2
    model.layers[0].kernel.assign(np.zeros((3, 2)))
    assert saver.restore() == 2
    np.testing.assert_array_equal(model.layers[0].kernel, kernel)
