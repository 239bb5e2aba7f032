"""Where a bi-level upper step's time and memory go, part by part, against one lower step.

Parts, each a tf.function over the same model, batch and dev batch (the upper step of
tfaux.hypergrad.implicit_hypergradient taken apart):
  lower        one lower step's gradient (forward + backward of L_t over theta and phi's lower variables)
  dev          the dev (upper) loss's gradient over theta and phi
  nested       L_t's gradient recorded on a persistent outer tape (the upper step's training gradient)
  hvp1, hvpK   that, plus 1 / K Hessian-vector products (double backward through the outer tape)
  mixed        L_t's gradient on a (non-persistent) outer tape, plus the mixed product over phi
  upper        the whole hypergradient (AuxiliaryModel.hypergradient: dev + nested + K HVPs + mixed)
  fwd_hvp1, fwd_hvpK, fwd_mixed
               the same products reverse-over-forward: each the gradient of a directional derivative
               (tf.autodiff.ForwardAccumulator inside a tape), recomputed per product, no nested tape
  upper_chunks the whole hypergradient with hvp_chunks = --hvp_chunks (sub-batched products)
  step         one whole lower step (AuxiliaryModel.train_step: gradient, optimizer update, metrics)
  due_unfused  a due step as two passes: the hypergradient, then a lower step
  due_fused    a due step as one pass (AuxiliaryModel.fused_step, the default on the exact path)
Each (round, part) runs in a fresh subprocess: trace, execute once (memory: the growth of the
process's resident set over that first execution, i.e. the tensors it keeps alive at its peak),
then `--calls` timed calls. Rounds interleave the parts; the table reports medians and ratios to
the lower step.

    python -m benchmarks.upper_profile --data_dir=../shared/data/mnist
    python -m benchmarks.upper_profile --dataset=movielens_100k --data_dir=../shared/data/ml-100k \
        --encoder=autoint --rotation=off --batch_size=1024
"""

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

PARTS = ("lower", "dev", "nested", "hvp1", "hvpK", "mixed", "upper", "fwd_hvp1", "fwd_hvpK", "fwd_mixed", "upper_chunks",
         "step", "due_unfused", "due_fused")


def _rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _functions(model, batch, dev, terms, chunks):
    import tensorflow as tf
    from tfaux.hypergrad import zeros_for_none

    theta, phi = model.hessian_variables(), model.method.upper_variables
    vector = [tf.random.stateless_normal(v.shape, seed=[1, k]) for k, v in enumerate(theta)]

    def gradient(loss_fn, variables):
        with tf.GradientTape() as tape:
            loss = loss_fn()
        return zeros_for_none(tape.gradient(loss, variables), variables)

    def hvps(count):
        with tf.GradientTape(persistent=True) as outer:
            with tf.GradientTape() as inner:
                loss = model.lower_objective(batch)
            grad = zeros_for_none(inner.gradient(loss, theta), theta)
        out = vector
        for _ in range(count):
            out = zeros_for_none(outer.gradient(grad, theta, output_gradients=out), theta)
        return out if count else grad

    def mixed():
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                loss = model.lower_objective(batch)
            grad = zeros_for_none(inner.gradient(loss, theta), theta)
        return zeros_for_none(outer.gradient(grad, phi, output_gradients=vector), phi)

    def directional(u, variables):
        with tf.GradientTape() as tape:
            with tf.autodiff.ForwardAccumulator([getattr(v, "value", v) for v in theta], u) as acc:
                loss = model.lower_objective(batch)
            d = acc.jvp(loss)
        return zeros_for_none(tape.gradient(d, variables), variables)

    def fwd_hvps(count):
        out = vector
        for _ in range(count):
            out = directional(out, theta)
        return out

    def upper_chunks():
        model.hvp_chunks = chunks
        return model.hypergradient(batch, dev)[0]

    pair = {"train": batch, "dev": dev}

    def due_unfused():
        hyper = model.hypergradient(batch, dev)[0]
        with tf.control_dependencies(hyper):
            return hyper + [model.train_step(pair)["loss"]]

    return {"step": lambda: [model.train_step(pair)["loss"]], "due_unfused": due_unfused,
            "due_fused": lambda: model.fused_step(pair)[0], "upper_chunks": upper_chunks,
            "fwd_hvp1": lambda: fwd_hvps(1), "fwd_hvpK": lambda: fwd_hvps(terms),
            "fwd_mixed": lambda: directional(vector, phi),
            "lower": lambda: gradient(lambda: model.lower_objective(batch), model.theta.trained),
            "dev": lambda: gradient(lambda: model.dev_objective(dev), theta + phi),
            "nested": lambda: hvps(0), "hvp1": lambda: hvps(1), "hvpK": lambda: hvps(terms),
            "mixed": mixed, "upper": lambda: model.hypergradient(batch, dev)[0]}


