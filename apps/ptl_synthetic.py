"""The synthetic two-objective experiment of seed 004 (Song et al. 2021, Sec. 5.1, Eq. 17, Fig. 3).

    python -m apps.ptl_synthetic [--output_dir=runs/ptl_synthetic] [--dim=20] [--starts=20]
        [--steps=200] [--lr=0.25] [--c1_values=0,0.17,0.4,0.5,0.6,0.7,1] [--c2_values=0,0.5,1] [--seed=0]

About 30 s on two CPU cores with the defaults (Pareto-MTL's QPs take most of it).

Problem (Lin et al. 2019, Pareto-MTL; seed 004, Eq. 17), x in R^n, a = (1/sqrt(n), ..., 1/sqrt(n)):

    l1(x) = 1 - exp(-||x - a||^2)   (the target task),
    l2(x) = 1 - exp(-||x + a||^2)   (the privileged task),
    grad l1 = 2 (x - a) exp(-||x - a||^2),   grad l2 = 2 (x + a) exp(-||x + a||^2)   (numpy).

Its Pareto set is the segment x = t a, t in [-1, 1] (||a|| = 1), so the Pareto front is
(l1, l2) = (1 - exp(-(1 - t)^2), 1 - exp(-(1 + t)^2)), a concave curve from (0.98, 0) to
(0, 0.98). Every method starts from the same --starts points x0 ~ U(-r, r)^n (r = --init_range,
default 0.6: the box of the Pareto-MTL / EPO toy code, github.com/dbmptr/EPOSearch, for n = 20;
then ||x0 -/+ a||^2 is about 3.4, both losses start near 0.97 and the projection t of x0 on the
front's line has a standard deviation of about 0.35), and takes --steps plain gradient steps
x <- x - lr d, with the direction d of:

- Lin-Scalar: d = w g1 + (1 - w) g2 for each w of --scalar_weights (numpy);
- MOOMTL (MGDA, Sener & Koltun 2018): d = the min-norm element of {g1, g2}'s convex hull,
  tfaux.solvers.min_norm_combination;
- Pareto-MTL (Lin et al. 2019): d = w1 g1 + w2 g2 with w from
  tfaux.strategies.pareto_mtl.pareto_mtl_weights (the strategy's own weights) for each of the
  --num_preferences preference vectors u_p = (cos, sin)(p pi / (2 (P - 1))) (the strategy's and
  the reference's); stage 1 (feasible initial point) may run for the first
  --pmtl_warmup_fraction of the steps and ends for good at the first step with no active
  constraint, as in the strategy. Default 0.5: with the reference toy's 20 % (and these starts,
  whose gradients are small, |g| ~ 0.1) stage 1 ends before many starts of u_0 and u_4 are
  feasible, and stage 2 then stops them at the first Pareto point it meets, outside their
  sub-region (defaults otherwise: 8 and 14 of 20 starts end in u_0's and u_4's sub-region with
  0.2, 17 and 20 with 0.5);
- PTL (seed 004): d from tfaux.solvers.privileged_combination(g, targets=[True, False], c1, c2)
  for every (C1, C2) of --c1_values x --c2_values. With constraint (10) of Eq. 12 the direction
  depends on C1 only (see tfaux.solvers.privileged_min_norm): the C2 grid gives identical
  points, which the plot's legend and summary.md state, with the largest difference measured.
  C1 = 0 is gradient descent on l1 alone; C1 >= 1 is MOOMTL. On the front x = t a the min-norm
  weight of l2 is a2(t) = |g1| / (|g1| + |g2|), which rises from 0.26 (t = -0.7) to 0.74
  (t = 0.7) and falls to 0 at t = 1 (l2's gradient vanishes near l1's optimum); PTL moves a
  point toward l1's optimum while a2 > C1 and stops where a2 = C1 near t = 1, so C1 < 0.26
  sends every start there (l1 < 1e-3) and C1 in (0.26, 0.74) only the starts that MOOMTL would
  leave where a2 > C1. Hence the default grid {0, 0.17 (the PTL strategy's default), 0.4, 0.5,
  0.6, 0.7, 1}.
- Lin-Scalar only finds the two ends of this concave front (the middle of it is a maximum of
  w l1 + (1 - w) l2 along it), MOOMTL stops near where each start meets the front.

Outputs in --output_dir:
- results.json: the configuration, the starts, and per method and setting the final (l1, l2)
  of every start and its distance to the Pareto set;
- pareto_front.png: four panels as Fig. 3 (Lin-Scalar, MOOMTL, Pareto-MTL, PTL), x-axis l1
  (target), y-axis l2 (privileged), the true front drawn as a reference curve;
- summary.md: per method and setting the mean final l1, l2 and distance to the Pareto set.

Not an experiment binary of apps.compare (no --method flag). Flags are defined only when run
as a program, so tests may import the functions.
"""

