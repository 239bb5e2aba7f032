"""--distribute=multi_worker: two worker processes on localhost (MultiWorkerMirroredStrategy from
TF_CONFIG) train as one process with the same global batch, only the chief writes, and a cluster
killed and started again resumes after its last finished epoch."""

import json
import os
import signal
import subprocess
import sys
import time
import types

import h5py
import numpy as np
import pytest

from apps import experiment
from benchmarks.multi_worker import free_ports
from apps import train as train_app  # noqa: F401  (defines the flags)
from tfaux import backup

# JTDS (lower and upper steps: 17 steps an epoch, an upper step every 4), the MLP encoder: its
# float results do not depend on how a batch is split (see test 1's docstring for BatchNorm).
ARGS = ["--method=jtds", "--encoder=mlp", "--epochs=2", "--batch_size=64", "--dev_batch_size=32", "--dev_size=60",
        "--upper_interval=4", "--eval_batch_size=512", "--verbose=0"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env(tmp, **extra):
    """CPU only, one thread per process: two workers sharing two cores each with a thread pool of
    both cores run their collectives twice as slowly."""
    os.makedirs(tmp, exist_ok=True)
    return {**os.environ, "TMPDIR": str(tmp), "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "",
            "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": "1", **extra}


def _start(args, log, env):
    return subprocess.Popen([sys.executable, "-m", "apps.train", *args], cwd=ROOT, env=env,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT)


def _workers(tmp_path, name, outs, ports, args=ARGS, **extra_env):
    """One process per worker (worker i: --output_dir=outs[i], TMPDIR tmp_path/name-tmp<i>)."""
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    return [_start([*args, "--distribute=multi_worker", f"--output_dir={out}"], tmp_path / f"{name}-{i}.log",
                   _env(tmp_path / f"{name}-tmp{i}", TF_CONFIG=json.dumps({"cluster": cluster, "task": {
                       "type": "worker", "index": i}}), **extra_env))
            for i, out in enumerate(outs)]


def _finish(procs, timeout=240):
    deadline = time.time() + timeout
    try:
        for p in procs:
            p.wait(timeout=max(1, deadline - time.time()))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p in procs:
        assert p.returncode == 0, open(p.stdout.name).read()[-3000:]


def _weights(path):
    out = {}
    with h5py.File(path) as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


def _metrics(out):
    return json.loads((out / "metrics.json").read_text())


def _same_run(a, b, atol=1e-5):
    """Same history, selection, test metric and best weights."""
    ma, mb = _metrics(a), _metrics(b)
    assert ma["history"].keys() == mb["history"].keys()
    for key, values in ma["history"].items():
        np.testing.assert_allclose(mb["history"][key], values, rtol=1e-5, atol=atol, err_msg=key)
    assert ma["best_epoch"] == mb["best_epoch"]
    np.testing.assert_allclose(mb["test"], ma["test"], atol=1e-6)
    wa, wb = _weights(a / "best.weights.h5"), _weights(b / "best.weights.h5")
    assert wa.keys() == wb.keys() and len(wa) > 20
    worst = max(float(np.max(np.abs(wa[k] - wb[k]))) for k in wa)
    assert worst <= atol, f"largest weight difference {worst}"
    return ma, mb


def _scratch(tmp):
    return [n for n in os.listdir(tmp) if n.startswith("tfaux-worker")]


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """The output folder of one process (--distribute=none) with the same global batch."""
    tmp = tmp_path_factory.mktemp("single")
    _finish([_start([*ARGS, f"--output_dir={tmp / 'out'}"], tmp / "single.log", _env(tmp / "tmp"))])
    return tmp / "out"


def test_two_workers_train_as_one_process_and_only_the_chief_writes(tmp_path, single):
    """Worker 1 is given another --output_dir: it never creates it (it writes only into its own
    temporary folder, removed at the end). With Adam the MLP encoder is used: with ConvNet-4's
    BatchNorm, the per-replica partial sums of the batch statistics round differently, and Adam
    scales that rounding noise in the directions BatchNorm makes flat (a kernel channel's scale)
    up to steps of its learning rate (measured: 1.4e-2 in the weights after one epoch of
    --method=equal; with SGD 2.4e-7, next test)."""
    chief, other = tmp_path / "chief", tmp_path / "other"
    _finish(_workers(tmp_path, "w", [chief, other], free_ports(2)))
    ma, _ = _same_run(single, chief)
    assert max(ma["history"]["hypergrad_norm"]) > 0  # upper steps were taken
    for name in ("metrics.json", "history.csv", "saved_model", "schedule.npz", "schedule_history.npz",
                 "task_weights.md", "best.weights.h5", "logs", "run.json"):
        assert (chief / name).exists(), name
    assert not (chief / "backup").exists()
    assert not other.exists()
    assert _scratch(tmp_path / "w-tmp1") == []


def test_two_workers_with_batchnorm_train_as_one_process_under_sgd(tmp_path):
    """ConvNet-4 (synchronised BatchNorm), one epoch of Equal with SGD: two workers end with one
    process's weights, BatchNorm's moving statistics included, up to the rounding of BatchNorm's
    per-replica partial sums that training amplifies (measured: 2.4e-7 on one machine, 8.1e-5 on
    an AMD EPYC; BatchNorm statistics of each worker's half batch alone would differ by ~1e-1)."""
    args = ["--method=equal", "--encoder=convnet4", "--epochs=1", "--batch_size=64", "--dev_size=60", "--optimizer=sgd",
            "--eval_batch_size=512", "--verbose=0"]
    _finish([_start([*args, f"--output_dir={tmp_path / 'single'}"], tmp_path / "single.log", _env(tmp_path / "tmp"))])
    _finish(_workers(tmp_path, "bn", [tmp_path / "chief", tmp_path / "other"], free_ports(2), args=args))
    one, two = _weights(tmp_path / "single" / "best.weights.h5"), _weights(tmp_path / "chief" / "best.weights.h5")
    assert one.keys() == two.keys() and any("batch_normalization" in k for k in one)
    worst = max(float(np.max(np.abs(one[k] - two[k]))) for k in one)
    assert worst <= 1e-3, f"largest weight difference {worst}"


def test_workers_killed_and_restarted_resume_after_the_last_finished_epoch(tmp_path, single):
    """Both workers share --output_dir (on one machine they must). SIGKILL while the chief writes
    epoch 2's backup (held open by the test hook), then both started again with the same commands:
    they resume after epoch 1 and end as the uninterrupted run; only the chief wrote."""
    out = tmp_path / "out"
    ports = free_ports(2)
    killed = _workers(tmp_path, "killed", [out, out], ports, **{backup.PAUSE_ENV: "2:300"})
    try:
        deadline = time.time() + 180
        while not (out / "backup" / "writing").exists():
            assert all(p.poll() is None for p in killed), open(killed[0].stdout.name).read()[-3000:]
            assert time.time() < deadline, "the run never reached its second backup"
            time.sleep(0.2)
    finally:
        for p in killed[::-1]:  # worker 1 first, then the chief
            p.send_signal(signal.SIGKILL)
            p.wait()
    assert backup.finished_epochs(str(out / "backup")) == 1
    assert _scratch(tmp_path / "killed-tmp1")  # a SIGKILL leaves worker 1's temporary folder
    restarted = _workers(tmp_path, "killed", [out, out], ports)  # the same commands
    _finish(restarted)
    _, resumed = _same_run(single, out)
    assert resumed["resumed_at_epoch"] == 1
    assert not (out / "backup").exists()
    assert _scratch(tmp_path / "killed-tmp1") == []  # removed by the restarted worker
    chiefs = {killed[0].pid, restarted[0].pid}
    events = [f for _, _, files in os.walk(out / "logs") for f in files if f.startswith("events.out.tfevents")]
    assert events and all(int(f.split(".")[-3]) in chiefs for f in events), (events, chiefs)
    assert int((out / ".lock").read_text()) == restarted[0].pid


@pytest.mark.parametrize("text, words", [
    (None, "needs the TF_CONFIG environment variable"),
    ("{cluster: 1", "TF_CONFIG is not valid JSON"),
    ('{"task": {"type": "worker", "index": 0}}', "has no cluster.worker"),
    ('{"cluster": {"worker": []}, "task": {"type": "worker", "index": 0}}', "has no cluster.worker"),
    ('{"cluster": {"worker": ["localhost:1"]}, "task": {"index": 0}}', "has no usable task.type"),
    ('{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "ps", "index": 0}}', "has no usable task.type"),
    ('{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker"}}', "has no task.index"),
    ('{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 2}}',
     "task.index 2 is out of range: cluster.worker lists 2 addresses (index 0 to 1)"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": -1}}', "out of range"),
])
def test_a_bad_tf_config_is_one_sentence(text, words):
    with pytest.raises(experiment.ConfigError) as error:
        experiment.tf_config(text)
    message = str(error.value)
    assert words in message and "\n" not in message and message.endswith("."), message


def test_tf_config_places_the_worker_and_the_app_refuses_a_missing_one(tmp_path, parse, monkeypatch):
    worker = experiment.tf_config('{"cluster": {"worker": ["a:1", "b:1", "c:1"]}, "task": {"type": "worker", '
                                  '"index": 2}}')
    assert (worker.index, worker.count, worker.is_chief) == (2, 3, False)
    chief = experiment.tf_config('{"cluster": {"chief": ["a:1"], "worker": ["b:1"]}, "task": {"type": "chief", '
                                 '"index": 0}}')
    assert (chief.index, chief.count, chief.is_chief) == (0, 2, True)
    lost = experiment.worker_lost(RuntimeError("{{function_node x}} Collective ops is aborted by: recvmsg:Connection "
                                               "reset by peer\n:UNKNOWN: grpc_status:14"))
    assert "\n" not in lost and lost.startswith("another worker") and lost.endswith("finished epoch."), lost
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(SystemExit) as stop:
        experiment.main_with_errors(parse(*ARGS, "--distribute=multi_worker", f"--output_dir={tmp_path / 'run'}"))
    assert str(stop.value).startswith("error: --distribute=multi_worker needs the TF_CONFIG environment variable")
    assert not (tmp_path / "run").exists()


def test_a_batch_that_does_not_split_evenly_between_replicas_is_refused(parse, tmp_path):
    flags = parse(*ARGS, "--batch_size=63", f"--output_dir={tmp_path}")
    with pytest.raises(experiment.ConfigError, match=r"--batch_size=63 is not a multiple of the 2 replicas"):
        experiment.check_batch_sizes(flags, types.SimpleNamespace(num_replicas_in_sync=2))
    experiment.check_batch_sizes(parse(*ARGS, f"--output_dir={tmp_path}"), types.SimpleNamespace(num_replicas_in_sync=2))
    with pytest.raises(experiment.ConfigError, match=r"--hvp_chunks=3 does not divide each replica's 32 examples"):
        experiment.check_batch_sizes(parse(*ARGS, "--batch_size=64", "--hvp_chunks=3", f"--output_dir={tmp_path}"),
                                     types.SimpleNamespace(num_replicas_in_sync=2))
    experiment.check_batch_sizes(parse(*ARGS, "--batch_size=64", "--hvp_chunks=4", f"--output_dir={tmp_path}"),
                                 types.SimpleNamespace(num_replicas_in_sync=2))
