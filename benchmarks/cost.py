"""Cost of every method relative to STL on the same model and data, in one run.

Each (round, method) trains in a fresh subprocess: one warm-up epoch (tracing),
then `--epochs` timed epochs (each from the start of its first step to the end of its last,
so that tearing down a `--steps`-truncated input pipeline, which can block for seconds, is
not counted; the median epoch); memory is the peak resident set size growth from
just before `fit` (data and model already built) to the end. Rounds interleave the
methods so that machine noise hits all of them alike; the table reports medians
and ratios to STL. Defaults: ConvNet-4, batch 64, M = 20, K = 3, Hessian over all
parameters, rotation auxiliary task.

    python -m benchmarks.cost --dataset=mnist --data_dir=../shared/data/mnist
    python -m benchmarks.cost --dataset=movielens_100k --data_dir=../shared/data/ml-100k \
        --encoder=autoint --rotation=off --batch_size=1024 --steps=40
"""

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time



def all_methods():
    """Every method of the method table (tfaux.strategies.METHODS), STL first."""
    from tfaux.strategies import METHODS
    return ["stl"] + [m for m in METHODS if m != "stl"]


def _rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def worker(args):
    import keras
    import pipelines
    import tfaux
    from tfaux import hypergrad

    import tensorflow as tf

    keras.utils.set_random_seed(0)
    setting = pipelines.Setting(dev_size=args.dev_size, rotation=args.rotation == "on")
    data = pipelines.load(args.dataset, data_dir=args.data_dir, setting=setting)
    scope = tf.distribute.MirroredStrategy() if args.distribute == "mirrored" else tf.distribute.get_strategy()
    with scope.scope():
        encoders = {"autoint": lambda: tfaux.models.autoint(data.input_spec), "convnet4": tfaux.models.convnet4,
                    "resnet18": lambda: tfaux.models.resnet18(stem="cifar")}
        spec, _, chunks = args.method.partition("@")  # jtds@4: Hessian-vector products over 4 sub-batches
        name, _, text = spec.partition(":")  # method arguments may follow a colon, ';'-separated
        strategy = tfaux.strategies.get(name, **tfaux.strategies.method_args(name, text.replace(";", ",")))
        encoder, layer = encoders[args.encoder](), data.preprocessing()  # pipelines yield raw pixels
        encoder = encoder if layer is None else keras.Sequential([layer, encoder])
        model = tfaux.AuxiliaryModel(encoder, data.tasks, strategy,
                                     input_spec=data.input_spec, num_examples=data.num_train,
                                     upper_interval=args.upper_interval, solver=hypergrad.Neumann(terms=args.terms),
                                     hessian_scope=args.hessian_scope, hvp_chunks=int(chunks or 1))
        model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=args.jit_compile == "on")
    stream = model.method.second_stream
    if stream is None:
        train = data.train(args.batch_size)
    elif stream == "train":
        train = data.train_with_reordered(args.batch_size, 32)
    else:
        train = data.train_with_dev(args.batch_size, 32)
    if args.steps:
        train = train.take(args.steps)
    before = _rss_mib()
    model.fit(train, epochs=1, verbose=0)
    starts, ends = [], []
    timer = keras.callbacks.LambdaCallback(on_epoch_begin=lambda *_: starts.append(time.perf_counter()),
                                           on_epoch_end=lambda *_: ends.append(time.perf_counter()))
    model.fit(train, epochs=args.epochs, verbose=0, callbacks=[timer])
    seconds = statistics.median(e - s for s, e in zip(starts, ends))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"method": args.method, "epoch_seconds": seconds, "peak_growth_mib": peak - before,
                      "peak_rss_mib": peak}))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--data_dir", default=None)
    p.add_argument("--methods", default="all", help="comma-separated method names, or all (the method table); "
                   "arguments may follow a colon, separated by ';' (auxilearn:combiner=linear); '@N' runs a bi-level "
                   "method with hvp_chunks=N (jtds@4)")
    p.add_argument("--encoder", default="convnet4", choices=["convnet4", "autoint", "resnet18"],
                   help="autoint for MovieLens / Amazon (dict inputs)")
    p.add_argument("--distribute", default="none", choices=["none", "mirrored"],
                   help="mirrored: MirroredStrategy over every visible GPU (or the CPU)")
    p.add_argument("--jit_compile", default="off", choices=["off", "on"], help="XLA for every method alike")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--steps", type=int, default=0, help="cap training steps per epoch (0: whole epoch)")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--dev_size", type=int, default=200)
    p.add_argument("--upper_interval", type=int, default=20)
    p.add_argument("--terms", type=int, default=3)
    p.add_argument("--hessian_scope", default="all")
    p.add_argument("--rotation", default="on", choices=["on", "off"],
                   help="rotation auxiliary task (a second encoder pass per example)")
    p.add_argument("--method", help=argparse.SUPPRESS)
    p.add_argument("--json", help="also write the results to this JSON file")
    args = p.parse_args()
    if args.method:
        return worker(args)
    methods = all_methods() if args.methods == "all" else args.methods.split(",")
    results = {m: [] for m in methods}
    for r in range(args.rounds):
        for m in methods:
            cmd = [sys.executable, "-m", "benchmarks.cost", "--method", m] + [
                f"--{k}={v}" for k, v in vars(args).items()
                if k not in ("method", "methods", "rounds", "json") and v is not None]
            out = subprocess.run(cmd, capture_output=True, text=True)
            lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
            if out.returncode or not lines:
                sys.exit(f"{m} failed:\n{out.stderr[-3000:]}")
            results[m].append(json.loads(lines[-1]))
            print(f"round {r + 1}: {results[m][-1]}", file=sys.stderr)
    med = {m: {k: statistics.median(x[k] for x in rs) for k in ("epoch_seconds", "peak_growth_mib", "peak_rss_mib")}
           for m, rs in results.items()}
    base = med.get("stl")
    print(f"dataset={args.dataset} encoder={args.encoder} batch={args.batch_size} M={args.upper_interval} "
          f"K={args.terms} hessian={args.hessian_scope} rotation={args.rotation} distribute={args.distribute} "
          f"jit_compile={args.jit_compile} rounds={args.rounds} epochs={args.epochs}")
    print("| method | s / epoch | × STL time | peak memory growth (MiB) | × STL growth | peak process memory (MiB) "
          "| × STL process |\n|---|---|---|---|---|---|---|")
    for m, v in med.items():
        ratio = {k: v[k] / base[k] if base else float("nan") for k in v}
        print(f"| {m} | {v['epoch_seconds']:.2f} | {ratio['epoch_seconds']:.2f} | {v['peak_growth_mib']:.0f} | "
              f"{ratio['peak_growth_mib']:.2f} | {v['peak_rss_mib']:.0f} | {ratio['peak_rss_mib']:.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "runs": results, "median": med}, f, indent=2)


if __name__ == "__main__":
    main()
