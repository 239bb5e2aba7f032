"""Is the input pipeline the bottleneck? Examples/s of the training input pipeline
(`data.train(batch)` iterated) against examples/s consumed by a training step on the same
data (`tfaux.AuxiliaryModel` with `tfaux.strategies.STL()`, `model.fit` on the same
`data.train(batch)`), each timed after one warm-up epoch. A ratio pipeline / training
above 1 means the pipeline keeps up with training.

Workloads (every epoch capped with `.take` at --steps / --ml_steps batches):
  cifar10         official-format CIFAR-10 python batches of random uint8 images written to
                  a temp dir (--cifar_train images over data_batch_1..5, --cifar_test in
                  test_batch), read by pipelines.load("cifar10", data_dir=...); ConvNet-4.
  movielens_100k  the real ratings from --ml_dir (default ../shared/data/ml-100k from the
                  repository root; skipped with a printed reason when absent); an encoder
                  embedding each integer feature, concatenated with the float ones, Dense 64 ReLU.

    python -m benchmarks.pipeline_throughput [--json out.json]
"""

import argparse
import json
import os
import pickle
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
ML_DIR = REPO.parent / "shared" / "data" / "ml-100k"
WORKLOADS = ("cifar10", "movielens_100k")


# ---------------------------------------------------------------- data
def write_cifar10(root, n_train, n_test, seed=0):
    """Official-format CIFAR-10 python pickles of random images under root/cifar-10-batches-py."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    sizes = [len(a) for a in np.array_split(np.arange(n_train), 5)] + [n_test]
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name, n in zip(names, sizes):
        rows = rng.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8)  # R, G, B planes per row
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": rows, b"labels": rng.integers(0, 10, n).tolist(), b"batch_label": name.encode()},
                        f, protocol=2)


def embedding_encoder(input_spec, vocab, dim=8, units=64):
    """A Keras layer on the dict input: one Embedding per integer feature (vocab[name] rows),
    concatenated with the float features (flattened), then Dense(units) ReLU."""
    import keras
    import tensorflow as tf

    class EmbedConcat(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.names = sorted(input_spec)
            self.embed = {k: keras.layers.Embedding(vocab[k], dim, name=f"embed_{k}")
                          for k in self.names if input_spec[k].dtype.is_integer}
            self.dense = keras.layers.Dense(units, activation="relu")

        def call(self, x):
            parts = []
            for k in self.names:
                v = x[k]
                if k in self.embed:
                    parts.append(self.embed[k](tf.reshape(v, [-1])))
                else:
                    parts.append(tf.reshape(tf.cast(v, tf.float32), [tf.shape(v)[0], -1]))
            return self.dense(tf.concat(parts, axis=-1))

    return EmbedConcat(name="embed_concat")


def prepare(workload, args, tmp):
    """(data, encoder) of a workload, or (None, reason) to skip it."""
    import keras
    import pipelines
    import tfaux

    if workload == "cifar10":
        write_cifar10(tmp, args.cifar_train, args.cifar_test)
        data = pipelines.load("cifar10", data_dir=tmp)
        return data, keras.Sequential([data.preprocessing(), tfaux.models.convnet4()])  # raw pixels in
    ml_dir = Path(args.ml_dir)
    if not (ml_dir / "u.data").is_file():
        return None, f"MovieLens-100K not found at {ml_dir} (pass --ml_dir)"
    source = pipelines.DATASETS["movielens_100k"](str(ml_dir))
    data = pipelines.make_dataset(source, pipelines.Setting())
    vocab = {k: int(np.max(v)) + 1 for k, v in source.features.items() if np.issubdtype(v.dtype, np.integer)}
    return data, embedding_encoder(data.input_spec, vocab)


# ---------------------------------------------------------------- timing
def pipeline_rate(ds, batch, epochs):
    """Examples/s of iterating ds, after one warm-up epoch."""
    for _ in ds:
        pass
    steps, start = 0, time.perf_counter()
    for _ in range(epochs):
        for _ in ds:
            steps += 1
    return steps * batch / (time.perf_counter() - start), steps


def training_rate(model, ds, batch, epochs, steps_per_epoch):
    """Examples/s consumed by model.fit on ds, after one warm-up epoch (tracing)."""
    model.fit(ds, epochs=1, verbose=0)
    start = time.perf_counter()
    model.fit(ds, epochs=epochs, verbose=0)
    return epochs * steps_per_epoch * batch / (time.perf_counter() - start)


def run(workload, args):
    import keras
    import tfaux

    keras.utils.set_random_seed(0)
    batch = args.batch_size if workload == "cifar10" else args.ml_batch_size
    with tempfile.TemporaryDirectory() as tmp:
        data, encoder = prepare(workload, args, tmp)
        if data is None:
            return {"workload": workload, "skipped": encoder}
        ds = data.train(batch).take(args.steps if workload == "cifar10" else args.ml_steps)
        pipe, steps = pipeline_rate(ds, batch, args.epochs)
        model = tfaux.AuxiliaryModel(encoder, data.tasks, tfaux.strategies.STL(), input_spec=data.input_spec,
                                     num_examples=data.num_train)
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
        train = training_rate(model, ds, batch, args.epochs, steps // args.epochs)
    return {"workload": workload, "batch_size": batch, "steps_per_epoch": steps // args.epochs,
            "timed_epochs": args.epochs, "num_train": data.num_train, "pipeline_examples_per_s": pipe,
            "training_examples_per_s": train, "ratio": pipe / train}


def table(results):
    lines = ["| workload | batch | steps/epoch | pipeline ex/s | training ex/s | pipeline / training |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in results:
        if "skipped" in r:
            lines.append(f"| {r['workload']} | skipped: {r['skipped']} | | | | |")
        else:
            lines.append(f"| {r['workload']} | {r['batch_size']} | {r['steps_per_epoch']} | "
                         f"{r['pipeline_examples_per_s']:,.0f} | {r['training_examples_per_s']:,.0f} | "
                         f"{r['ratio']:.1f} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated subset of " + ", ".join(WORKLOADS))
    p.add_argument("--steps", type=int, default=40, help="CIFAR-10 batches per epoch (`.take`), both measurements")
    p.add_argument("--ml_steps", type=int, default=200, help="MovieLens batches per epoch (`.take`)")
    p.add_argument("--epochs", type=int, default=2, help="timed epochs after the warm-up epoch")
    p.add_argument("--batch_size", type=int, default=64, help="CIFAR-10 batch size")
    p.add_argument("--ml_batch_size", type=int, default=256, help="MovieLens batch size")
    p.add_argument("--cifar_train", type=int, default=5000, help="random CIFAR-10 training images written")
    p.add_argument("--cifar_test", type=int, default=1000, help="random CIFAR-10 test images written")
    p.add_argument("--ml_dir", default=str(ML_DIR))
    p.add_argument("--json", help="also write the results to this JSON file")
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = sorted(set(workloads) - set(WORKLOADS))
    if unknown or min(args.steps, args.ml_steps, args.epochs) < 1:
        p.error(f"unknown workloads {unknown}" if unknown else "--steps, --ml_steps and --epochs must be >= 1")
    results = []
    for w in workloads:
        start = time.perf_counter()
        r = run(w, args)
        r["wall_s"] = time.perf_counter() - start
        if "skipped" in r:
            print(f"skipped {w}: {r['skipped']}", flush=True)
        results.append(r)
    print(table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
