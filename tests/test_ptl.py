"""PTL (seed 004) in the model: its update against numpy closed forms, its reduction to MGDA,
and the effect of C1 on the synthetic problem of Eq. 17."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfaux
from tfaux.solvers import privileged_combination
from tfaux.strategies.mgda import MGDA
from tfaux.strategies.ptl import PTL

import toy
from test_mgda import LR, _applied_gradient, _batch, _linear_model, _numpy_gradients, _two_task_alpha


@pytest.mark.parametrize("space", ["parameters", "representation"])
@pytest.mark.parametrize("c1", [0.0, 0.05, 1.0])
def test_two_task_update_is_the_capped_closed_form(space, c1):
    """One target, one privileged task: lam_p = min(MGDA's closed-form weight of the privileged
    task, C1) (Eq. 7: 0 <= alpha_p <= C1); the shared update is (1 - lam_p) g_t + lam_p g_p on
    W (also with space="representation": alpha from dZ, the update x^T of the combination);
    every head, the privileged one included, takes its own gradient (Alg. 1)."""
    model = _linear_model(PTL(c1=c1, space=space))
    batch = _batch()
    grads = _numpy_gradients(model, batch)
    source = grads["dw"] if space == "parameters" else grads["dz"]
    free = 1.0 - _two_task_alpha(*source)  # MGDA's weight of the privileged (second) task
    assert 0.1 < free < 0.9, free  # so that C1 = 0.05 binds and C1 = 1 does not
    lam = min(free, c1)
    applied = _applied_gradient(model, batch)
    np.testing.assert_allclose(applied[0], (1 - lam) * grads["dw"][0] + lam * grads["dw"][1], atol=2e-6)
    for got, want in zip(applied[1:], grads["heads"][0] + grads["heads"][1]):
        np.testing.assert_allclose(got, want, atol=2e-6)


def _outrunning_linear_model(strategy):
    """The linear toy with the privileged head set to twice the target's logit margin and the
    same labels: both per-example dL/dZ point along a_1 - a_0, the privileged one larger, so
    <g_t, g_p> > ||g_t||^2 (no conflict: the case where the direction correction acts)."""
    model = _linear_model(strategy)
    (a, a0), (b, b0) = model.theta.heads
    b.assign(2.0 * (a[:, 1:2] - a[:, 0:1]))
    b0.assign(2.0 * (a0[1:2] - a0[0:1]))
    batch = _batch()
    batch["labels"]["aux"] = batch["labels"]["main"].astype("float32")
    return model, batch


@pytest.mark.parametrize("space", ["parameters", "representation"])
def test_constraint10_false_bends_the_update_away_from_the_privileged_task(space):
    """constraint10=False (the exact dual of Problem (11)), one target, one privileged task:
    lam_p = clip(s / ||g_t - g_p||^2, -C2, min(C1, 1)), s = ||g_t||^2 - <g_t, g_p> (numpy, on
    the numpy gradients of W or Z), here s < 0 and C2 binds: lam_p = -C2. The shared update is
    (1 - lam_p) g_t + lam_p g_p; the default (Eq. 12 with (10)) gives lam_p = 0, i.e. g_t."""
    c1, c2 = 0.5, 0.2
    applied = {}
    for constraint10 in (False, True):
        model, batch = _outrunning_linear_model(PTL(c1=c1, c2=c2, space=space, constraint10=constraint10))
        grads = _numpy_gradients(model, batch)
        g_t, g_p = (np.ravel(x) for x in (grads["dw"] if space == "parameters" else grads["dz"]))
        s = g_t @ g_t - g_t @ g_p
        free = s / np.sum((g_t - g_p) ** 2)
        assert free < -2 * c2, free  # the correction binds at -C2
        lam = np.clip(free, -c2 if not constraint10 else 0.0, min(c1, 1.0))
        applied[constraint10] = _applied_gradient(model, batch)
        np.testing.assert_allclose(applied[constraint10][0], (1 - lam) * grads["dw"][0] + lam * grads["dw"][1],
                                   atol=2e-6)
        for got, want in zip(applied[constraint10][1:], grads["heads"][0] + grads["heads"][1]):
            np.testing.assert_allclose(got, want, atol=2e-6)
    np.testing.assert_allclose(applied[True][0], grads["dw"][0], atol=2e-6)
    assert np.abs(applied[False][0] - applied[True][0]).max() > 0.1 * np.abs(applied[True][0]).max()


def test_without_privileged_tasks_ptl_is_mgda():
    """Two targets and no privileged task (C1 = C2 = 0): exactly MGDA's update."""
    tasks = [tfaux.Task("main", role="primary", num_classes=2), tfaux.Task("aux", role="primary", kind="binary")]
    applied = []
    for strategy in (PTL(c1=0.0, c2=0.0, space="parameters"), MGDA()):
        keras.utils.set_random_seed(5)
        model = tfaux.AuxiliaryModel(keras.Sequential([keras.layers.Dense(8, activation="tanh")]), tasks, strategy,
                                     tf.TensorSpec((toy.DIM,), tf.float32))
        model.compile(optimizer=keras.optimizers.SGD(LR))
        applied.append(_applied_gradient(model, _batch()))
    for a, b in zip(*applied):
        np.testing.assert_allclose(a, b, atol=1e-6)