import json
import math
import os
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from tfaux import solvers  # noqa: E402
from tfaux.strategies import pareto_mtl  # noqa: E402

FLAGS = flags.FLAGS
DEFAULTS = dict(output_dir="runs/ptl_synthetic", dim=20, starts=20, steps=200, lr=0.25,
                c1_values=("0", "0.17", "0.4", "0.5", "0.6", "0.7", "1"), c2_values=("0", "0.5", "1"),
                scalar_weights=("0", "0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9", "1"),
                num_preferences=5, init_range=0.6, pmtl_warmup_fraction=0.5, seed=0, constraint10=True)
# FISTA iterations of min_norm_element in Pareto-MTL's weights (K > 2 rows): its active-set
# refinement then solves the KKT system on the support exactly, so 100 gives the same weights as
# the default 5000 (max difference < 1e-12 measured on this problem) but stays fast where the
# min-norm point is 0 (a Pareto-stationary x), which the certified stop reaches only at 5000.
PMTL_SOLVER_ITERATIONS = 100
METHODS = ("lin_scalar", "moomtl", "pareto_mtl", "ptl")
TITLES = {"lin_scalar": "(a) Lin-Scalar", "moomtl": "(b) MOOMTL", "pareto_mtl": "(c) Pareto-MTL", "ptl": "(d) PTL"}


# ---------------------------------------------------------------- the problem (Eq. 17)
def eq17(x):
    """Losses [..., 2] and gradients [..., 2, n] of Eq. 17 at x [..., n] (numpy, float64)."""
    x = np.asarray(x, dtype="float64")
    a = 1.0 / math.sqrt(x.shape[-1])
    losses, grads = [], []
    for sign in (1.0, -1.0):  # l1: centre +a, l2: centre -a
        r = x - sign * a
        e = np.exp(-np.sum(r * r, axis=-1))
        losses.append(1.0 - e)
        grads.append(2.0 * r * e[..., None])
    return np.stack(losses, -1), np.stack(grads, -2)


def pareto_front(num=201):
    """[num, 2] points (l1, l2) of the true front, x = t a for t in [-1, 1] (from l1 = 0.98 to 0)."""
    t = np.linspace(-1.0, 1.0, num)
    return np.stack([1.0 - np.exp(-(1.0 - t) ** 2), 1.0 - np.exp(-(1.0 + t) ** 2)], 1)


def distance_to_pareto_set(x):
    """Euclidean distance of x [..., n] to the Pareto set {t a : t in [-1, 1]}, a = 1/sqrt(n)."""
    x = np.asarray(x, dtype="float64")
    unit = np.full(x.shape[-1], 1.0 / math.sqrt(x.shape[-1]))  # = a, of length 1
    t = np.clip(x @ unit, -1.0, 1.0)
    return np.linalg.norm(x - t[..., None] * unit, axis=-1)


def starting_points(starts, dim, init_range, seed):
    return np.random.default_rng(seed).uniform(-init_range, init_range, (starts, dim))


# ---------------------------------------------------------------- directions
def lin_scalar_direction(w):
    def direction(step, losses, grads):
        return w * grads[:, 0] + (1.0 - w) * grads[:, 1]
    return direction


def _batched(fn, *specs):
    """fn over the leading (start) axis of its tensor arguments, in one graph call per step."""
    sig = [tf.TensorSpec([None, *s.shape], s.dtype) for s in specs]

    @tf.function(input_signature=sig, autograph=False)
    def call(*args):
        return tf.map_fn(lambda a: fn(*a), args, fn_output_signature=tf.float64)
    return call


def moomtl_direction():
    call = _batched(lambda g: solvers.min_norm_combination(g)[1], tf.TensorSpec([2, None], tf.float64))

    def direction(step, losses, grads):
        return call(tf.constant(grads)).numpy()
    return direction


def ptl_direction(c1, c2, constraint10=True):
    call = _batched(lambda g: solvers.privileged_combination(g, [True, False], c1, c2, constraint10=constraint10)[1],
                    tf.TensorSpec([2, None], tf.float64))

    def direction(step, losses, grads):
        return call(tf.constant(grads)).numpy()
    return direction


