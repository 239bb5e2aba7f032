"""Try the experiment binary with bad flags, bad files and kills, and tabulate what a user sees.

    python -m benchmarks.bad_inputs --output=benchmarks/results/reliability.md

Every case runs `python -m apps.train` in its own process (digits, or generated raw files in
the official formats) and is classified from its exit status and output:
- clear:     non-zero exit, one sentence on stderr (ours: "error: ...", absl's: "FATAL Flags
             parsing error: ...", followed by its pointer to --helpfull) and no Python traceback;
- traceback: non-zero exit with a traceback (or a crash without a sentence);
- silent:    exit 0 although the input was bad.
Crash points: the run is SIGKILLed at a chosen moment (the backup test hook holds a backup
write open), then started again with the same flags; it must finish with the uninterrupted
run's test metric.
"""

import concurrent.futures
import fcntl
import gzip
import json
import os
import signal
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("output", "benchmarks/results/reliability.md", "Markdown table to write.")
flags.DEFINE_integer("parallel", 2, "Cases run at once.")

FAST = ["--epochs=1", "--batch_size=128", "--dev_size=60", "--verbose=0", "--upper_interval=5"]
IMAGES_MAGIC, LABELS_MAGIC = 0x0803, 0x0801


def _idx(path, array, magic, dims=None):
    dims = array.shape if dims is None else dims
    data = struct.pack(">I", magic) + struct.pack(f">{len(dims)}I", *dims) + array.astype(np.uint8).tobytes()
    if str(path).endswith(".gz"):
        data = gzip.compress(data)
    with open(path, "wb") as f:
        f.write(data)


def mnist_dir(root, damage=None):
    """A small MNIST folder (idx files), with one kind of damage."""
    os.makedirs(root, exist_ok=True)
    rng = np.random.default_rng(0)
    for stem, n in (("train", 120), ("t10k", 40)):
        images, labels = rng.integers(0, 256, (n, 28, 28)), rng.integers(0, 10, n)
        _idx(os.path.join(root, f"{stem}-images-idx3-ubyte"), images, IMAGES_MAGIC)
        _idx(os.path.join(root, f"{stem}-labels-idx1-ubyte"), labels, LABELS_MAGIC)
    target = os.path.join(root, "t10k-images-idx3-ubyte")
    if damage == "truncated":
        with open(target, "r+b") as f:
            f.truncate(5000)
    elif damage == "magic":
        _idx(target, np.zeros((40, 28, 28)), 0x0903)
    elif damage == "zero dims":
        _idx(target, np.zeros(0), IMAGES_MAGIC, dims=(0, 28, 28))
    elif damage == "huge dims":
        _idx(target, np.zeros(100), IMAGES_MAGIC, dims=(2**32 - 1,) * 3)
    elif damage == "count":
        _idx(os.path.join(root, "t10k-labels-idx1-ubyte"), np.zeros(39), LABELS_MAGIC)
    elif damage == "label range":
        _idx(os.path.join(root, "t10k-labels-idx1-ubyte"), np.full(40, 12), LABELS_MAGIC)
    elif damage == "gzip":
        with open(target + ".gz", "wb") as f:
            f.write(b"\x1f\x8b\x08\x00garbage")
        os.remove(target)
    elif damage == "missing labels":
        os.remove(os.path.join(root, "t10k-labels-idx1-ubyte"))
    return root


def movielens_dir(root, line=None, user_file=True, item_file=True):
    """A small ml-100k folder; `line` replaces the second line of u.data."""
    d = os.path.join(root, "ml-100k")
    os.makedirs(d, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = [f"{u}\t{i}\t{rng.integers(1, 6)}\t{1000 + u * 50 + i}" for u in range(1, 21) for i in range(1, 31)]
    if line is not None:
        rows[1] = line
    with open(os.path.join(d, "u.data"), "w") as f:
        f.write("\n".join(rows) + "\n")
    if user_file:
        with open(os.path.join(d, "u.user"), "w") as f:
            f.write("".join(f"{u}|{20 + u}|{'MF'[u % 2]}|writer|0000{u}\n" for u in range(1, 21)))
    if item_file:
        with open(os.path.join(d, "u.item"), "w", encoding="latin-1") as f:
            f.write("".join(f"{i}|M {i}|01-Jan-1995||http://x|{'|'.join('1' if g == i % 19 else '0' for g in range(19))}\n"
                            for i in range(1, 31)))
    return root


def amazon_dir(root, overall):
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "Toys.json"), "w") as f:
        for k in range(40):
            f.write(json.dumps({"reviewerID": f"A{k % 7}", "asin": f"B{k % 9}", "unixReviewTime": k,
                                "overall": overall if k == 3 else float(1 + k % 5)}) + "\n")
    return root


