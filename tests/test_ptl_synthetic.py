"""apps.ptl_synthetic: seed 004's synthetic experiment (Sec. 5.1, Eq. 17, Fig. 3).

Eq. 17's numpy gradients against finite differences, the true Pareto front's parametrisation,
Pareto-MTL's module-level weights on raw gradients against a generic QP, and one tiny run of
the binary as a user starts it: MOOMTL ends on the Pareto set, PTL with C1 = 0 at the target's
optimum, the mean final target loss falls as C1 shrinks, C2 changes nothing, files written."""

import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from absl import app as absl_app
from scipy.optimize import minimize

from apps import ptl_synthetic as ps
from tfaux.strategies import pareto_mtl


def test_eq17_gradients_match_central_differences():
    rng = np.random.default_rng(0)
    x = rng.uniform(-0.6, 0.6, (3, 7))
    losses, grads = ps.eq17(x)
    assert losses.shape == (3, 2) and grads.shape == (3, 2, 7)
    h = 1e-6
    for i in range(7):
        step = np.zeros(7)
        step[i] = h
        numeric = (ps.eq17(x + step)[0] - ps.eq17(x - step)[0]) / (2 * h)
        np.testing.assert_allclose(grads[:, :, i], numeric, rtol=1e-6, atol=1e-10)
    a = np.full(7, 1 / np.sqrt(7))
    np.testing.assert_allclose(ps.eq17(a)[0], [0.0, 1 - np.exp(-4.0)], atol=1e-15)  # l1's optimum


def test_pareto_front_is_the_segment_between_the_two_optima():
    n = 9
    t = np.linspace(-1, 1, 201)
    x = t[:, None] * np.full(n, 1 / np.sqrt(n))
    np.testing.assert_allclose(ps.eq17(x)[0], ps.pareto_front(201), atol=1e-12)
    np.testing.assert_allclose(ps.distance_to_pareto_set(x), 0.0, atol=1e-12)
    # beyond the end t = 1 (x = 2 a): the distance to that end, ||a|| = 1
    assert ps.distance_to_pareto_set(2.0 * np.full(n, 1 / np.sqrt(n))) == pytest.approx(1.0)
    # at a Pareto point g1 and g2 are anti-parallel
    _, g = ps.eq17(x[50])
    assert g[0] @ g[1] == pytest.approx(-np.linalg.norm(g[0]) * np.linalg.norm(g[1]))


def _simplex_qp(gram):
    n = len(gram)
    return minimize(lambda b: b @ gram @ b, np.full(n, 1 / n), jac=lambda b: 2 * gram @ b, method="SLSQP",
                    bounds=[(0, 1)] * n, constraints=[{"type": "eq", "fun": lambda b: b.sum() - 1}],
                    options={"ftol": 1e-15, "maxiter": 1000}).x


def test_pareto_mtl_weights_on_raw_gradients_match_a_generic_qp():
    """Stage 2 with active constraints: beta over [g1, g2, grad G_j], w = 2 w / sum |w|;
    stage 1 (warmup): the min-norm point over the active grad G_j, unnormalised."""
    u = pareto_mtl.preference_vectors(2, 5)
    x = np.random.default_rng(1).uniform(-0.6, 0.6, 6)
    losses, g = ps.eq17(x + 0.5 / np.sqrt(6))  # l1 < l2: aligned with u_3 / u_4
    p = 0
    active = (u - u[p]) @ losses > 0
    assert active.sum() >= 2
    rows = np.concatenate([np.eye(2), (u - u[p])[active]])
    w = rows.T @ _simplex_qp(rows @ g @ g.T @ rows.T)
    w = 2 * w / np.abs(w).sum()
    prefs = tf.constant(u, tf.float64)
    got = pareto_mtl.pareto_mtl_weights(tf.constant(g @ g.T), tf.constant(losses), p, prefs, False)
    np.testing.assert_allclose(got.numpy(), w, atol=1e-6)
    rows = (u - u[p])[active]
    w1 = rows.T @ _simplex_qp(rows @ g @ g.T @ rows.T)
    got1 = pareto_mtl.pareto_mtl_weights(tf.constant(g @ g.T), tf.constant(losses), p, prefs, True)
    np.testing.assert_allclose(got1.numpy(), w1, atol=1e-6)
    np.testing.assert_array_equal(pareto_mtl.active_constraints(tf.constant(losses), prefs, p).numpy(), active)


