"""Quality on real data: methods x seeds on the settings of the benchmark issue, one command.

    python -m benchmarks.quality --data_root=../shared/data --output_dir=runs/quality

Settings (each one `apps.compare` call, so an interrupted benchmark resumes run by run):
  mnist_noise  MNIST (the 10,000 t10k images split train/dev/val/test), rotation auxiliary,
               40% uniformly corrupted primary labels (dev clean). Targets: JTDS test accuracy
               >= STL + 4 points; corrupted-vs-clean AUC of JTDS primary weights >= 0.95.
  mnist_noise_30  the same for 30 epochs. Targets (JTDS and its stable variant jtds_normalized):
               AUC >= 0.95 and test accuracy within 0.5 points of the same seed's 8-epoch run.
  mnist_semi   the same with 10% of primary labels kept. Targets: JTDS >= STL + 1 point and
               >= Equal.
  ml100k       MovieLens-100K rating (primary) + CTR, AutoInt. Target: JTDS RMSE <= STL RMSE.
  mnist_arml   ARML (seed 003): 2% of primary labels, rotation + Exemplar-MT auxiliaries, 10 epochs,
               batch 64; STL, ARML and Uniform (S4L: every auxiliary weight 1, the main loss from the
               labelled stream as ARML's).
               Targets: ARML >= Uniform and >= STL.
  mnist_labels AuxiLearn's learned auxiliary labels (seed 002, Sec. 5.4): 5% of the training set
               (--label_fraction=0.05 --drop_unlabelled, 320 images), no given auxiliary, 40
               epochs, batch 64; STL, MAXL-F, MAXL and AuxiLearn. Target (the paper's order):
               AuxiLearn >= MAXL-F >= STL.
  mnist_dtg    DTG-AuxL (seed 001) against a deliberately harmful auxiliary: 5% of the training
               set as in mnist_labels, no rotation, one auxiliary task of 10-class labels drawn
               uniformly at random per example (--random_auxiliary=10), 20 epochs, batch 64; STL,
               Equal and DTG-AuxL. Target: DTG-AuxL >= STL where Equal < STL (the report says
               whether the random auxiliary did hurt Equal, and whether DTG-AuxL >= STL).
  ml100k_dtg   STL, Equal and DTG-AuxL on MovieLens-100K as in ml100k (rating regression primary,
               its own CTR auxiliary, AutoInt). Target: DTG-AuxL RMSE <= STL RMSE (and whether
               Equal is hurt). Not in the default --settings (25 minutes on 2 CPU cores).

Writes <output_dir>/<setting>/results.{md,csv} (apps.compare's table: mean +- SEM over seeds,
delta vs STL, time and memory ratios) and <output_dir>/quality.md: those tables, the AUC of
every bi-level method's primary weights (mnist_noise) and each target, met or missed.
It imports TensorFlow only to list the method table (--methods=all, the default).
"""

import argparse
import csv
import json
import math
import os
import subprocess
import sys

import numpy as np

SETTINGS = {
    "mnist_noise": dict(experiment="corrupted_labels", data="mnist",
                        flags=["dataset=mnist", "noise_rate=0.4"]),
    "mnist_noise_30": dict(experiment="corrupted_labels", data="mnist", epochs=30,
                           flags=["dataset=mnist", "noise_rate=0.4"]),
    "mnist_semi": dict(experiment="semi_supervised", data="mnist",
                       flags=["dataset=mnist", "label_fraction=0.1"]),
    "ml100k": dict(experiment="recommendation", data="ml-100k",
                   flags=["dataset=movielens_100k", "encoder=autoint"]),
    "mnist_arml": dict(experiment="semi_supervised", data="mnist", epochs=10, batch_size=64,
                       methods="stl,uniform,arml", flags=["dataset=mnist", "label_fraction=0.02", "exemplar=true"]),
    "mnist_labels": dict(experiment="semi_supervised", data="mnist", epochs=40, batch_size=64,
                         methods="stl,maxl_f,maxl,auxilearn_labels",
                         flags=["dataset=mnist", "label_fraction=0.05", "drop_unlabelled=true", "rotation=false"]),
    "mnist_dtg": dict(experiment="semi_supervised", data="mnist", epochs=20, batch_size=64,
                      methods="stl,equal,dtg_auxl",
                      flags=["dataset=mnist", "label_fraction=0.05", "drop_unlabelled=true", "rotation=false",
                             "random_auxiliary=10"]),
    "ml100k_dtg": dict(experiment="recommendation", data="ml-100k", methods="stl,equal,dtg_auxl",
                       flags=["dataset=movielens_100k", "encoder=autoint"]),
}
BILEVEL = ("jtds", "jtds_normalized", "njtds", "auxilearn")
# One configuration for every method (STL and Equal ignore the upper-level flags): an upper
# step every 5 lower steps (a short run has few steps); each bi-level method's upper optimizer,
# learning rate, clip norm and weight decay are its reference defaults (tfaux.upper).
COMMON = ["upper_interval=5"]


