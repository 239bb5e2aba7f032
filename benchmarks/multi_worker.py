"""Training throughput of --distribute=multi_worker on this machine: 1 process, 1 worker and 2
workers (localhost ports), the same global batch, the same run.

    python -m benchmarks.multi_worker [--method=jtds] [--epochs=4] [--threads=1]

Each configuration is one `apps.train` command (per worker) whose Keras log (`--verbose=2`) gives
the seconds of every epoch; the first epoch (tracing) is left out, examples/s is
(epochs - 1) * steps * batch / their seconds. On a machine with few cores the workers share
them, so this measures correctness and overhead (collective ops over gRPC), not a speed-up.
"""

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EPOCH = re.compile(r"^(\d+)/\1 - (\d+)s - (\d+)(ms|s)/step")


def free_ports(n):
    """n free TCP ports on localhost (bound, read, released)."""
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def run(workers, args, threads, folder):
    """Wall seconds and the log of worker 0 (workers=0: --distribute=none)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    if threads:
        env.update(TF_NUM_INTRAOP_THREADS=str(threads), TF_NUM_INTEROP_THREADS=str(threads),
                   OMP_NUM_THREADS=str(threads))
    out = os.path.join(folder, f"workers{workers}")
    common = [sys.executable, "-m", "apps.train", *args, "--verbose=2", f"--output_dir={out}"]
    if workers == 0:
        commands = [(common, env)]
    else:
        cluster = {"worker": [f"localhost:{p}" for p in free_ports(workers)]}
        commands = [([*common, "--distribute=multi_worker"],
                     {**env, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})})
                    for i in range(workers)]
    start = time.time()
    procs = [subprocess.Popen(c, cwd=ROOT, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for c, e in commands]
    logs = [p.communicate()[0] for p in procs]
    for p, log in zip(procs, logs):
        if p.returncode:
            raise SystemExit(f"a worker failed:\n{log[-3000:]}")
    return time.time() - start, logs[0], json.load(open(os.path.join(out, "metrics.json")))


def step_seconds(log):
    """[(steps, seconds per step)] of every epoch in a Keras --verbose=2 log."""
    out = []
    for line in log.splitlines():
        m = EPOCH.match(line.strip())
        if m:
            per_step = int(m.group(3)) / (1000.0 if m.group(4) == "ms" else 1.0)
            out.append((int(m.group(1)), per_step))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default="jtds")
    parser.add_argument("--encoder", default="auto")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="TensorFlow threads per process (0: its default)")
    flags = parser.parse_args()
    args = [f"--method={flags.method}", f"--encoder={flags.encoder}", f"--epochs={flags.epochs}",
            f"--batch_size={flags.batch_size}", "--dev_size=60", "--upper_interval=4"]
    print(f"| setting | wall s | train examples/s (epochs 2..{flags.epochs}) | ms/step | test |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for workers in (0, 1, 2):
            wall, log, metrics = run(workers, args, flags.threads, folder)
            epochs = step_seconds(log)[1:]
            steps = sum(s for s, _ in epochs)
            seconds = sum(s * t for s, t in epochs)
            name = "one process (--distribute=none)" if workers == 0 else f"{workers} worker(s), multi_worker"
            print(f"| {name} | {wall:.1f} | {steps * flags.batch_size / seconds:.0f} | {1000 * seconds / steps:.0f} "
                  f"| {metrics['test']:.4f} |", flush=True)


if __name__ == "__main__":
    main()