def test_list_flags_are_checked():
    assert ps._floats("c1_values", ["0", "0.5"]) == [0.0, 0.5]
    for name, values, high in (("c1_values", ["-1"], None), ("scalar_weights", ["1.5"], 1.0),
                               ("c2_values", ["a"], None), ("c1_values", [], None)):
        with pytest.raises(absl_app.UsageError, match=name):
            ps._floats(name, values, 0.0, high)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ptl_synthetic")
    c1 = ["1", "0.7", "0.6", "0.5", "0.3", "0"]
    cmd = [sys.executable, "-m", "apps.ptl_synthetic", f"--output_dir={out}", "--dim=6", "--starts=6",
           "--steps=120", "--lr=0.25", f"--c1_values={','.join(c1)}", "--c2_values=0,1",
           "--scalar_weights=0,0.5,1", "--num_preferences=2", "--seed=3"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(out / "results.json") as f:
        return out, json.load(f), [float(c) for c in c1]


def test_tiny_run_writes_its_files(tiny_run):
    out, results, _ = tiny_run
    assert (out / "pareto_front.png").stat().st_size > 10_000
    text = (out / "summary.md").read_text()
    assert "mean final l1 per C1" in text and "identical points" in text
    methods = results["methods"]
    assert [len(methods[m]) for m in ps.METHODS] == [3, 1, 2, 12]
    for entries in methods.values():
        for e in entries:
            assert np.array(e["final_losses"]).shape == (6, 2)
    assert np.array(results["starts"]).shape == (6, 6)


def test_moomtl_ends_on_the_pareto_set(tiny_run):
    _, results, _ = tiny_run
    (moomtl,) = results["methods"]["moomtl"]
    assert max(moomtl["distance_to_pareto_set"]) < 1e-3
    front = ps.pareto_front(20001)
    gap = [np.min(np.linalg.norm(front - f, axis=1)) for f in moomtl["final_losses"]]
    assert max(gap) < 1e-3


def test_ptl_target_loss_falls_with_c1_and_c2_changes_nothing(tiny_run):
    _, results, c1s = tiny_run
    ptl = results["methods"]["ptl"]
    assert results["ptl_c2_max_difference"] == 0.0
    by_c1 = {}
    for e in ptl:
        by_c1.setdefault(e["c1"], []).append(e)
    for entries in by_c1.values():  # C2 = 0 and C2 = 1: the same end points
        np.testing.assert_array_equal(entries[0]["final_losses"], entries[1]["final_losses"])
    mean_l1 = np.array([by_c1[c][0]["mean_l1"] for c in c1s])  # C1 from 1 down to 0
    assert np.all(np.diff(mean_l1) <= 1e-9), mean_l1
    assert mean_l1[0] - mean_l1[-1] > 0.3, mean_l1
    assert max(np.array(by_c1[0.0][0]["final_losses"])[:, 0]) < 1e-4  # C1 = 0: the target's optimum
    np.testing.assert_allclose(by_c1[1.0][0]["final_losses"], results["methods"]["moomtl"][0]["final_losses"],
                               atol=1e-9)  # C1 = 1: MOOMTL


def test_without_constraint10_c2_bends_the_update_towards_the_target(tmp_path):
    """The exact dual of the primal (11) (no constraint (10)): C2 > 0 lets the privileged weight
    go negative, so the same C1 ends with a lower target loss than with C2 = 0."""
    results = ps.run(str(tmp_path), dim=6, starts=6, steps=120, lr=0.25, c1_values=[0.5], c2_values=[0.0, 1.0],
                     scalar_weights=[0.5], num_preferences=2, seed=3, log=lambda *a: None, constraint10=False,
                     init_range=1.5)  # starts far enough out that the gradients align and lambda_2 < 0 is optimal
    c2_0, c2_1 = results["methods"]["ptl"]
    assert results["config"]["constraint10"] is False and results["ptl_c2_max_difference"] > 1e-2
    assert c2_1["mean_l1"] < c2_0["mean_l1"] - 1e-3 and c2_1["mean_l2"] > c2_0["mean_l2"] + 1e-3
    assert "Without constraint (10)" in (tmp_path / "summary.md").read_text()
