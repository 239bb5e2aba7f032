"""At how many tasks does a gradient-space method's training step cost 2x STL's?

Gradient-space methods (those with a persistent lower tape: one backward pass per task)
grow with the number of tasks T; STL does not (it runs the target head only). On a
CUB-like synthetic problem (a 200-way primary task plus T - 1 binary attribute tasks, up
to CUB's 312 attributes, i.e. T = 313; one shared MLP 64-512-512, batch 256), every method
and STL fit --steps steps after a warm-up fit (tracing, timed apart) at each T, methods
interleaved with STL at the same T so machine noise hits both. A method stops growing T
once its ratio passes --stop_ratio. The crossing T_2x is interpolated log-linearly between
the grid points around ratio 2.

    python -m benchmarks.task_scaling --json benchmarks/results/task_scaling.json
"""

import argparse
import json
import math
import time

import keras
import numpy as np
import tensorflow as tf

import tfaux

DIM, BATCH, CLASSES = 64, 256, 200


def gradient_space_methods():
    from tfaux.strategies import METHODS
    return [n for n, m in METHODS.items() if m.cls.persistent_tape and n != "cosinesim"]  # cosinesim = gcs cost


def _tasks(t):
    return [tfaux.Task("main", role="primary", num_classes=CLASSES)] + [
        tfaux.Task(f"attr{k}", kind="binary") for k in range(1, t)]


def _data(t, steps, seed=0):
    rng = np.random.default_rng(seed)
    n = BATCH * steps
    x = rng.normal(size=(n, DIM)).astype("float32")
    labels = {"main": rng.integers(0, CLASSES, n).astype("int32")}
    labels.update({f"attr{k}": (rng.random(n) < 0.5).astype("float32") for k in range(1, t)})
    batch = {"x": x, "labels": labels, "mask": {k: np.ones(n, "float32") for k in labels},
             "id": np.arange(n, dtype="int64")}
    return tf.data.Dataset.from_tensor_slices(batch).batch(BATCH, drop_remainder=True).cache()


def _model(method, t):
    keras.utils.set_random_seed(0)
    encoder = keras.Sequential([keras.layers.Dense(512, activation="relu"), keras.layers.Dense(512, activation="relu")])
    name, _, args = method.partition(":")  # e.g. "arml:interval=1" (method arguments after a colon)
    strategy = tfaux.strategies.get(name, **tfaux.strategies.method_args(name, args.replace(";", ",")))
    model = tfaux.AuxiliaryModel(encoder, _tasks(t), strategy, tf.TensorSpec((DIM,), tf.float32),
                                 num_examples=BATCH)
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    return model


def step_seconds(method, t, steps):
    """(seconds per step, seconds of the warm-up fit: tracing plus one pass)."""
    data = _data(t, steps)
    model = _model(method, t)
    start = time.perf_counter()
    model.fit(data.take(1), epochs=1, verbose=0)
    warm = time.perf_counter() - start
    start = time.perf_counter()
    model.fit(data, epochs=1, verbose=0)
    return (time.perf_counter() - start) / steps, warm


def crossing(points, level=2.0):
    """T where the ratio first reaches `level`, log-linear between grid points; None if never."""
    for (t0, r0), (t1, r1) in zip(points, points[1:]):
        if r0 < level <= r1:
            return round(math.exp(math.log(t0) + (level - r0) / (r1 - r0) * (math.log(t1) - math.log(t0))), 1)
    if points and points[0][1] >= level:
        return points[0][0]
    return None


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default="all", help="comma-separated, or all gradient-space methods; a method's "
                   "arguments may follow a colon, separated by ';' (arml:interval=1)")
    p.add_argument("--tasks", default="2,4,8,16,32,64,128,313")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--stop_ratio", type=float, default=4.0)
    p.add_argument("--json")
    args = p.parse_args()
    methods = gradient_space_methods() if args.methods == "all" else args.methods.split(",")
    grid = [int(t) for t in args.tasks.split(",")]
    ratios = {m: [] for m in methods}
    rows = []
    for t in grid:
        active = [m for m in methods if not ratios[m] or ratios[m][-1][1] < args.stop_ratio]
        if not active:
            break
        stl, stl_warm = step_seconds("stl", t, args.steps)
        for m in active:
            seconds, warm = step_seconds(m, t, args.steps)
            ratios[m].append((t, seconds / stl))
            rows.append({"method": m, "tasks": t, "step_s": seconds, "stl_step_s": stl, "ratio": seconds / stl,
                         "warmup_s": warm, "stl_warmup_s": stl_warm})
            print(json.dumps(rows[-1]), flush=True)
    print(f"\nbatch={BATCH} dim={DIM} MLP 512-512, primary {CLASSES}-way + T-1 binary, steps={args.steps}")
    print("| method | " + " | ".join(f"T={t}" for t in grid) + " | T at 2x STL |")
    print("|---|" + "---|" * (len(grid) + 1))
    for m in methods:
        cells = {t: f"{r:.2f}" for t, r in ratios[m]}
        print(f"| {m} | " + " | ".join(cells.get(t, "-") for t in grid) + f" | {crossing(ratios[m]) or '> ' + str(ratios[m][-1][0])} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows,
                       "crossing": {m: crossing(ratios[m]) for m in methods}}, f, indent=2)


if __name__ == "__main__":
    main()
