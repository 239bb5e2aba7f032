"""Per-task gradients for gradient-space methods (MGDA, PCGrad, GCS, GradNorm, ...), one copy.

Task k's batch objective is L_k = (1/B) sum_i m_ik l_ik over the all-replica batch of B
examples; each replica computes its share, so a gradient summed across replicas
(`distribute.replica_sum`) is the full-batch one. Call these helpers from
`Strategy.lower_gradients` of a strategy with `persistent_tape = True` (one backward pass
per task on the same tape).
"""

import tensorflow as tf

from tfaux import distribute
from tfaux.hypergrad import zeros_for_none


def task_objectives(tape, context):
    """[L_k for every task]: this replica's share of each task's batch loss, recorded on `tape`.
    Each L_k is built from task k's own loss vector, so its gradient runs through head k only
    (from a column of the stacked matrix, zeros would flow back through every other head)."""
    with tape:  # keep recording, so each L_k is differentiable
        return [tf.reduce_sum(l * context.masks[:, k]) / context.global_batch
                for k, l in enumerate(context.live_task_losses)]


def gradients(tape, target, variables):
    """d target / d variables, zeros where the target does not depend on a variable."""
    return zeros_for_none(tape.gradient(target, variables), variables)


def shared_gradients(tape, objectives, variables, tasks):
    """[[dL_k/dshared] for k in tasks]: this replica's share."""
    return [gradients(tape, objectives[k], variables.shared) for k in tasks]


def representation_gradients(tape, objectives, context, tasks):
    """[dL_k/dZ_k for k in tasks], Z_k the live shared representation task k reads ([B, d];
    MGDA-UB's cheap gradients, one backward pass through task k's head only)."""
    out = []
    for k in tasks:
        z = context.representations[context.task_keys[k]]
        out.append(zeros_for_none([tape.gradient(objectives[k], z)], [z])[0])
    return out


def flat(grads):
    """One vector of a list of gradient tensors."""
    return tf.concat([tf.reshape(g, [-1]) for g in grads], 0)


def unflat(vector, like):
    """Split a vector back into tensors shaped like `like`."""
    sizes = [tf.size(v) for v in like]
    return [tf.reshape(p, tf.shape(v)) for p, v in zip(tf.split(vector, sizes), like)]


def gram(vectors):
    """G_jk = g_j . g_k of the all-replica gradients, given each replica's share of them.
    For per-example representation gradients (rows of different examples) the sum of the
    replicas' Grams is the exact one; for parameter gradients use `replica_flat` first."""
    stacked = tf.stack([tf.reshape(v, [-1]) for v in vectors])
    return distribute.replica_sum(tf.matmul(stacked, stacked, transpose_b=True))


def replica_flat(grad_lists):
    """[K, P] matrix of the all-replica flat gradients, from each replica's per-task shares."""
    return distribute.replica_sum(tf.stack([flat(g) for g in grad_lists]))


def regularization_gradients(tape, context, variables):
    """Gradient of the model's regularization losses (added once, whatever the combination)."""
    if isinstance(context.regularization, (int, float)):
        return [tf.zeros_like(v) for v in variables]
    return gradients(tape, context.regularization, variables)


def combined(tape, objectives, context, variables, shared, task_weights=None):
    """Gradients for `variables.trained` of a gradient-space method: `shared` (this replica's
    share of the combined gradient of the shared parameters) plus the regularization's; each
    head k gets w_k dL_k/dhead_k (w_k = task_weights[k], default 1) plus the regularization's;
    the strategy's lower variables get none."""
    reg = regularization_gradients(tape, context, variables.shared)
    out = [s + r for s, r in zip(shared, reg)]
    for k, head in enumerate(variables.heads):
        if not head:
            continue
        g = tape.gradient(objectives[k], head)
        if all(x is None for x in g):  # an inactive head (STL): leave it untouched
            out += list(g)
            continue
        w = 1.0 if task_weights is None else task_weights[k]
        reg = regularization_gradients(tape, context, head)
        out += [w * x + r for x, r in zip(zeros_for_none(g, head), reg)]
    return out + [None] * len(variables.strategy)