def auc(scores, positive):
    """P(score of a positive > score of a negative), ties counting 1/2 (Mann-Whitney U)."""
    scores, positive = np.asarray(scores, np.float64), np.asarray(positive, bool)
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):  # average ranks over ties
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    n_pos, n_neg = positive.sum(), (~positive).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def clean_vs_corrupted_auc(schedule_path):
    """AUC of clean over corrupted examples by their primary-task weight (1 = perfect separation)."""
    s = np.load(schedule_path)
    labelled = s["labelled"].astype(bool)
    weights, corrupted = s["weights"][labelled, 0], s["corrupted"][labelled].astype(bool)
    return auc(weights, ~corrupted)


def epoch_table(out, methods, seed):
    """Per-epoch lines of each method's run with `seed`: validation accuracy (history.csv), mean
    primary and rotation weights, and the clean-vs-corrupted AUC of the primary weights: over all
    training examples where the run recorded it, else over schedule_history.npz's 64 tracked ones."""
    lines = [f"Per epoch, seed {seed} (val = validation accuracy; w = mean primary / rotation weight; "
             "AUC over all training examples, or * over the 64 tracked ones):", "",
             "| epoch | " + " | ".join(f"{m} val | {m} w | {m} AUC" for m in methods) + " |",
             "|---" * (1 + 3 * len(methods)) + "|"]
    columns = []
    for method in methods:
        run = os.path.join(out, f"{method}_seed{seed}")
        rows, aucs = [], {}
        if os.path.exists(os.path.join(run, "history.csv")):
            with open(os.path.join(run, "history.csv")) as f:
                rows = list(csv.DictReader(f))
        if os.path.exists(os.path.join(run, "schedule_history.npz")):
            h = np.load(os.path.join(run, "schedule_history.npz"))
            full = h["primary_auc"] if "primary_auc" in h else None
            for i, e in enumerate(h["epochs"]):
                if full is not None and not math.isnan(full[i]):
                    aucs[int(e)] = f"{full[i]:.3f}"
                else:
                    aucs[int(e)] = f"{auc(h['weights'][i, :, 0], ~h['corrupted'].astype(bool)):.3f}*"
        columns.append({int(r["epoch"]) + 1: (f"{float(r['val_primary_accuracy']):.4f}",
                                              (f"{float(r['label_weight']):.3g} / {float(r['rotation_weight']):.3g}"
                                               if "label_weight" in r else ""),
                                              aucs.get(int(r["epoch"]) + 1, "")) for r in rows})
    for epoch in sorted(set().union(*columns)) if columns else []:
        cells = [" | ".join(c.get(epoch, ("", "", ""))) for c in columns]
        lines.append(f"| {epoch} | " + " | ".join(cells) + " |")
    return lines + [""]


def read_table(path):
    with open(path) as f:
        return {row["method"]: row for row in csv.DictReader(f)}


def mean_sem(values):
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return float("nan"), float("nan")
    sem = float(np.std(values, ddof=1) / math.sqrt(len(values))) if len(values) > 1 else 0.0
    return float(np.mean(values)), sem


