"""Hypergradient accuracy: a closed-form problem and a small real network.

1. Weighted ridge (closed form): relative error of the implicit hypergradient vs central
   finite differences of L_dev(theta*(phi)), for the Neumann series (K terms, two step
   sizes alpha) and conjugate gradient (iterations).
2. A small real network (MLP encoder, JTDS, real digits with the rotation task, trained a
   few epochs first): the Hessian's extreme eigenvalues (power iteration), and the cosine
   between the hypergradient of `model.hypergradient` with Neumann K terms (alpha = the lower
   learning rate, as training uses) and CG references solving (H + mu I) x = v for several
   dampings mu, on the same batches, and between the H^-1 v solves themselves. Each reference
   is checked: CG's residual, CG with half the iterations, and a 2000-term Neumann series on
   the same damped system.

Run: python -m benchmarks.hypergrad_accuracy --json benchmarks/results/hypergrad_accuracy.json
(5-10 minutes on 2 CPU cores).
"""

import argparse
import json

import numpy as np
import tensorflow as tf

from tfaux import hypergrad
from tfaux.closed_form import WeightedRidge, relative_error


def hypergradient(problem, solver, alpha=None):
    theta, phi = tf.Variable(problem.theta_star()), tf.Variable(problem.phi)
    train_loss, dev_loss = problem.tf_losses(theta, phi)
    (g,), _ = hypergrad.implicit_hypergradient(train_loss, dev_loss, [theta], [phi], solver, alpha=alpha)
    return g.numpy()


def measure(problem):
    reference = problem.finite_difference()
    eig = np.linalg.eigvalsh(problem.hessian())
    rows = []
    for name, alpha in (("1/lambda_max", 1.0 / eig.max()), ("0.1/lambda_max", 0.1 / eig.max())):
        for k in (0, 1, 2, 3, 5, 10, 20, 30, 50):
            err = relative_error(hypergradient(problem, hypergrad.Neumann(terms=k), alpha), reference)
            rows.append({"solver": f"neumann alpha={name}", "steps": k, "relative_error": err})
    for it in (1, 2, 3, 5, 10):
        err = relative_error(hypergradient(problem, hypergrad.ConjugateGradient(iterations=it)), reference)
        rows.append({"solver": "cg", "steps": it, "relative_error": err})
    return rows, float(eig.max() / eig.min())


def _flat(tensors):
    return np.concatenate([np.ravel(np.asarray(t, np.float64)) for t in tensors])