def worker(args):
    import keras
    import tensorflow as tf

    import pipelines
    import tfaux
    from tfaux import hypergrad

    keras.utils.set_random_seed(0)
    setting = pipelines.Setting(dev_size=args.dev_size, rotation=args.rotation == "on")
    data = pipelines.load(args.dataset, data_dir=args.data_dir, setting=setting)
    encoders = {"autoint": lambda: tfaux.models.autoint(data.input_spec), "convnet4": tfaux.models.convnet4,
                "resnet18": lambda: tfaux.models.resnet18(stem="cifar")}
    encoder, layer = encoders[args.encoder](), data.preprocessing()  # pipelines yield raw pixels
    encoder = encoder if layer is None else keras.Sequential([layer, encoder])
    model = tfaux.AuxiliaryModel(encoder, data.tasks, tfaux.strategies.get(args.method),
                                 input_spec=data.input_spec, num_examples=data.num_train, upper_interval=20,
                                 solver=hypergrad.Neumann(terms=args.terms), hessian_scope=args.hessian_scope)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    pair = next(iter(data.train_with_dev(args.batch_size, 32)))
    function = tf.function(_functions(model, pair["train"], pair["dev"], args.terms, args.hvp_chunks)[args.part])
    function.get_concrete_function()

    def run():
        return [t.numpy() for t in function()]

    before = _rss_mib()
    run()
    memory = _rss_mib() - before
    start = time.perf_counter()
    for _ in range(args.calls):
        run()
    print(json.dumps({"seconds": (time.perf_counter() - start) / args.calls, "memory_mib": memory}))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--data_dir", default=None)
    p.add_argument("--encoder", default="convnet4", choices=["convnet4", "autoint", "resnet18"])
    p.add_argument("--rotation", default="on", choices=["on", "off"])
    p.add_argument("--method", default="jtds")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--dev_size", type=int, default=100)
    p.add_argument("--terms", type=int, default=3, help="Neumann terms K.")
    p.add_argument("--hessian_scope", default="all")
    p.add_argument("--hvp_chunks", type=int, default=4, help="sub-batches of the upper_chunks part")
    p.add_argument("--calls", type=int, default=5, help="Timed calls per (round, part).")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--parts", default=",".join(PARTS), help="comma-separated parts to run (lower is always run)")
    p.add_argument("--part", default=None, help=argparse.SUPPRESS)  # worker mode
    args = p.parse_args()
    if args.part:
        return worker(args)
    if unknown := [name for name in args.parts.split(",") if name not in PARTS]:
        p.error(f"--parts: unknown {unknown}; choose from {', '.join(PARTS)}")
    parts = ["lower"] + [name for name in args.parts.split(",") if name != "lower"]
    results = {part: [] for part in parts}
    base = [a for a in sys.argv[1:] if not a.startswith(("--rounds", "--parts"))]
    for r in range(args.rounds):
        for part in parts:
            out = subprocess.run([sys.executable, "-m", "benchmarks.upper_profile", *base, f"--part={part}"],
                                 capture_output=True, text=True, check=True).stdout
            results[part].append(json.loads(out.strip().splitlines()[-1]))
            print(f"round {r + 1} {part}: {results[part][-1]}", file=sys.stderr, flush=True)
    seconds = {k: statistics.median(x["seconds"] for x in v) for k, v in results.items()}
    memory = {k: statistics.median(x["memory_mib"] for x in v) for k, v in results.items()}
    print(f"# Upper-step parts: {args.method} on {args.dataset} ({args.encoder}), batch {args.batch_size}, "
          f"K = {args.terms}, Hessian scope {args.hessian_scope}\n")
    print(f"Medians of {args.rounds} interleaved rounds x {args.calls} calls; memory: resident-set growth over the "
          "first execution.\n")
    print("| part | ms | × lower step | memory MiB | × lower step |\n|---|---|---|---|---|")
    for part in parts:
        print(f"| {part} | {1000 * seconds[part]:.1f} | {seconds[part] / seconds['lower']:.2f} | "
              f"{memory[part]:.0f} | {memory[part] / max(memory['lower'], 1e-9):.2f} |")


if __name__ == "__main__":
    main()
