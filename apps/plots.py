"""Figures from one run's outputs (matplotlib, Agg backend, no display needed).

    python -m apps.plots --run_dir=runs/corrupted_labels [--plot_dir=DIR] [--max_tasks=8]

Reads the files apps.train (and every experiment binary) writes, and writes PNGs:

- schedule_evolution.png: weights of the sampled training examples over epochs, one panel
  per task (seed 000, Fig. 4); from schedule_history.npz (scheduler methods). Corrupted
  examples are drawn in red when the run has corrupted labels.
- loss_filter.png: the learned loss filter sigmoid(a_k * lhat + b_k), lhat in [-3, 3], per
  task at the final epoch (first epoch dashed) (seed 000, Fig. 6); JTDS only.
- corrupted_vs_clean.png: histogram of the final primary weights of the corrupted and of the
  clean training examples (seed 000, Fig. 3); from schedule.npz, when labels were corrupted.
- loss_curves.png: train objective, per-task train losses, dev and validation loss, and the
  primary metric, per epoch; from metrics.json's history.

A figure whose data the run does not have is skipped, with the reason printed.
This module does not import TensorFlow.
"""

import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402

FIGURES = ("schedule_evolution", "loss_filter", "corrupted_vs_clean", "loss_curves")


class Skip(Exception):
    """A figure cannot be drawn from this run; the message says why."""


def _load_npz(run_dir, name):
    path = os.path.join(run_dir, name)
    if not os.path.exists(path):
        raise Skip(f"{name} is absent (only scheduler methods write it)")
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def _save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _grid(n):
    cols = min(n, 4)
    return (n + cols - 1) // cols, cols


