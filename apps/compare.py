"""Run several methods over several seeds and tabulate them (seed 000, Table 2 format).

    python -m apps.compare --experiment=corrupted_labels --methods=stl,equal,jtds --seeds=0,1,2 \\
        --output_dir=runs/compare_corrupted --set=dataset=digits --set=epochs=5
    python -m apps.compare --methods=stl,jtds --seeds=0,1 --output_dir=runs/cmp -- --dataset=digits --epochs=5

Each (method, seed) runs as its own process, `python -m apps.<experiment> --method=M --seed=S
--output_dir=<output_dir>/<M>_seed<S> <passthrough flags>` (so peak memory is per run), with
its output in `<run dir>/compare.log`. A run whose metrics.json already exists is not run
again, so an interrupted comparison resumes where it stopped (delete a run directory to
redo it). Passthrough flags: `--set=name=value` (repeatable, one flag each; the value may
hold commas, e.g. `--set=aux_weights=rotation=0.5,coarse=2`) and anything after `--`.

With several target tasks (seed 004) the primary metric is their mean, and `results.md` adds one
row per target (`results_targets.csv`). Writes `results.md` and `results.csv` in --output_dir: per method, the mean ± SEM (sample
std / sqrt(n); 0 for one run) of the test primary metric over seeds, the difference of
means to STL (in points, x100, for accuracies; raw for RMSE), and the mean wall time and
mean peak memory (metrics.json `wall_seconds`, `peak_rss_mib`) as ratios to STL's.
This module does not import TensorFlow.
"""

import csv
import importlib.util
import json
import math
import os
import shlex
import subprocess
import sys
import time

import numpy as np

NOT_EXPERIMENTS = ("compare", "tune", "plots", "experiment", "flags", "run_dir", "ptl_synthetic")
RESERVED = ("method", "seed", "output_dir")
CSV_FIELDS = ("method", "runs", "seeds", "metric", "mean", "sem", "delta_vs_stl", "delta_scale",
              "wall_seconds", "wall_ratio_vs_stl", "peak_rss_mib", "memory_ratio_vs_stl")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class CompareError(ValueError):
    """A flag or run-directory problem; the message is one sentence."""


# ---------------------------------------------------------------- commands
def passthrough_args(sets=(), extra=()):
    """`--set` values (one `name=value` each) and verbatim args -> a list of `--name=value`."""
    args = []
    for item in sets:
        item = item.strip().lstrip("-")
        if not item:
            continue
        args.append(f"--{item}")
    args.extend(extra)
    for arg in args:
        name = arg.lstrip("-").split("=", 1)[0]
        if name in RESERVED or (name.startswith("no") and name[2:] in RESERVED):
            raise CompareError(f"--{name} is set by apps.compare itself (use --methods, --seeds, --output_dir).")
        if not arg.startswith("-"):
            raise CompareError(f"passthrough argument '{arg}' is not a flag (expected --name=value).")
    return args


def check_experiment(name):
    if name in NOT_EXPERIMENTS or not name.isidentifier() or importlib.util.find_spec(f"apps.{name}") is None:
        raise CompareError(f"--experiment={name} is not an experiment binary under apps/ "
                           "(e.g. train, corrupted_labels, semi_supervised).")


def run_dir(output_dir, method, seed):
    return os.path.join(os.path.abspath(output_dir), f"{method}_seed{seed}")


def for_method(method, passthrough):
    """The passthrough flags that `method` reads (apps.flags.inapplicable: e.g. STL gets no
    --upper_lr and no --aux_weights), so one --set list serves every method of a comparison."""
    import tfaux.strategies
    from apps.flags import inapplicable

    unused = set(inapplicable(method)) if method in tfaux.strategies.METHODS else set()
    names = [arg.lstrip("-").split("=", 1)[0] for arg in passthrough]
    return [arg for arg, name in zip(passthrough, names)
            if name not in unused and not (name.startswith("no") and name[2:] in unused)]