def _cosine(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _hessian_operator(model, batch):
    """v -> H v for the lower objective on `batch`, over the model's Hessian variables."""
    theta = model.hessian_variables()
    with tf.GradientTape(persistent=True) as outer:
        with tf.GradientTape() as inner:
            loss = model.lower_objective(batch)
        grads = hypergrad.zeros_for_none(inner.gradient(loss, theta), theta)

    def hvp(u):
        return hypergrad.zeros_for_none(outer.gradient(grads, theta, output_gradients=u), theta)
    return hvp, theta


def extreme_eigenvalues(hvp, theta, iterations=100, seed=0):
    """(lambda_max, lambda_min) of H by power iteration, the second on lambda_max I - H."""
    rng = np.random.default_rng(seed)

    def power(op):
        u = [tf.constant(rng.standard_normal(t.shape), tf.float32) for t in theta]
        value = 0.0
        for _ in range(iterations):
            norm = tf.linalg.global_norm(u)
            u = [x / norm for x in u]
            hu = op(u)
            value = float(sum(tf.reduce_sum(a * b) for a, b in zip(u, hu)))
            u = hu
        return value

    top = power(hvp)  # the largest-magnitude eigenvalue; positive on these networks
    shifted = power(lambda u: [top * x - h for x, h in zip(u, hvp(u))])
    return top, top - shifted


def damped_solve_check(hvp, v, damping, iterations, neumann_terms, eigenvalues):
    """CG's solve x of (H + mu I) x = v, its relative residual, and its cosine with a Neumann
    series on the same damped system (alpha = 1/(lambda_max + mu)): two independent solvers
    agreeing make the damped reference trustworthy. The series diverges unless
    lambda_min + mu > 0 (then the cosine is None)."""
    top, bottom = eigenvalues

    def damped(u):
        return [h + damping * x for h, x in zip(hvp(u), u)]

    x = hypergrad.ConjugateGradient(iterations=iterations, damping=damping)(hvp, v)
    residual = np.linalg.norm(_flat(damped(x)) - _flat(v)) / np.linalg.norm(_flat(v))
    if bottom + damping <= 0:
        return _flat(x), float(residual), None
    y = hypergrad.Neumann(terms=neumann_terms, alpha=1.0 / (top + damping))(damped, v)
    return _flat(x), float(residual), _cosine(_flat(x), _flat(y))


def real_network(terms=(1, 3, 10, 50), cg_iterations=200, epochs=3, seed=0):
    """A trained MLP + JTDS: its Hessian's extreme eigenvalues, and the cosine between the
    Neumann-K hypergradients (alpha = lower lr, undamped, as training uses) and CG references
    that solve (H + mu I) x = v for several dampings mu, each checked for convergence."""
    import keras

    import pipelines
    import tfaux
    from tfaux import models

    keras.utils.set_random_seed(seed)
    data = pipelines.load("digits", setting=pipelines.Setting(dev_size=100, seed=seed))
    model = tfaux.AuxiliaryModel(models.mlp_encoder(), data.tasks, tfaux.strategies.get("jtds"),
                                 input_spec=data.input_spec, num_examples=data.num_train, upper_interval=5,
                                 upper=tfaux.upper.UpperSettings(optimizer="adam", clipnorm=0))
    lr = 0.05
    model.compile(optimizer=keras.optimizers.SGD(lr))
    model.fit(data.train_with_dev(64, 64), epochs=epochs, verbose=0)
    pair = next(iter(data.train_with_dev(256, 100)))

    def hyper(solver):
        model.solver = solver
        g, _ = model.hypergradient(pair["train"], pair["dev"])
        return _flat(g)

    hvp, theta = _hessian_operator(model, pair["train"])
    top, bottom = extreme_eigenvalues(hvp, theta)
    with tf.GradientTape() as tape:
        dev_loss = model.dev_objective(pair["dev"])
    v = hypergrad.zeros_for_none(tape.gradient(dev_loss, theta), theta)

    neumann = {k: hyper(hypergrad.Neumann(terms=k)) for k in terms}
    neumann_solves = {k: _flat(hypergrad.Neumann(terms=k, alpha=lr)(hvp, v)) for k in terms}
    dampings = [("0 (undamped)", 0.0), ("1.5 |lambda_min|", 1.5 * max(-bottom, 0.0)),
                ("1 / (alpha (K+1)), K = 3", 1.0 / (lr * 4)), ("lambda_max", top)]
    references = []
    for name, mu in dampings:
        solve, residual, agreement = damped_solve_check(hvp, v, mu, cg_iterations, 2000, (top, bottom))
        reference = hyper(hypergrad.ConjugateGradient(iterations=cg_iterations, damping=mu))
        half = hyper(hypergrad.ConjugateGradient(iterations=cg_iterations // 2, damping=mu))
        references.append({
            "damping": name, "mu": mu, "cg_relative_residual": residual,
            "cosine_cg_vs_damped_neumann_2000": agreement, "cosine_cg_half_vs_full": _cosine(half, reference),
            "cosine_vs_neumann": {k: _cosine(g, reference) for k, g in neumann.items()},
            "solve_cosine_vs_neumann": {k: _cosine(x, solve) for k, x in neumann_solves.items()}})
    return {"lambda_max": top, "lambda_min": bottom, "lower_lr": lr, "cg_iterations": cg_iterations,
            "references": references}


def _show(cosine):
    return "series diverges" if cosine is None else f"{cosine:.3f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dim", type=int, default=20, help="parameters of the inner problem")
    parser.add_argument("--examples", type=int, default=200, help="training examples (= outer parameters)")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args()
    problem = WeightedRidge(n=args.examples, d=args.dim, m=50)
    rows, condition = measure(problem)
    print(f"weighted ridge: n={problem.n}, d={problem.d}, Hessian condition number {condition:.1f}")
    print("| solver | K / iterations | relative error |\n|---|---|---|")
    for r in rows:
        print(f"| {r['solver']} | {r['steps']} | {r['relative_error']:.2e} |")
    net = real_network()
    print(f"\nsmall real network (MLP + JTDS on digits, 3 epochs): Hessian eigenvalues "
          f"lambda_max {net['lambda_max']:.3g}, lambda_min {net['lambda_min']:.3g}; "
          f"references: CG {net['cg_iterations']} iterations on (H + mu I) x = v")
    ks = list(net["references"][0]["cosine_vs_neumann"])
    print("| damping mu | value | CG residual | CG vs damped Neumann-2000 | CG half vs full | "
          + " | ".join(f"Neumann K={k}" for k in ks) + " |")
    print("|---" * (5 + len(ks)) + "|")
    for r in net["references"]:
        print(f"| {r['damping']} | {r['mu']:.3g} | {r['cg_relative_residual']:.1e} | "
              f"{_show(r['cosine_cg_vs_damped_neumann_2000'])} | {r['cosine_cg_half_vs_full']:.3f} | "
              + " | ".join(f"{r['cosine_vs_neumann'][k]:.3f}" for k in ks) + " |")
    print("\nthe same, cosine of the H^-1 v solves themselves (in parameter space, before the mixed "
          "derivative maps them to the scheduler's parameters)")
    print("| damping mu | " + " | ".join(f"Neumann K={k}" for k in ks) + " |")
    print("|---" * (1 + len(ks)) + "|")
    for r in net["references"]:
        print(f"| {r['damping']} | " + " | ".join(f"{r['solve_cosine_vs_neumann'][k]:.3f}" for k in ks) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"condition_number": condition, "rows": rows, "real_network": net}, f, indent=2)


if __name__ == "__main__":
    main()