def schedule_evolution(run_dir, path, max_tasks=8):
    h = _load_npz(run_dir, "schedule_history.npz")
    weights = h["weights"]  # [E, S, T]
    if weights.size == 0:
        raise Skip("schedule_history.npz holds no epoch")
    epochs = h["epochs"]
    tasks = [str(t) for t in h["tasks"]][:max_tasks]
    corrupted = h.get("corrupted")
    bad = corrupted if corrupted is not None and corrupted.any() else np.zeros(weights.shape[1], bool)
    rows, cols = _grid(len(tasks))
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.9 * rows), squeeze=False)
    for k, task in enumerate(tasks):
        ax = axes[k // cols][k % cols]
        for s in range(weights.shape[1]):
            red = k == 0 and bad[s]
            ax.plot(epochs, weights[:, s, k], marker=".", lw=0.7, alpha=0.55,
                    color="tab:red" if red else "tab:blue")
        ax.plot(epochs, weights[:, :, k].mean(1), color="black", lw=2, label="mean")
        ax.set_title(f"task {k}: {task}" + (" (primary)" if k == 0 else ""), fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("weight")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for k in range(len(tasks), rows * cols):
        axes[k // cols][k % cols].axis("off")
    note = ", red: corrupted primary label" if bad.any() else ""
    fig.suptitle(f"Schedule of {weights.shape[1]} sampled training examples{note}", fontsize=10)
    return _save(fig, path)


def loss_filter(run_dir, path, max_tasks=8):
    h = _load_npz(run_dir, "schedule_history.npz")
    if "loss_scale" not in h or len(h["loss_scale"]) == 0:
        raise Skip("the run's scheduler has no loss filter (JTDS with its loss term only)")
    scale, shift = h["loss_scale"], h["loss_shift"]  # [E, T]
    tasks = [str(t) for t in h["tasks"]][:max_tasks]
    lhat = np.linspace(-3.0, 3.0, 121)
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for k, task in enumerate(tasks):
        line, = ax.plot(lhat, 1.0 / (1.0 + np.exp(-(scale[-1, k] * lhat + shift[-1, k]))),
                        label=f"{task}: a={scale[-1, k]:.3g}, b={shift[-1, k]:.3g}")
        if len(scale) > 1:
            ax.plot(lhat, 1.0 / (1.0 + np.exp(-(scale[0, k] * lhat + shift[0, k]))), ls="--", lw=0.8,
                    color=line.get_color())
    ax.set_xlabel("normalized loss  l̂")
    ax.set_ylabel("σ(a·l̂ + b)")
    epochs = h["epochs"]
    ax.set_title(f"Loss filter at epoch {epochs[-1]}" + (f" (dashed: epoch {epochs[0]})" if len(scale) > 1 else ""),
                 fontsize=10)
    ax.legend(fontsize=8)
    return _save(fig, path)


def corrupted_vs_clean(run_dir, path):
    s = _load_npz(run_dir, "schedule.npz")
    corrupted = s.get("corrupted")
    if corrupted is None or not corrupted.any():
        raise Skip("no training label was corrupted in this run")
    primary = s["weights"][:, 0]
    labelled = s["labelled"].astype(bool) if "labelled" in s else np.ones_like(corrupted, bool)
    bad, good = primary[corrupted & labelled], primary[~corrupted & labelled]
    low, high = float(primary[labelled].min()), float(primary[labelled].max())
    bins = np.linspace(low, high if high > low else low + 1e-6, 41)
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.hist(good, bins=bins, alpha=0.6, color="tab:blue", label=f"clean (n={len(good)}, mean {good.mean():.3g})")
    ax.hist(bad, bins=bins, alpha=0.6, color="tab:red", label=f"corrupted (n={len(bad)}, mean {bad.mean():.3g})")
    ax.set_xlabel("final primary-task weight")
    ax.set_ylabel("training examples")
    ax.set_title("Learned weights of corrupted vs clean examples", fontsize=10)
    ax.legend(fontsize=8)
    return _save(fig, path)


def loss_curves(run_dir, path):
    metrics_path = os.path.join(run_dir, "metrics.json")
    if not os.path.exists(metrics_path):
        raise Skip("metrics.json is absent")
    with open(metrics_path) as f:
        metrics = json.load(f)
    hist = metrics.get("history") or {}
    if not hist.get("loss"):
        raise Skip("metrics.json has no training history")
    epochs = np.arange(1, len(hist["loss"]) + 1)
    task_losses = sorted(k for k in hist if k.endswith("_loss") and not k.startswith("val_") and k != "dev_loss")
    metric = metrics.get("primary_metric", "")
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax.plot(epochs, hist["loss"], marker="o", color="black", label="train objective L_t")
    for key in task_losses:
        ax.plot(epochs, hist[key], marker=".", ls="--", label=f"train {key}")
    if "dev_loss" in hist:
        ax.plot(epochs, hist["dev_loss"], marker="s", label="dev loss (primary, last upper step)")
    if "val_loss" in hist:
        ax.plot(epochs, hist["val_loss"], marker="^", label="validation loss (primary)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend(fontsize=7)
    for key, label in ((metric, "train"), (f"val_{metric}", "validation")):
        if metric and key in hist:
            bx.plot(epochs, hist[key], marker="o", label=f"{label} {metric}")
    if metrics.get("best_epoch"):
        bx.axvline(metrics["best_epoch"], color="grey", ls=":", label="selected epoch")
    bx.set_xlabel("epoch")
    for axis in (ax, bx):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    bx.set_ylabel(metric or "metric")
    bx.legend(fontsize=7)
    fig.suptitle(f"{metrics.get('method', '?')} on {metrics.get('dataset', '?')}", fontsize=10)
    return _save(fig, path)


def make_plots(run_dir, plot_dir=None, max_tasks=8, echo=print):
    """Draw every figure it can; returns {figure name: PNG path or 'skipped: reason'}."""
    if not os.path.isdir(run_dir):
        raise FileNotFoundError(f"--run_dir {run_dir} is not a directory.")
    plot_dir = plot_dir or run_dir
    os.makedirs(plot_dir, exist_ok=True)
    makers = {"schedule_evolution": lambda p: schedule_evolution(run_dir, p, max_tasks),
              "loss_filter": lambda p: loss_filter(run_dir, p, max_tasks),
              "corrupted_vs_clean": lambda p: corrupted_vs_clean(run_dir, p),
              "loss_curves": lambda p: loss_curves(run_dir, p)}
    done = {}
    for name in FIGURES:
        try:
            done[name] = makers[name](os.path.join(plot_dir, f"{name}.png"))
            echo(f"wrote {done[name]}")
        except Skip as reason:
            done[name] = f"skipped: {reason}"
            echo(f"skipped {name}.png: {reason}")
    return done


# ---------------------------------------------------------------- binary
def define_flags():
    from absl import flags
    flags.DEFINE_string("run_dir", None, "Output directory of one run (its --output_dir).", required=True)
    flags.DEFINE_string("plot_dir", None, "Where the PNGs go (default: --run_dir).")
    flags.DEFINE_integer("max_tasks", 8, "Draw at most this many tasks (primary first).", lower_bound=1)


def main(argv):
    from absl import app, flags
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    FLAGS = flags.FLAGS
    try:
        make_plots(FLAGS.run_dir, FLAGS.plot_dir, FLAGS.max_tasks)
    except FileNotFoundError as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    from absl import app
    define_flags()
    app.run(main)