def flag_cases(tmp):
    """(name, args) for bad flags; every one is refused before training."""
    afile = os.path.join(tmp, "a_file")
    open(afile, "w").close()
    weights = os.path.join(tmp, "bad.weights.h5")
    with open(weights, "wb") as f:
        f.write(b"\x89HDF\r\n\x1a\n" + bytes(64))
    cases = [(f"--{name}={value}", [f"--{name}={value}"]) for name, value in [
        ("lr", "nan"), ("lr", "inf"), ("lr", "-1"), ("upper_lr", "nan"), ("upper_lr", "-0.1"),
        ("upper_clipnorm", "nan"), ("upper_clipnorm", "-1"), ("upper_weight_decay", "-1"), ("neumann_alpha", "nan"),
        ("label_fraction", "1.5"), ("label_fraction", "nan"), ("noise_rate", "-0.1"), ("epochs", "0"),
        ("epochs", "abc"), ("batch_size", "0"), ("dev_batch_size", "0"), ("upper_interval", "0"),
        ("neumann_terms", "-1"), ("cg_iterations", "0"), ("dev_size", "0"), ("dev_size", "100000"),
        ("shots_per_class", "-1"), ("dev_per_class", "-1"), ("seed", "-1"), ("seed", str(2**32)),
        ("method", "nosuch"), ("dataset", "nosuch"), ("encoder", "nosuch"), ("distribute", "nosuch"),
        ("solver", "nosuch"), ("hessian_scope", "nosuch"), ("noise_kind", "nosuch"), ("aux_dataset", "nosuch"),
        ("output_dir", ""), ("output_dir", afile), ("data_dir", "/no/such/dir"), ("encoder_weights", weights),
        ("val_fraction", "0"), ("val_fraction", "nan"), ("weight_decay", "nan"), ("weight_decay", "-1"),
        ("eval_batch_size", "0"), ("optimizer", "nosuch"), ("num_labelled", "-1"), ("hvp_chunks", "0"),
    ]]
    cases += [
        ("--aux_weights=rotation=nan", ["--method=equal", "--aux_weights=rotation=nan"]),
        ("--aux_weights=rotation=-1", ["--method=equal", "--aux_weights=rotation=-1"]),
        ("--aux_weights=nosuch=1", ["--method=equal", "--aux_weights=nosuch=1"]),
        ("--aux_weights=rotation", ["--method=equal", "--aux_weights=rotation"]),
        ("--method_args=nosuch=1", ["--method=dwa", "--method_args=nosuch=1"]),
        ("--method_args=temperature=", ["--method=dwa", "--method_args=temperature="]),
        ("--method_args=garbage", ["--method=dwa", "--method_args=garbage"]),
        ("--method_args=temperature=-2", ["--method=dwa", "--method_args=temperature=-2"]),
        ("--method_args=weighted=yes", ["--method=gcs", "--method_args=weighted=yes"]),
        ("--method_args=temperature=True (ARML)", ["--method=arml", "--method_args=temperature=True"]),
        ("--method_args=temperature=hot", ["--method=dwa", "--method_args=temperature=hot"]),
        ("--method_args=trainable=False (STL)", ["--method=stl", "--method_args=trainable=False"]),
        ("--encoder=resnet18 --encoder_weights=missing", ["--encoder=resnet18",
                                                          f"--encoder_weights={tmp}/missing.weights.h5"]),
        ("--encoder=tabular on images", ["--encoder=tabular"]),
        ("--shots_per_class=1000", ["--shots_per_class=1000"]),
        ("--num_labelled=100000", ["--num_labelled=100000"]),
        ("--num_labelled with --label_fraction", ["--num_labelled=50", "--label_fraction=0.5"]),
        ("--label_fraction keeping no label", ["--label_fraction=0.0001"]),
        ("--dataset_args=nosuch=1", ["--dataset_args=nosuch=1"]),
        ("--dataset_args=garbage", ["--dataset_args=garbage"]),
        ("--lr_decay=80", ["--lr_decay=80"]),
        ("--lr_decay=5=0.1,3=0.1 (decreasing)", ["--lr_decay=5=0.1,3=0.1"]),
        ("--lr_decay=5=nan", ["--lr_decay=5=nan"]),
        ("--encoder=segnet without per-pixel tasks", ["--encoder=segnet"]),
        ("--method_args=combiner=nosuch", ["--method=auxilearn", "--method_args=combiner=nosuch"]),
        ("--noise_rate on a regression primary", ["--dataset=movielens_100k", "--noise_rate=0.2",
                                                            f"--data_dir={movielens_dir(os.path.join(tmp, 'mlok'))}"]),
    ]
    return cases