class ParetoMTLDirection:
    """Pareto-MTL for preference p: the strategy's weights (pareto_mtl_weights) on the raw
    gradients; stage 1 allowed while step < warmup_steps and this start is not yet feasible
    (no active constraint at a step's losses), as ParetoMTL.in_warmup / after_lower_step."""

    def __init__(self, preference_index, preferences, warmup_steps, starts):
        self.preferences = tf.constant(preferences, tf.float64)
        self.preference_index = preference_index
        self.warmup_steps = warmup_steps
        self.feasible = np.zeros(starts, bool)
        p = preference_index
        self.weights = _batched(
            lambda gram, losses, warmup: pareto_mtl.pareto_mtl_weights(gram, losses, p, self.preferences, warmup,
                                                                       iterations=PMTL_SOLVER_ITERATIONS),
            tf.TensorSpec([2, 2], tf.float64), tf.TensorSpec([2], tf.float64), tf.TensorSpec([], tf.bool))
        self.active = _batched(
            lambda losses: tf.cast(tf.reduce_any(pareto_mtl.active_constraints(losses, self.preferences, p)),
                                   tf.float64),
            tf.TensorSpec([2], tf.float64))

    def __call__(self, step, losses, grads):
        gram = np.einsum("skd,sld->skl", grads, grads)
        warmup = np.logical_and(step < self.warmup_steps, np.logical_not(self.feasible))
        w = self.weights(tf.constant(gram), tf.constant(losses), tf.constant(warmup)).numpy()
        self.feasible |= self.active(tf.constant(losses)).numpy() < 0.5
        return np.einsum("sk,skd->sd", w, grads)


def descend(x0, direction, steps, lr):
    """steps of x <- x - lr d(step, losses, grads) from every start x0 [S, n]; the final x."""
    x = np.array(x0, dtype="float64")
    for step in range(steps):
        losses, grads = eq17(x)
        x = x - lr * direction(step, losses, grads)
    return x


# ---------------------------------------------------------------- the experiment
def _entry(x, **setting):
    losses, _ = eq17(x)
    return {**setting, "final_losses": losses.tolist(), "distance_to_pareto_set": distance_to_pareto_set(x).tolist(),
            "mean_l1": float(losses[:, 0].mean()), "mean_l2": float(losses[:, 1].mean())}


def run(output_dir, dim, starts, steps, lr, c1_values, c2_values, scalar_weights, num_preferences=5,
        init_range=0.6, pmtl_warmup_fraction=0.2, seed=0, log=print, constraint10=True):
    """Run every method and setting, write results.json, pareto_front.png and summary.md in
    output_dir; returns the results dict."""
    began = time.time()
    x0 = starting_points(starts, dim, init_range, seed)
    results = {"problem": "seed 004 Eq. 17: l1 = 1 - exp(-||x - 1/sqrt(n)||^2) (target), "
                          "l2 = 1 - exp(-||x + 1/sqrt(n)||^2) (privileged)",
               "config": dict(dim=dim, starts=starts, steps=steps, lr=lr, c1_values=list(c1_values),
                              c2_values=list(c2_values), scalar_weights=list(scalar_weights),
                              num_preferences=num_preferences, init_range=init_range,
                              pmtl_warmup_fraction=pmtl_warmup_fraction, seed=seed, constraint10=constraint10),
               "starts": x0.tolist(), "initial_losses": eq17(x0)[0].tolist(),
               "methods": {m: [] for m in METHODS}}
    methods = results["methods"]
    for w in scalar_weights:
        methods["lin_scalar"].append(_entry(descend(x0, lin_scalar_direction(w), steps, lr), w=w))
    log(f"lin_scalar: {len(scalar_weights)} weights done ({time.time() - began:.1f} s)")
    methods["moomtl"].append(_entry(descend(x0, moomtl_direction(), steps, lr)))
    log(f"moomtl done ({time.time() - began:.1f} s)")
    preferences = pareto_mtl.preference_vectors(2, num_preferences)
    warmup_steps = int(round(pmtl_warmup_fraction * steps))
    for p in range(num_preferences):
        direction = ParetoMTLDirection(p, preferences, warmup_steps, starts)
        entry = _entry(descend(x0, direction, steps, lr), preference_index=p, preference=preferences[p].tolist())
        final = np.array(entry["final_losses"])  # in u_p's sub-region: no constraint (u_j - u_p)^T l > 0
        entry["in_preference_region"] = int(np.sum(np.all(final @ (preferences - preferences[p]).T <= 0, axis=1)))
        methods["pareto_mtl"].append(entry)
    log(f"pareto_mtl: {num_preferences} preferences done ({time.time() - began:.1f} s)")
    for c1 in c1_values:
        for c2 in c2_values:
            methods["ptl"].append(_entry(descend(x0, ptl_direction(c1, c2, constraint10), steps, lr), c1=c1, c2=c2))
    log(f"ptl: {len(c1_values) * len(c2_values)} (C1, C2) settings done ({time.time() - began:.1f} s)")
    results["ptl_c2_max_difference"] = c2_spread(methods["ptl"])
    results["wall_seconds"] = time.time() - began
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    plot(results, os.path.join(output_dir, "pareto_front.png"))
    with open(os.path.join(output_dir, "summary.md"), "w") as f:
        f.write(summary(results))
    return results