def command(experiment, method, seed, output_dir, passthrough=()):
    return [sys.executable, "-m", f"apps.{experiment}", f"--method={method}", f"--seed={seed}",
            f"--output_dir={run_dir(output_dir, method, seed)}", *for_method(method, passthrough)]


def run_all(experiment, methods, seeds, output_dir, passthrough=(), echo=print):
    """Run every (method, seed) not yet finished, one process at a time.
    Returns the (method, seed) pairs whose process failed."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO_ROOT, env.get("PYTHONPATH")]))
    failed = []
    pairs = [(m, s) for m in methods for s in seeds]
    for i, (method, seed) in enumerate(pairs, 1):
        where = run_dir(output_dir, method, seed)
        cmd = command(experiment, method, seed, output_dir, passthrough)
        text = shlex.join(cmd[1:])  # without the interpreter path
        tag = f"[{i}/{len(pairs)}] {method} seed {seed}"
        if run_status(where) == "diverged":
            echo(f"{tag}: FAILED earlier: training diverged (see {where}/metrics.json); delete the folder to rerun")
            failed.append((method, seed))
            continue
        if os.path.exists(os.path.join(where, "metrics.json")):
            previous = _read(os.path.join(where, "command.txt")).strip()
            note = "" if not previous or previous == text else " (note: it was run with a different command)"
            echo(f"{tag}: done already, reusing {where}{note}")
            continue
        os.makedirs(where, exist_ok=True)
        with open(os.path.join(where, "command.txt"), "w") as f:
            f.write(text + "\n")
        echo(f"{tag}: {text}")
        start = time.time()
        with open(os.path.join(where, "compare.log"), "w") as log:
            code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
        if code != 0 or run_status(where) != "ok":
            tail = _read(os.path.join(where, "compare.log")).strip().splitlines()[-3:]
            echo(f"{tag}: FAILED (exit {code}); last lines of {where}/compare.log:\n  " + "\n  ".join(tail))
            failed.append((method, seed))
        else:
            echo(f"{tag}: finished in {time.time() - start:.0f} s")
    return failed


def run_status(where):
    """"ok", "diverged" or None (no metrics.json) of a run folder; runs that predate the
    status field count as "ok"."""
    try:
        with open(os.path.join(where, "metrics.json")) as f:
            return json.load(f).get("status", "ok")
    except (OSError, ValueError):
        return None


def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


# ---------------------------------------------------------------- aggregation
def collect(output_dir, methods, seeds):
    """{method: [(seed, metrics dict), ...]} for every run directory with a metrics.json."""
    runs = {}
    for method in methods:
        runs[method] = []
        for seed in seeds:
            path = os.path.join(run_dir(output_dir, method, seed), "metrics.json")
            if os.path.exists(path):
                try:
                    with open(path) as f:
                        metrics = json.load(f)
                    if metrics.get("status", "ok") == "diverged":  # a failed run, not a number
                        continue
                    float(metrics["test"]), metrics["primary_metric"]
                except (ValueError, TypeError, KeyError) as e:
                    raise CompareError(f"{path} is not a metrics.json of an experiment run ({e}).") from None
                runs[method].append((seed, metrics))
    return runs


def sem(values):
    """Standard error of the mean: sample std (ddof=1) / sqrt(n); 0 for a single value."""
    values = np.asarray(values, np.float64)
    return float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else 0.0


def delta_scale(metric):
    """Differences are reported in points (x100) for accuracies, raw otherwise (RMSE)."""
    return 100.0 if "accuracy" in metric else 1.0


def summarize(runs, baseline="stl"):
    """One row per method (see CSV_FIELDS) from `collect`'s runs. Raises CompareError if the
    runs disagree on the primary metric."""
    metrics = {m["primary_metric"] for rs in runs.values() for _, m in rs}
    if len(metrics) > 1:
        raise CompareError(f"the runs report different primary metrics {sorted(metrics)}; "
                           "compare one experiment at a time.")
    metric = metrics.pop() if metrics else ""
    scale = delta_scale(metric)
    rows = []
    for method, rs in runs.items():
        tests = [float(m["test"]) for _, m in rs]
        rows.append({
            "method": method, "runs": len(rs), "seeds": " ".join(str(s) for s, _ in rs), "metric": metric,
            "mean": float(np.mean(tests)) if tests else None, "sem": sem(tests) if tests else None,
            "wall_seconds": float(np.mean([m["wall_seconds"] for _, m in rs])) if rs else None,
            "peak_rss_mib": float(np.mean([m["peak_rss_mib"] for _, m in rs])) if rs else None,
            "delta_scale": scale})
    base = next((r for r in rows if r["method"] == baseline and r["runs"]), None)
    for row in rows:
        ok = base is not None and row["runs"] > 0
        row["delta_vs_stl"] = (row["mean"] - base["mean"]) * scale if ok else None
        row["wall_ratio_vs_stl"] = row["wall_seconds"] / base["wall_seconds"] if ok else None
        row["memory_ratio_vs_stl"] = row["peak_rss_mib"] / base["peak_rss_mib"] if ok else None
    return rows


def per_target(runs):
    """With several target tasks: [(target, {method: (mean, sem, runs)})] of each target's test
    metric (metrics.json `test_metrics["<target>_<accuracy|rmse>"]`); [] with one target."""
    targets = next((m.get("targets", []) for rs in runs.values() for _, m in rs), [])
    if len(targets) < 2:
        return []
    table = []
    for target in targets:
        cells = {}
        for method, rs in runs.items():
            values = [float(m["test_metrics"][f"{target}_{m['primary_metric'].replace('primary_', '')}"])
                      for _, m in rs if m.get("targets") == targets]
            if values:
                cells[method] = (float(np.mean(values)), sem(values), len(values))
        table.append((target, cells))
    return table


def target_markdown(table, metric):
    """One row per target task, one column per method: mean ± SEM of its test metric."""
    if not table:
        return ""
    scale = delta_scale(metric)
    digits = 2 if scale == 100.0 else 4
    methods = list(dict.fromkeys(m for _, cells in table for m in cells))
    lines = ["", f"Each of the {len(table)} target tasks (the table above is their mean):", "",
             "| target | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for target, cells in table:
        lines.append(f"| {target} | " + " | ".join(
            f"{cells[m][0] * scale:.{digits}f} ± {cells[m][1] * scale:.{digits}f}" if m in cells else "—"
            for m in methods) + " |")
    return "\n".join(lines) + "\n"


def _title(metric):
    if "accuracy" in metric:
        return "Accuracy %"
    return metric.replace("primary_", "").upper() or "metric"


def markdown(rows, heading):
    """Table-2-style Markdown: one row per method."""
    metric = next((r["metric"] for r in rows if r["metric"]), "")
    scale = delta_scale(metric)
    digits = 2 if scale == 100.0 else 4
    unit = "points" if scale == 100.0 else "raw"
    lines = [f"# {heading}", "",
             f"| Method | {_title(metric)} (mean ± SEM) | Δ vs STL ({unit}) | runs (seeds) | wall time vs STL | "
             "peak memory vs STL |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        if not r["runs"]:
            lines.append(f"| {r['method']} | no finished run | — | 0 | — | — |")
            continue
        value = f"{r['mean'] * scale:.{digits}f} ± {r['sem'] * scale:.{digits}f}"
        delta = "—" if r["delta_vs_stl"] is None else f"{r['delta_vs_stl']:+.{digits}f}"
        wall = (("" if r["wall_ratio_vs_stl"] is None else f"{r['wall_ratio_vs_stl']:.2f}× ")
                + f"({r['wall_seconds']:.1f} s)")
        mem = (("" if r["memory_ratio_vs_stl"] is None else f"{r['memory_ratio_vs_stl']:.2f}× ")
               + f"({r['peak_rss_mib']:.0f} MiB)")
        lines.append(f"| {r['method']} | {value} | {delta} | {r['runs']} ({r['seeds']}) | {wall} | {mem} |")
    lines += ["", f"Test {metric or 'primary metric'} of the best-validation epoch; SEM = sample std / √n "
              "(0 for one run); Δ = difference of means to STL"
              + (" in points (×100)" if scale == 100.0 else "") + "; wall time and peak memory (RSS) are "
              "means over the runs, as ratios to STL's (absolute values in brackets).", ""]
    return "\n".join(lines)


def write_results(rows, output_dir, heading, targets=()):
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "results.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: ("" if r[k] is None else repr(r[k]) if isinstance(r[k], float) else r[k])
                             for k in CSV_FIELDS})
    text = markdown(rows, heading) + target_markdown(targets, next((r["metric"] for r in rows if r["metric"]), ""))
    if targets:
        with open(os.path.join(output_dir, "results_targets.csv"), "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["target", "method", "mean", "sem", "runs"])
            for target, cells in targets:
                for method, (mean, err, n) in cells.items():
                    writer.writerow([target, method, repr(mean), repr(err), n])
    with open(os.path.join(output_dir, "results.md"), "w") as f:
        f.write(text)
    return text


def tabulate(experiment, methods, seeds, output_dir):
    """Aggregate the finished runs under output_dir into results.md / results.csv; returns the rows."""
    runs = collect(output_dir, methods, seeds)
    rows = summarize(runs)
    datasets = sorted({m["dataset"] for rs in runs.values() for _, m in rs})
    heading = (f"apps.{experiment} on {', '.join(datasets) or '?'}: {len(seeds)} seed(s) "
               f"({', '.join(map(str, seeds))})")
    write_results(rows, output_dir, heading, per_target(runs))
    return rows


# ---------------------------------------------------------------- binary
def define_flags():
    from absl import flags
    flags.DEFINE_string("experiment", "train", "Experiment binary under apps/ to run (train, corrupted_labels, "
                        "semi_supervised, image_classification, ...).")
    flags.DEFINE_list("methods", ["stl", "equal", "jtds"], "Methods (--method values) to compare; STL is the "
                      "baseline of the Δ and ratio columns.")
    flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds (--seed values), one run each per method.")
    flags.DEFINE_string("output_dir", "runs/compare", "Where the run directories <method>_seed<seed>/, "
                        "results.md and results.csv go.", allow_override=True)  # apps.flags has one too
    flags.DEFINE_multi_string("set", [], "A flag passed to every run, as name=value (repeatable; the value "
                              "may contain commas). Arguments after `--` are passed as they are too.")
    flags.DEFINE_boolean("tabulate_only", False, "Only aggregate the runs already finished; start none.")


def main(argv):
    from absl import flags
    FLAGS = flags.FLAGS
    try:
        check_experiment(FLAGS.experiment)
        try:
            seeds = [int(s) for s in FLAGS.seeds]
        except ValueError:
            raise CompareError(f"--seeds must be integers, got {','.join(FLAGS.seeds)}.") from None
        methods = [m.strip() for m in FLAGS.methods if m.strip()]
        if not methods or not seeds:
            raise CompareError("--methods and --seeds must each name at least one value.")
        extra = argv[1:]
        passthrough = passthrough_args(FLAGS.set, extra)
        failed = [] if FLAGS.tabulate_only else run_all(FLAGS.experiment, methods, seeds, FLAGS.output_dir,
                                                        passthrough)
        tabulate(FLAGS.experiment, methods, seeds, FLAGS.output_dir)
    except CompareError as e:
        raise SystemExit(f"error: {e}") from None
    print(_read(os.path.join(FLAGS.output_dir, "results.md")))
    print(f"results in {os.path.abspath(FLAGS.output_dir)}/results.md and results.csv")
    if failed:
        raise SystemExit(f"error: {len(failed)} run(s) failed: "
                         + ", ".join(f"{m} seed {s}" for m, s in failed) + " (see their compare.log).")


if __name__ == "__main__":
    from absl import app
    define_flags()
    app.run(main)