def file_cases(tmp):
    cases = []
    for damage in ("truncated", "magic", "zero dims", "huge dims", "count", "label range", "gzip", "missing labels"):
        cases.append((f"MNIST idx: {damage}", ["--dataset=mnist",
                                                f"--data_dir={mnist_dir(os.path.join(tmp, 'mnist_' + damage), damage)}"]))
    for name, line in [("rating 1e30", "1\t2\t1e30\t1001"), ("rating -50", "1\t2\t-50\t1001"),
                       ("rating 'five'", "1\t2\tfive\t1001"), ("3 fields", "1\t2\t5"), ("unknown user", "99\t2\t5\t1")]:
        root = movielens_dir(os.path.join(tmp, "ml_" + name.replace(" ", "_").replace("'", "")), line)
        cases.append((f"MovieLens u.data: {name}", ["--dataset=movielens_100k", f"--data_dir={root}"]))
    cases.append(("MovieLens: u.item missing", ["--dataset=movielens_100k",
                                                f"--data_dir={movielens_dir(os.path.join(tmp, 'ml_noitem'), item_file=False)}"]))
    for overall in (9.0, -1.0):
        cases.append((f"Amazon overall {overall:g}", ["--dataset=amazon",
                                                      f"--data_dir={amazon_dir(os.path.join(tmp, f'am{overall}'), overall)}"]))
    return cases


def folder_cases(tmp):
    """Output folders that a run must not use as they are; returns (cases, held lock files)."""
    finished = os.path.join(tmp, "finished_other")
    os.makedirs(finished)
    with open(os.path.join(finished, "metrics.json"), "w") as f:
        json.dump({"status": "ok", "flags": {"method": "stl"}}, f)
    garbled = os.path.join(tmp, "garbled_backup", "backup")
    os.makedirs(garbled)
    with open(os.path.join(garbled, "latest.json"), "w") as f:
        f.write('{"epoch": 1, "fol')
    busy = os.path.join(tmp, "busy")
    os.makedirs(busy)
    lock = open(os.path.join(busy, ".lock"), "a+")
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running run holds it
    foreign = os.path.join(tmp, "not_a_run", "logs")
    os.makedirs(foreign)
    with open(os.path.join(foreign, "notes.txt"), "w") as f:
        f.write("the user's own file")
    cases = [("--output_dir holding a finished run with other flags", [f"--output_dir={finished}"]),
             ("--output_dir holding files no run wrote (logs/notes.txt)", [f"--output_dir={os.path.dirname(foreign)}"]),
             ("--output_dir holding files no run wrote, --overwrite", [f"--output_dir={os.path.dirname(foreign)}",
                                                                       "--overwrite"]),
             ("--output_dir with a garbled backup index", [f"--output_dir={os.path.dirname(garbled)}"]),
             ("--output_dir in use by another run", [f"--output_dir={busy}"])]
    return cases, [lock]


