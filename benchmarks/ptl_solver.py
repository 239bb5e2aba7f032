"""PTL's dual QP (seed 004, Eq. 12): tfaux.solvers.privileged_min_norm against a generic solver.

For T tasks (half targets, C1 = 0.17, C2 = 0.5) and random gradients of dimension 512, the
time of one solve (median of --repeats after a warm-up: tf.function tracing excluded) and the
objective 1/2 ||d||^2 reached, next to cvxpy (Clarabel) solving Eq. 12 as written, in
(alpha, beta). cvxpy is a test dependency (`pip install -e ".[test]"`).

    python -m benchmarks.ptl_solver --tasks=2,5,10,20,40,100
"""

import argparse
import statistics
import time

import numpy as np
import tensorflow as tf

from tfaux.solvers import privileged_min_norm


def generic(g, targets, c1, c2):
    """Eq. 12 in (alpha, beta) with cvxpy; returns (seconds, objective)."""
    import cvxpy as cp

    t_idx, p_idx = np.flatnonzero(targets), np.flatnonzero(~targets)
    alpha = cp.Variable(len(targets))
    beta = cp.Variable((len(t_idx), len(p_idx)))
    d = g.T @ alpha + g[t_idx].T @ cp.sum(beta, axis=1) - g[p_idx].T @ cp.sum(beta, axis=0)
    constraints = [cp.sum(alpha) == 1, alpha >= 0, alpha[p_idx] <= c1, beta >= 0, beta <= c2,
                   cp.sum(beta, axis=0) <= alpha[p_idx]]
    problem = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(d)), constraints)
    start = time.perf_counter()
    problem.solve(solver=cp.CLARABEL)
    return time.perf_counter() - start, float(problem.value)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default="2,5,10,20,40,100")
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--c1", type=float, default=0.17)
    p.add_argument("--c2", type=float, default=0.5)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    print(f"dim={args.dim}, half the tasks targets, C1={args.c1}, C2={args.c2}; seconds per solve (median)")
    print("| tasks | tfaux (eager) | tfaux (tf.function) | cvxpy Clarabel | objective tfaux | objective cvxpy |")
    print("|---|---|---|---|---|---|")
    for t in [int(x) for x in args.tasks.split(",")]:
        g = rng.normal(size=(t, args.dim)) * rng.uniform(0.2, 2.0, size=(t, 1))
        targets = np.arange(t) < max(1, t // 2)
        gram = tf.constant(g @ g.T)
        graph = tf.function(lambda m: privileged_min_norm(m, targets, args.c1, args.c2)[2])
        timings = {}
        for name, fn in (("eager", lambda: privileged_min_norm(gram, targets, args.c1, args.c2)[2]),
                         ("graph", lambda: graph(gram))):
            lam = fn()  # warm-up (and tracing)
            runs = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                lam = fn().numpy()
                runs.append(time.perf_counter() - start)
            timings[name] = statistics.median(runs)
        objective = 0.5 * float(np.sum((g.T @ lam) ** 2))
        seconds, reference = generic(g, targets, args.c1, args.c2)
        print(f"| {t} | {timings['eager']:.4f} | {timings['graph']:.4f} | {seconds:.4f} | {objective:.8f} | "
              f"{reference:.8f} |", flush=True)


if __name__ == "__main__":
    main()