def c2_spread(ptl_entries):
    """Largest |difference| of the final losses between two C2 values with the same C1."""
    spread = 0.0
    by_c1 = {}
    for e in ptl_entries:
        by_c1.setdefault(e["c1"], []).append(np.array(e["final_losses"]))
    for finals in by_c1.values():
        for other in finals[1:]:
            spread = max(spread, float(np.max(np.abs(other - finals[0]))))
    return spread


def _fmt(v):
    return f"{v:g}"


def plot(results, path):
    front = pareto_front()
    methods = results["methods"]
    c = results["config"]
    fig, axes = plt.subplots(1, 4, figsize=(20, 6.0), sharex=True, sharey=True)
    for ax, method in zip(axes, METHODS):
        ax.plot(front[:, 0], front[:, 1], color="k", lw=1.5, label="true Pareto front", zorder=1)
        entries = methods[method]
        if method == "ptl":
            c1s = list(dict.fromkeys(e["c1"] for e in entries))
            c2s = list(dict.fromkeys(e["c2"] for e in entries))
            colors = plt.cm.viridis(np.linspace(0.0, 0.9, len(c1s)))
            markers = ["o", "x", "+", "^", "s", "v", "D"]
            for e in entries:
                i, j = c1s.index(e["c1"]), c2s.index(e["c2"])
                pts = np.array(e["final_losses"])
                hollow = {"facecolors": "none", "edgecolors": colors[i]} if j == 0 else {"color": colors[i]}
                ax.scatter(pts[:, 0], pts[:, 1], s=70 if j == 0 else 30, marker=markers[j % len(markers)],
                           zorder=2 + j, label=(f"C1={_fmt(e['c1'])}: mean l1 {e['mean_l1']:.3f}" if j == 0 else None),
                           **hollow)
            for j, c2 in enumerate(c2s):
                style = {"facecolors": "none", "edgecolors": "gray"} if j == 0 else {"color": "gray"}
                ax.scatter([], [], marker=markers[j % len(markers)], label=f"C2={_fmt(c2)}", **style)
            title = (f"{TITLES[method]}: target l1, privileged l2, grid C1 x C2\n"
                     + (f"every C2 in {{{', '.join(map(_fmt, c2s))}}} gives the same points "
                        f"(max |diff| {results['ptl_c2_max_difference']:.1e})" if c.get("constraint10", True) else
                        f"without constraint (10): C2 acts (max |diff| {results['ptl_c2_max_difference']:.1e})"))
        else:
            colors = plt.cm.viridis(np.linspace(0.0, 0.9, max(len(entries), 1)))
            for e, color in zip(entries, colors):
                pts = np.array(e["final_losses"])
                if method == "lin_scalar":
                    label = f"w={_fmt(e['w'])}: mean l1 {e['mean_l1']:.3f}"
                elif method == "pareto_mtl":
                    u = e["preference"]
                    label = f"u=({u[0]:.2f}, {u[1]:.2f}): {e['in_preference_region']}/{len(pts)} in region"
                    ray = 1.45 * np.array(u)
                    ax.plot([0, ray[0]], [0, ray[1]], ls="--", lw=0.8, color=color, zorder=1)
                else:
                    label = f"min-norm: mean l1 {e['mean_l1']:.3f}"
                ax.scatter(pts[:, 0], pts[:, 1], s=30, color=color, label=label, zorder=2)
            title = {"lin_scalar": "d = w g1 + (1 - w) g2 (points at the two ends overlap)",
                     "moomtl": "d = min-norm element of {g1, g2}",
                     "pareto_mtl": f"{c['num_preferences']} preference vectors u (dashed rays)"}[method]
            title = f"{TITLES[method]}\n{title}"
        ax.set_title(title, fontsize=9)
        ax.set_xlim(-0.05, 1.05)
        ax.set_ylim(-0.05, 1.05)
        ax.set_aspect("equal")
        ax.set_xlabel("target loss l1")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6.5, loc="lower left")  # below the concave front: no point lies there
    axes[0].set_ylabel("privileged loss l2")
    fig.suptitle(f"Seed 004 Eq. 17 (n = {c['dim']}): final losses of {c['starts']} starts x0 ~ "
                 f"U(-{_fmt(c['init_range'])}, {_fmt(c['init_range'])})^n (the same for every method), "
                 f"{c['steps']} steps x <- x - {_fmt(c['lr'])} d", fontsize=11, y=0.98)
    fig.text(0.5, 0.01, ("PTL: with constraint (10) of Eq. 12 the direction depends on C1 only (tfaux.solvers."
                         "privileged_min_norm), so the C2 grid gives identical points; " if c.get("constraint10", True)
                         else "PTL without constraint (10): the exact dual of the primal (11), where the privileged "
                         "weight may go negative by up to C2; ") + "C1 = 0 is descent on l1 alone, C1 = 1 is MOOMTL.",
             ha="center", fontsize=9)
    fig.subplots_adjust(left=0.04, right=0.99, bottom=0.12, top=0.84, wspace=0.1)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def summary(results):
    c = results["config"]
    methods = results["methods"]
    init = np.array(results["initial_losses"])
    lines = ["# PTL synthetic experiment (seed 004 Sec. 5.1, Eq. 17, Fig. 3)", "",
             f"n = {c['dim']}, {c['starts']} starts x0 ~ U(-{_fmt(c['init_range'])}, {_fmt(c['init_range'])})^n "
             f"(seed {c['seed']}; initial mean l1 {init[:, 0].mean():.3f}, l2 {init[:, 1].mean():.3f}), "
             f"{c['steps']} steps x <- x - {_fmt(c['lr'])} d. Every method starts from the same points. "
             f"Wall time {results['wall_seconds']:.1f} s.", "",
             "Means over the starts of the final target loss l1, privileged loss l2 and distance of x to the "
             "Pareto set {t/sqrt(n) 1 : t in [-1, 1]}.", "",
             "| method | setting | mean l1 | mean l2 | mean distance to Pareto set | starts within 1e-3 of it |",
             "|---|---|---|---|---|---|"]

    def row(method, setting, e):
        d = np.array(e["distance_to_pareto_set"])
        lines.append(f"| {method} | {setting} | {e['mean_l1']:.4f} | {e['mean_l2']:.4f} | {d.mean():.2e} | "
                     f"{int(np.sum(d < 1e-3))}/{d.size} |")

    for e in methods["lin_scalar"]:
        row("Lin-Scalar", f"w = {_fmt(e['w'])}", e)
    for e in methods["moomtl"]:
        row("MOOMTL", "min-norm", e)
    for e in methods["pareto_mtl"]:
        row("Pareto-MTL", f"u_{e['preference_index']} = ({e['preference'][0]:.3f}, {e['preference'][1]:.3f}), "
            f"{e['in_preference_region']}/{c['starts']} end in its sub-region", e)
    for e in methods["ptl"]:
        row("PTL", f"C1 = {_fmt(e['c1'])}, C2 = {_fmt(e['c2'])}", e)
    lines += ["", "## PTL: mean final l1 per C1", "", "| C1 | mean l1 | mean l2 |", "|---|---|---|"]
    seen = {}
    for e in methods["ptl"]:
        seen.setdefault(e["c1"], e)
    for c1, e in seen.items():
        lines.append(f"| {_fmt(c1)} | {e['mean_l1']:.4f} | {e['mean_l2']:.4f} |")
    lines += ["", f"C2 in {{{', '.join(map(_fmt, c['c2_values']))}}}: the largest difference of a final loss "
              f"between two C2 values with the same C1 is {results['ptl_c2_max_difference']:.1e}. "
              + ("With constraint (10) of Eq. 12 the optimal direction depends on C1 only (tfaux.solvers."
                 "privileged_min_norm), so the C2 grid gives identical points." if c.get("constraint10", True) else
                 "Without constraint (10) (--noconstraint10: the exact dual of the primal (11)), C2 lets the "
                 "privileged weight go negative by up to C2 and bends the update towards the target."), ""]
    return "\n".join(lines)