def run_setting(name, args):
    spec = SETTINGS[name]
    out = os.path.join(args.output_dir, name)
    cmd = [sys.executable, "-m", "apps.compare", f"--experiment={spec['experiment']}",
           f"--methods={spec.get('methods', args.methods)}", f"--seeds={args.seeds}", f"--output_dir={out}",
           f"--set=data_dir={os.path.join(args.data_root, spec['data'])}", "--set=verbose=2"]
    cmd += [f"--set={f}" for f in COMMON + spec["flags"]]
    if name.startswith("mnist"):
        cmd += [f"--set=epochs={spec.get('epochs', args.mnist_epochs)}",
                f"--set=batch_size={spec.get('batch_size', args.mnist_batch_size)}"]
    else:
        cmd += [f"--set=epochs={args.ml_epochs}"]
    cmd += [f"--set={f}" for f in args.set]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return out


def report(args):
    lines = ["# Quality on real data", "",
             f"Command: `python -m benchmarks.quality {' '.join(sys.argv[1:])}`", ""]
    for name in args.settings.split(","):
        out = os.path.join(args.output_dir, name)
        table = os.path.join(out, "results.md")
        if not os.path.exists(table):
            lines += [f"## {name}", "", "not run", ""]
            continue
        with open(table) as f:
            lines += [f"## {name}", "", f.read().strip(), ""]
        rows = read_table(os.path.join(out, "results.csv"))
        if name.startswith("mnist_noise"):
            for method in BILEVEL:
                values = []
                for seed in args.seeds.split(","):
                    path = os.path.join(out, f"{method}_seed{seed}", "schedule.npz")
                    if os.path.exists(path):
                        values.append(clean_vs_corrupted_auc(path))
                if values:
                    m, s = mean_sem(values)
                    lines.append(f"- {method}: clean-vs-corrupted AUC of primary weights {m:.3f} +- {s:.3f} "
                                 f"(seeds: {', '.join(f'{v:.3f}' for v in values)})")
            lines.append("")
        lines += targets(name, rows, out, args) + [""]
        if name == "mnist_noise_30":
            lines += epoch_table(out, [m for m in ("stl", "jtds", "jtds_normalized") if m in rows],
                                 args.seeds.split(",")[0])
    text = "\n".join(lines)
    with open(os.path.join(args.output_dir, "quality.md"), "w") as f:
        f.write(text + "\n")
    print(text)


def _mean(rows, method):
    value = rows.get(method, {}).get("mean")
    return float(value) if value else float("nan")  # "" when the method has no finished run


def _mean_auc(out, method, args):
    paths = [os.path.join(out, f"{method}_seed{s}", "schedule.npz") for s in args.seeds.split(",")]
    return mean_sem([clean_vs_corrupted_auc(p) for p in paths if os.path.exists(p)])[0]


def _test(out, method, seed):
    """Test metric of one finished run, NaN when it has not finished."""
    path = os.path.join(out, f"{method}_seed{seed}", "metrics.json")
    if not os.path.exists(path):
        return float("nan")
    with open(path) as f:
        return float(json.load(f)["test"])


def targets(name, rows, out, args):
    stl, jtds, equal = _mean(rows, "stl"), _mean(rows, "jtds"), _mean(rows, "equal")
    check = lambda ok: "met" if ok else "MISSED"  # noqa: E731
    if name == "mnist_noise":
        gap = 100 * (jtds - stl)
        a = _mean_auc(out, "jtds", args)
        return [f"- target JTDS >= STL + 4 points: {gap:+.2f} points, {check(gap >= 4)}",
                f"- target JTDS AUC >= 0.95: {a:.3f}, {check(a >= 0.95)}"]
    if name == "mnist_noise_30":
        lines = []
        for method in ("jtds", "jtds_normalized"):
            short = os.path.join(args.output_dir, "mnist_noise")
            drift = [100 * (_test(out, method, seed) - _test(short, method, seed)) for seed in args.seeds.split(",")]
            drift = [d for d in drift if not math.isnan(d)]
            a = _mean_auc(out, method, args)
            mean = mean_sem(drift)[0]
            ok = a >= 0.95 and abs(mean) <= 0.5
            lines.append(f"- target {method} at 30 epochs: AUC >= 0.95 ({a:.3f}) and test accuracy within 0.5 points "
                         f"of the same seeds' 8-epoch runs ({mean:+.2f} points over {len(drift)} seed(s)): {check(ok)}")
        return lines
    if name == "mnist_arml":
        arml, uniform = _mean(rows, "arml"), _mean(rows, "uniform")
        return [f"- target ARML >= Uniform: {100 * (arml - uniform):+.2f} points, {check(arml >= uniform)}",
                f"- target ARML >= STL: {100 * (arml - stl):+.2f} points, {check(arml >= stl)}"]
    if name == "mnist_labels":
        learned, frozen = _mean(rows, "auxilearn_labels"), _mean(rows, "maxl_f")
        return [f"- target AuxiLearn >= MAXL-F: {100 * (learned - frozen):+.2f} points, {check(learned >= frozen)}",
                f"- target MAXL-F >= STL: {100 * (frozen - stl):+.2f} points, {check(frozen >= stl)}"]
    if name in ("mnist_dtg", "ml100k_dtg"):
        return dtg_targets(name, stl, equal, _mean(rows, "dtg_auxl"))
    if name == "mnist_semi":
        return [f"- target JTDS >= STL + 1 point: {100 * (jtds - stl):+.2f} points, {check(jtds - stl >= 0.01)}",
                f"- target JTDS >= Equal: {100 * (jtds - equal):+.2f} points, {check(jtds >= equal)}"]
    return [f"- target JTDS RMSE <= STL RMSE: {jtds:.4f} vs {stl:.4f}, {check(jtds <= stl)}"]