def classify(result, expect_ok=False):
    err = result.stderr.strip().splitlines()
    last = err[-1] if err else ""
    if result.returncode == 0:
        return "ok" if expect_ok else "silent"
    said = [ln for ln in err if ln.startswith("error: ") or "Flags parsing error" in ln]
    if "Traceback" in result.stderr or not said:
        return "traceback"
    return "clear"


def run_case(args, cwd=None, env=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "apps.train", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=env)


def crash_points(tmp):
    """(moment, resumed at, same result as uninterrupted) for SIGKILLs at chosen moments."""
    args = ["--method=jtds", "--epochs=2", "--batch_size=64", "--dev_size=60", "--upper_interval=4", "--verbose=0"]
    whole = os.path.join(tmp, "crash_whole")
    assert run_case(args + [f"--output_dir={whole}"]).returncode == 0
    reference = json.load(open(os.path.join(whole, "metrics.json")))["test"]
    moments = {
        "during epoch 1 (no backup yet)": ("run.json", None, 1.0),
        "inside the write of epoch 1's backup": ("backup/writing", "1:300", 0.0),
        "inside the write of epoch 2's backup": ("backup/writing", "2:300", 0.0),
        "after the last epoch, while testing/exporting": ("saved_model.partial", None, 0.0),
    }
    rows = []
    for moment, (marker, pause, delay) in moments.items():
        out = os.path.join(tmp, "crash_" + str(len(rows)))
        env = {**os.environ, **({"TFAUX_TEST_BACKUP_PAUSE": pause} if pause else {})}
        proc = subprocess.Popen([sys.executable, "-m", "apps.train", *args, f"--output_dir={out}"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 300
        while not os.path.exists(os.path.join(out, marker)) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(delay)
        killed = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        again = run_case(args + [f"--output_dir={out}"])
        metrics = json.load(open(os.path.join(out, "metrics.json"))) if again.returncode == 0 else {}
        rows.append((moment, killed, again.returncode, metrics.get("resumed_at_epoch"),
                     abs(metrics.get("test", -1) - reference) < 1e-6))
    return rows


def main(argv):
    del argv
    with tempfile.TemporaryDirectory() as tmp:
        folders, held = folder_cases(tmp)
        cases = ([(n, a, "flag") for n, a in flag_cases(tmp)] + [(n, a, "file") for n, a in file_cases(tmp)]
                 + [(n, a, "folder") for n, a in folders])

        def one(case):
            name, args, kind = case
            name = name.replace(tmp, "<tmp>")
            out = [a for a in args if a.startswith("--output_dir")] or [f"--output_dir={tmp}/run_{abs(hash(name))}"]
            result = run_case([*FAST, *args, *([] if out[0] in args else out)])
            lines = result.stderr.strip().splitlines() or [""]
            said = [ln for ln in lines if ln.startswith("error: ") or "Flags parsing error" in ln]
            return name, kind, classify(result), (said or lines)[-1].replace(tmp, "<tmp>")[:160]

        with concurrent.futures.ThreadPoolExecutor(FLAGS.parallel) as pool:
            results = list(pool.map(one, cases))
        for lock in held:
            lock.close()
        crashes = crash_points(tmp)
    counts = {k: sum(r[2] == k for r in results) for k in ("clear", "traceback", "silent")}
    lines = ["# Bad inputs and crash points (`python -m benchmarks.bad_inputs`)", "",
             f"{len(results)} bad inputs: {counts['clear']} clear one-sentence errors, {counts['traceback']} "
             f"tracebacks, {counts['silent']} silently accepted.", "",
             "| case | kind | outcome | last line |", "|---|---|---|---|"]
    lines += [f"| `{n}` | {k} | {o} | {m.replace('|', '/')} |" for n, k, o, m in results]
    lines += ["", f"{len(crashes)} crash points (SIGKILL, then the same command again):", "",
              "| killed | still running when killed | rerun exit | resumed at epoch | same test metric |",
              "|---|---|---|---|---|"]
    lines += [f"| {m} | {k} | {rc} | {e} | {s} |" for m, k, rc, e, s in crashes]
    os.makedirs(os.path.dirname(FLAGS.output) or ".", exist_ok=True)
    with open(FLAGS.output, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    app.run(main)