# ---------------------------------------------------------------- the program
def _floats(name, values, low=0.0, high=None):
    try:
        out = [float(v) for v in values]
    except ValueError:
        raise app.UsageError(f"--{name} must be a comma-separated list of numbers, got {','.join(values)!r}.")
    if not out:
        raise app.UsageError(f"--{name} must not be empty.")
    for v in out:
        if not math.isfinite(v) or v < low or (high is not None and v > high):
            bound = f"in [{_fmt(low)}, {_fmt(high)}]" if high is not None else f">= {_fmt(low)}"
            raise app.UsageError(f"--{name} values must be {bound}, got {_fmt(v)}.")
    return out


def define_flags():
    d = DEFAULTS
    flags.DEFINE_string("output_dir", d["output_dir"], "Where results.json, pareto_front.png and summary.md go.",
                        allow_override=True)  # apps.flags defines output_dir, lr and seed too
    flags.DEFINE_integer("dim", d["dim"], "Dimension n of x (Lin et al. 2019 used 20).", lower_bound=1)
    flags.DEFINE_integer("starts", d["starts"], "Starting points, shared by every method and setting.",
                         lower_bound=1)
    flags.DEFINE_integer("steps", d["steps"], "Gradient steps x <- x - lr d per run.", lower_bound=0)
    flags.DEFINE_float("lr", d["lr"], "Step size (Pareto-MTL's weights sum to 2 in absolute value, so "
                       "lr < 0.5 keeps its steps stable at the optima).", lower_bound=0.0,
                       allow_override=True)
    flags.DEFINE_list("c1_values", list(d["c1_values"]), "PTL's C1 grid (>= 0; the privileged task's weight "
                      "is at most C1; 0: target only, >= 1: MOOMTL).")
    flags.DEFINE_list("c2_values", list(d["c2_values"]), "PTL's C2 grid (>= 0; does not change the direction "
                      "with constraint (10) of Eq. 12).")
    flags.DEFINE_list("scalar_weights", list(d["scalar_weights"]), "Lin-Scalar's weights w of the target "
                      "(in [0, 1]): d = w g1 + (1 - w) g2.")
    flags.DEFINE_integer("num_preferences", d["num_preferences"], "Pareto-MTL's preference vectors (one run "
                         "per vector).", lower_bound=2)
    flags.DEFINE_float("init_range", d["init_range"], "Starts x0 ~ U(-init_range, init_range)^n.", lower_bound=0.0)
    flags.DEFINE_float("pmtl_warmup_fraction", d["pmtl_warmup_fraction"], "Fraction of the steps in which "
                       "Pareto-MTL's stage 1 (feasible initial point) may run.", lower_bound=0.0, upper_bound=1.0)
    flags.DEFINE_integer("seed", d["seed"], "Seed of the starting points.", allow_override=True)
    flags.DEFINE_boolean("constraint10", d["constraint10"], "PTL as Eq. 12 is written, with constraint (10) "
                         "(C2 then cannot change the update); --noconstraint10 solves the exact dual of the "
                         "primal (11), where C2 acts.")
    for name, high in (("c1_values", None), ("c2_values", None), ("scalar_weights", 1.0)):
        flags.register_validator(name, _list_validator(name, high))


def _list_validator(name, high):
    """A flag validator: the list parses as numbers in [0, high] (so a bad value fails at parse time)."""
    def check(values):
        try:
            _floats(name, values, 0.0, high)
        except app.UsageError as e:
            raise flags.ValidationError(str(e))
        return True
    return check


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    results = run(FLAGS.output_dir, FLAGS.dim, FLAGS.starts, FLAGS.steps, FLAGS.lr,
                  _floats("c1_values", FLAGS.c1_values), _floats("c2_values", FLAGS.c2_values),
                  _floats("scalar_weights", FLAGS.scalar_weights, 0.0, 1.0), FLAGS.num_preferences,
                  FLAGS.init_range, FLAGS.pmtl_warmup_fraction, FLAGS.seed, constraint10=FLAGS.constraint10)
    print(f"wrote results.json, pareto_front.png and summary.md in {os.path.abspath(FLAGS.output_dir)} "
          f"({results['wall_seconds']:.1f} s)")


if __name__ == "__main__":
    define_flags()
    app.run(main)
