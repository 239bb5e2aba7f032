"""How the scheduler's size and the upper step's cost grow.

1. Parameters of phi: JTDS (O(d * T), independent of the training-set size N) vs N-JTDS
   (one weight per example and task, N * T), counted on the built strategies.
2. Seconds of one upper step (Neumann, K terms, Hessian over all parameters) relative to one
   lower step, for K in --terms and T tasks in --tasks (a primary 10-way task plus T - 1
   binary auxiliary tasks on one shared MLP encoder; synthetic inputs, batch 256). Measured in
   one process: two copies of the model fit --steps steps, one with an upper step every step
   (M = 1) and one with none, after a warm-up fit each (tracing), alternately for 3 rounds;
   upper = median of t(M=1) - t(none).

    python -m benchmarks.upper_cost
"""

import argparse
import statistics
import time

import keras
import numpy as np
import tensorflow as tf

import tfaux
from tfaux import hypergrad

DIM, BATCH = 64, 256


def phi_size(method, tasks, feature_dim, num_examples):
    strategy = tfaux.strategies.get(method)
    strategy.setup([tfaux.Task(f"t{k}", role="primary" if k == 0 else "auxiliary", kind="binary")
                    for k in range(tasks)], feature_dim, num_examples)
    return int(sum(np.prod(w.shape) for w in strategy.trainable_weights))


def _tasks(t):
    return [tfaux.Task("main", role="primary", num_classes=10)] + [
        tfaux.Task(f"aux{k}", kind="binary") for k in range(1, t)]


def _data(t, steps, seed=0):
    rng = np.random.default_rng(seed)
    n = BATCH * steps

    def part(n):
        x = rng.normal(size=(n, DIM)).astype("float32")
        labels = {"main": rng.integers(0, 10, n).astype("int32")}
        labels.update({f"aux{k}": (rng.random(n) < 0.5).astype("float32") for k in range(1, t)})
        mask = {k: np.ones(n, "float32") for k in labels}
        return {"x": x, "labels": labels, "mask": mask, "id": np.arange(n, dtype="int64")}

    train = tf.data.Dataset.from_tensor_slices(part(n)).batch(BATCH, drop_remainder=True)
    dev = tf.data.Dataset.from_tensor_slices(part(4 * BATCH)).repeat().batch(BATCH, drop_remainder=True)
    return tf.data.Dataset.zip(train, dev).map(lambda a, b: {"train": a, "dev": b}).cache()


def _model(t, terms, steps, interval):
    keras.utils.set_random_seed(0)
    encoder = keras.Sequential([keras.layers.Dense(512, activation="relu"), keras.layers.Dense(512, activation="relu")])
    model = tfaux.AuxiliaryModel(encoder, _tasks(t), tfaux.strategies.get("jtds"), tf.TensorSpec((DIM,), tf.float32),
                                 num_examples=BATCH * steps, upper_interval=interval,
                                 solver=hypergrad.Neumann(terms=terms))
    model.compile(optimizer=keras.optimizers.SGD(0.01), upper_optimizer=keras.optimizers.Adam(1e-3))
    return model


def step_seconds(t, terms, steps, rounds=3):
    """(lower step, upper step) seconds: median over rounds that time a fit without upper
    steps and one with an upper step every step back to back (machine noise hits both)."""
    data = _data(t, steps)
    lower_only, every_step = _model(t, terms, steps, 10**9), _model(t, terms, steps, 1)
    for model in (lower_only, every_step):
        model.fit(data, epochs=1, verbose=0)  # warm-up: tracing
    lowers, uppers = [], []
    for _ in range(rounds):
        timed = []
        for model in (lower_only, every_step):
            start = time.perf_counter()
            model.fit(data, epochs=1, verbose=0)
            timed.append((time.perf_counter() - start) / steps)
        lowers.append(timed[0])
        uppers.append(timed[1] - timed[0])
    return statistics.median(lowers), statistics.median(uppers)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--terms", default="0,1,3,10", help="Comma-separated Neumann term counts K.")
    p.add_argument("--tasks", default="2,11,41,313", help="Comma-separated task counts T (primary included).")
    p.add_argument("--steps", type=int, default=20, help="Timed training steps per fit and round.")
    args = p.parse_args()
    print("## Scheduler parameters (phi)\n")
    print("| tasks T | feature dim d | training examples N | JTDS | N-JTDS | N-JTDS / JTDS |\n|---|---|---|---|---|---|")
    for t, d in ((2, 1568), (313, 512)):
        for n in (1_000, 10_000, 100_000):
            j, nj = phi_size("jtds", t, d, n), phi_size("njtds", t, d, n)
            print(f"| {t} | {d} | {n:,} | {j:,} | {nj:,} | {nj / j:.1f} |")
    print("\n## Upper step cost, in lower steps (MLP 64-512-512, batch 256)\n")
    print("| tasks T | K | lower step (ms) | upper step (ms) | upper / lower |\n|---|---|---|---|---|")
    for t in (int(v) for v in args.tasks.split(",")):
        for k in (int(v) for v in args.terms.split(",")):
            lower, upper = step_seconds(t, k, args.steps)
            print(f"| {t} | {k} | {1e3 * lower:.1f} | {1e3 * upper:.1f} | {upper / lower:.1f} |", flush=True)


if __name__ == "__main__":
    main()