def dtg_targets(name, stl, equal, dtg):
    """Report lines of mnist_dtg (accuracy: higher is better) and ml100k_dtg (RMSE: lower is
    better): whether the random auxiliary hurt Equal, and the target DTG-AuxL no worse than STL."""
    check = lambda ok: "met" if ok else "MISSED"  # noqa: E731
    if name == "mnist_dtg":
        hurt, ok = equal < stl, dtg >= stl
        lines = [f"- the given auxiliary hurts Equal (Equal < STL): {100 * (equal - stl):+.2f} points, "
                 f"{'yes' if hurt else 'no'}",
                 f"- target DTG-AuxL >= STL: {100 * (dtg - stl):+.2f} points, {check(ok)}"]
    else:
        hurt, ok = equal > stl, dtg <= stl
        lines = [f"- the given auxiliary hurts Equal (Equal RMSE > STL RMSE): {equal:.4f} vs {stl:.4f}, "
                 f"{'yes' if hurt else 'no'}",
                 f"- target DTG-AuxL RMSE <= STL RMSE: {dtg:.4f} vs {stl:.4f}, {check(ok)}"]
    if not hurt:
        lines[-1] += " (Equal was not hurt, so this run does not test the target's condition)"
    return lines


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data_root", default="../shared/data", help="Folder holding mnist/ and ml-100k/.")
    p.add_argument("--output_dir", default="runs/quality", help="Runs go to <output_dir>/<setting>/.")
    p.add_argument("--settings", help="Comma-separated settings to run.",
                   default="mnist_noise,mnist_noise_30,ml100k,mnist_semi,mnist_arml,mnist_labels,mnist_dtg")
    p.add_argument("--methods", default="all",
                   help="Comma-separated --method values, or all (every method of tfaux.strategies.METHODS).")
    p.add_argument("--seeds", default="0,1,2", help="Comma-separated seeds, one run each per method.")
    p.add_argument("--mnist_epochs", type=int, default=8, help="Epochs of the MNIST runs.")
    p.add_argument("--mnist_batch_size", type=int, default=128, help="Batch size of the MNIST runs.")
    p.add_argument("--ml_epochs", type=int, default=10, help="Epochs of the MovieLens runs.")
    p.add_argument("--set", action="append", default=[], help="Extra name=value flag for every run.")
    p.add_argument("--report_only", action="store_true", help="Only tabulate finished runs.")
    args = p.parse_args()
    if args.methods == "all":
        from benchmarks.cost import all_methods
        args.methods = ",".join(all_methods())
    unknown = sorted(set(args.settings.split(",")) - set(SETTINGS))
    if unknown:
        p.error(f"--settings names unknown settings {unknown}; known: {sorted(SETTINGS)}.")
    for name in args.settings.split(","):
        folder = os.path.join(args.data_root, SETTINGS[name]["data"])
        if not os.path.isdir(folder):
            p.error(f"--data_root has no {SETTINGS[name]['data']}/ folder (looked for {folder}).")
    if not args.report_only:
        for name in args.settings.split(","):
            run_setting(name, args)
    report(args)


if __name__ == "__main__":
    main()
