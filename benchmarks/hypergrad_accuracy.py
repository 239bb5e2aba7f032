"""Hypergradient accuracy: a closed-form problem and a small real network.

1. Weighted ridge (closed form): relative error of the implicit hypergradient vs central
   finite differences of L_dev(theta*(phi)), for the Neumann series (K terms, two step
   sizes alpha) and conjugate gradient (iterations).
2. A small real network (MLP encoder, JTDS, real digits with the rotation task, trained a
   few epochs first): cosine similarity and relative difference between the hypergradient
   of `model.hypergradient` with Neumann K terms (alpha = the lower learning rate, as
   the reference code) and with 100 CG iterations, on the same batches.

Run: python -m benchmarks.hypergrad_accuracy
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


def real_network(terms=(1, 3, 10, 50), cg_iterations=100, epochs=3, seed=0):
    """Rows {solver, steps, cosine_vs_cg, relative_difference_vs_cg} on a trained MLP + JTDS."""
    import keras

    import pipelines
    import tfaux
    from tfaux import models

    keras.utils.set_random_seed(seed)
    data = pipelines.load("digits", setting=pipelines.Setting(dev_size=100, seed=seed))
    model = tfaux.AuxiliaryModel(models.mlp_encoder(), data.tasks, tfaux.strategies.get("jtds"),
                                 input_spec=data.input_spec, num_examples=data.num_train, upper_interval=5,
                                 upper_clipnorm=None)
    model.compile(optimizer=keras.optimizers.SGD(0.05), upper_optimizer=keras.optimizers.Adam(1e-2))
    model.fit(data.train_with_dev(64, 64), epochs=epochs, verbose=0)
    pair = next(iter(data.train_with_dev(256, 100)))

    def hyper(solver):
        model.solver = solver
        g, _, _ = model.hypergradient(pair["train"], pair["dev"])
        return np.concatenate([np.ravel(x.numpy()) for x in g])

    reference = hyper(hypergrad.ConjugateGradient(iterations=cg_iterations))
    rows = []
    for k in terms:
        g = hyper(hypergrad.Neumann(terms=k))
        cosine = float(g @ reference / (np.linalg.norm(g) * np.linalg.norm(reference)))
        rows.append({"solver": "neumann alpha=lr", "steps": k, "cosine_vs_cg": cosine,
                     "relative_difference_vs_cg": relative_error(g, reference)})
    for it in (10, 25, 50):  # is the reference itself converged?
        g = hyper(hypergrad.ConjugateGradient(iterations=it))
        cosine = float(g @ reference / (np.linalg.norm(g) * np.linalg.norm(reference)))
        rows.append({"solver": "cg", "steps": it, "cosine_vs_cg": cosine,
                     "relative_difference_vs_cg": relative_error(g, reference)})
    return rows


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
    print("\nsmall real network (MLP + JTDS on digits, 3 epochs), reference: CG 100 iterations")
    print("| solver | K | cosine vs CG | relative difference |\n|---|---|---|---|")
    for r in net:
        print(f"| {r['solver']} | {r['steps']} | {r['cosine_vs_cg']:.3f} | {r['relative_difference_vs_cg']:.2e} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"condition_number": condition, "rows": rows, "real_network": net}, f, indent=2)


if __name__ == "__main__":
    main()