def _eq17(x):
    """Seed 004, Eq. 17: l1 = 1 - exp(-||x - 1/sqrt(n)||^2), l2 = 1 - exp(-||x + 1/sqrt(n)||^2),
    and their gradients, in numpy."""
    n = x.size
    losses, grads = [], []
    for sign in (1.0, -1.0):
        r = x - sign / np.sqrt(n)
        e = np.exp(-r @ r)
        losses.append(1.0 - e)
        grads.append(2.0 * r * e)
    return np.array(losses), np.stack(grads)


def test_a_smaller_c1_ends_closer_to_the_targets_optimum_on_eq17():
    """From one start, 60 steps along PTL's direction (target l1, privileged l2) for a grid
    of C1: the target's final loss falls monotonically as C1 shrinks (and the privileged one
    rises); C1 = 0 reaches the target's optimum, C1 = 1 is MGDA (which stops at the front)."""
    start = np.random.default_rng(0).normal(scale=0.3, size=10)
    finals = []
    for c1 in (1.0, 0.5, 0.3, 0.1, 0.0):
        x = start.copy()
        for _ in range(60):
            _, g = _eq17(x)
            _, d = privileged_combination(tf.constant(g), [True, False], c1)
            x = x - 0.5 * d.numpy()
        finals.append(_eq17(x)[0])
    target, privileged = np.array(finals).T
    assert np.all(np.diff(target) < 0) and np.all(np.diff(privileged) > 0), finals
    assert target[-1] < 1e-3, target


def test_ptl_refuses_negative_bounds():
    with pytest.raises(ValueError, match="c1"):
        PTL(c1=-0.1)
    with pytest.raises(ValueError, match="finite c2"):
        PTL(c2=float("inf"), constraint10=False)


def test_ptl_config_records_constraint10():
    assert PTL().get_config()["constraint10"] is True
    config = PTL(c1=0.1, c2=0.8, constraint10=False).get_config()
    assert (config["c1"], config["c2"], config["constraint10"]) == (0.1, 0.8, False)


def test_with_roles_picks_targets_and_privileged_tasks_by_name():
    tasks = [tfaux.Task("a", role="primary"), tfaux.Task("b"), tfaux.Task("c", kind="regression"),
             tfaux.Task("s", kind="soft", num_classes=3)]
    got = tfaux.tasks.with_roles(tasks, ["c", "b"])
    assert [(t.name, t.role) for t in got] == [("c", "primary"), ("b", "primary"), ("a", "auxiliary"),
                                              ("s", "auxiliary")]
    assert [t.name for t in tfaux.tasks.with_roles(tasks, [], ["c"])] == ["a", "c"]  # others dropped
    assert tfaux.tasks.with_roles(tasks, []) == tasks
    for targets, privileged, words in [(["x"], None, r"unknown task names \['x'\]"), (["a"], ["a"], "repeated"),
                                       (["s"], None, "cannot be a target")]:
        with pytest.raises(ValueError, match=words):
            tfaux.tasks.with_roles(tasks, targets, privileged)


def test_the_app_trains_ptl_with_chosen_targets(tmp_path, parse):
    from apps import experiment
    metrics = experiment.run(parse("--method=ptl", "--target_tasks=rotation,label", "--epochs=1", "--batch_size=128",
                                   "--verbose=0", f"--output_dir={tmp_path}"))
    assert metrics["targets"] == ["rotation", "label"] and "mean of the 2 targets" in metrics["selection"]
    assert set(metrics["test_metrics"]) >= {"rotation_accuracy", "label_accuracy"}
    with pytest.raises(SystemExit) as stop:
        experiment.main_with_errors(parse("--method=ptl", "--target_tasks=nosuch", f"--output_dir={tmp_path}/x"))
    assert "--target_tasks" in str(stop.value) and "nosuch" in str(stop.value)
