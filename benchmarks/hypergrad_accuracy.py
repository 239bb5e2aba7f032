"""Hypergradient accuracy on the closed-form weighted ridge problem.

Relative error of the implicit hypergradient vs central finite differences of
L_dev(theta*(phi)), for the Neumann series (K terms, two step sizes alpha) and
conjugate gradient (iterations). Run: python -m benchmarks.hypergrad_accuracy
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
        for k in (0, 1, 3, 5, 10, 20, 50):
            err = relative_error(hypergradient(problem, hypergrad.Neumann(terms=k), alpha), reference)
            rows.append({"solver": f"neumann alpha={name}", "steps": k, "relative_error": err})
    for it in (1, 2, 3, 5, 10):
        err = relative_error(hypergradient(problem, hypergrad.ConjugateGradient(iterations=it)), reference)
        rows.append({"solver": "cg", "steps": it, "relative_error": err})
    return rows, float(eig.max() / eig.min())


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
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"condition_number": condition, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
