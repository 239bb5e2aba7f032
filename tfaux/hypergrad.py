"""Implicit hypergradients for bi-level problems (implicit function theorem).

    phi* = argmin_phi L_up(theta*(phi), phi),   theta*(phi) = argmin_theta L_t(theta, phi)
    dL_up/dphi = d_phi L_up - grad_theta L_up . H^{-1} . grad_phi grad_theta L_t,   H = grad^2_theta L_t

The direct term d_phi L_up is zero when the upper objective is a plain dev loss; it is
added whenever the upper objective depends on phi itself (e.g. a regulariser of generated
labels).
H^{-1} v is approximated by a truncated Neumann series or by conjugate gradient;
`exact_inverse_hvp` forms H densely (small problems, tests only).

Scaling convention: `Neumann` returns alpha * sum_{j=0..K} (I - alpha H)^j v, the
mathematically correct approximation of H^{-1} v. The AuxiLearn/JTDS reference code
omits the leading alpha, so its hypergradients are 1/alpha times larger than ours;
AuxiliaryModel feeds its upper optimizer that reference scale (tfaux.upper), so the
papers' learning rates and clip norms apply as published.

Hessian-vector products are double-backward products from one persistent nested
tape, so the training loss and its gradient are computed once per upper step. With
`chunks=N > 1` each product (and the mixed term) is instead the mean over N interleaved
sub-batches (rows c, c + N, ...) of that sub-batch's own product, recomputed one sub-batch
at a time, outside replica functions in one sequential while loop over the solver's steps,
the sub-batches and the mixed term (one copy of the product's graph, over theta and phi): the
upper step's tensors shrink about N-fold, for one more gradient per product. It is exact when
the training objective is a mean of per-example terms and N divides the batch; a batch-coupled
layer (BatchNorm) or statistic (JTDS' loss z-scores) then uses each sub-batch's own statistics.
"""

import dataclasses

import keras
import tensorflow as tf


def zeros_for_none(grads, variables):
    """Gradients as tensors, with zeros for variables the target does not depend on."""
    return [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g) for g, v in zip(grads, variables)]


def _dot(xs, ys):
    return tf.add_n([tf.reduce_sum(x * y) for x, y in zip(xs, ys)])


class IterativeSolver:
    """An inverse-Hessian-vector solver as a state machine: `start(v, alpha)`, then `steps` times
    u = `vector(state)`, state = `update(state, H u, alpha)`; `result(state, alpha)` ~= H^{-1} v.
    Calling it runs the steps with `hvp`; the sub-batched path drives the state machine itself
    (one flat while loop over steps x sub-batches)."""

    steps = 0

    def get_config(self):
        """The solver's fields (a subclass is a frozen dataclass), for Keras serialization."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def resolve_alpha(self, alpha):
        return alpha

    def __call__(self, hvp, v, alpha=None):
        alpha = self.resolve_alpha(alpha)
        state = self.start(v, alpha)
        for _ in range(self.steps):
            state = self.update(state, hvp(self.vector(state)), alpha)
        return self.result(state, alpha)


@keras.saving.register_keras_serializable(package="tfaux")
@dataclasses.dataclass(frozen=True)
class Neumann(IterativeSolver):
    """H^{-1} v ~= alpha * sum_{j=0..K} (I - alpha H)^j v  (Lorraine et al. 2020).

    Converges when 0 < alpha < 2 / lambda_max(H); `alpha=None` lets the caller
    pick it (AuxiliaryModel passes the lower learning rate, like the reference code).
    """

    terms: int = 3
    alpha: float | None = None

    @property
    def steps(self):
        return self.terms

    def resolve_alpha(self, alpha):
        alpha = self.alpha if self.alpha is not None else alpha  # the solver's own alpha wins
        if alpha is None:
            raise ValueError("Neumann needs alpha (the series step size).")
        return alpha

    def start(self, v, alpha):
        return list(v), list(v)  # the current term (I - alpha H)^j v and the running sum

    def vector(self, state):
        return state[0]

    def update(self, state, hv, alpha):
        term, total = state
        term = [t - alpha * h for t, h in zip(term, hv)]
        return term, [s + t for s, t in zip(total, term)]

    def result(self, state, alpha):
        return [alpha * s for s in state[1]]


@keras.saving.register_keras_serializable(package="tfaux")
@dataclasses.dataclass(frozen=True)
class ConjugateGradient(IterativeSolver):
    """Solve (H + damping I) x = v by `iterations` steps of conjugate gradient."""

    iterations: int = 20
    damping: float = 0.0
    tolerance: float = 1e-20

    @property
    def steps(self):
        return self.iterations

    def start(self, v, alpha):
        return [tf.zeros_like(t) for t in v], list(v), list(v), _dot(v, v)  # x, residual r, direction p, r.r

    def vector(self, state):
        return state[2]

    def update(self, state, hv, alpha):
        x, r, p, rs = state
        ap = [h + self.damping * pi for h, pi in zip(hv, p)]
        pap = _dot(p, ap)
        active = tf.logical_and(rs > self.tolerance, tf.abs(pap) > 0.0)
        size = tf.where(active, rs / tf.where(active, pap, 1.0), 0.0)
        x = [xi + size * pi for xi, pi in zip(x, p)]
        r = [ri - size * api for ri, api in zip(r, ap)]
        rs_new = _dot(r, r)
        beta = tf.where(active, rs_new / tf.where(active, rs, 1.0), 0.0)
        return x, r, [ri + beta * pi for ri, pi in zip(r, p)], rs_new

    def result(self, state, alpha):
        return state[0]


def exact_inverse_hvp(hvp, v):
    """H^{-1} v with H built column by column from HVPs (small problems only)."""
    shapes = [t.shape for t in v]
    sizes = [int(tf.size(t)) for t in v]
    n = sum(sizes)

    def unflat(flat):
        parts = tf.split(flat, sizes)
        return [tf.reshape(p, s) for p, s in zip(parts, shapes)]

    def flat(ts):
        return tf.concat([tf.reshape(t, [-1]) for t in ts], 0)

    eye = tf.eye(n, dtype=v[0].dtype)
    columns = [flat(hvp(unflat(eye[i]))) for i in range(n)]
    hessian = tf.stack(columns, axis=1)
    solution = tf.linalg.solve(hessian, tf.reshape(flat(v), [-1, 1]))
    return unflat(tf.reshape(solution, [-1]))


def interleaved_rows(batch, chunk, chunks):
    """Rows chunk, chunk + chunks, chunk + 2 chunks, ... of every tensor of `batch`. Interleaving
    (not contiguous blocks) keeps a chunk the same rows of the global batch on any number of
    replicas whose local batch `chunks` divides."""
    return tf.nest.map_structure(lambda t: t[chunk::chunks], batch)


def _chunk_product(train_loss_fn, train_batch, theta, chunks):
    """(c, u, wrt) -> (grad_wrt grad_theta L_t(sub-batch c)) u, from the sub-batch's own nested
    tape, so no tape outlives one sub-batch's product."""

    def product(c, u, wrt):
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                loss = train_loss_fn(interleaved_rows(train_batch, c, chunks))
            grad = zeros_for_none(inner.gradient(loss, theta), theta)
        return zeros_for_none(outer.gradient(grad, wrt, output_gradients=u), wrt)

    return product


def _chunk_mean(product, chunks):
    """(1/chunks) sum_c product(c), unrolled."""
    total = product(0)
    for c in range(1, chunks):
        total = [a + b for a, b in zip(total, product(c))]
    return [t / float(chunks) for t in total]


def _mixed_in_chunks(solver, product, v, alpha, chunks, reduce, loop, theta, phi):
    """grad_phi grad_theta L_t . H^{-1} v with H u = reduce((1/chunks) sum_c H_c u) and the mixed product
    averaged over the sub-batches too. With `loop`, one sequential while loop runs the solver's
    steps x chunks sub-batch products and then the chunks mixed products: every iteration is the
    same product over theta and phi (one copy of its graph; the phi part is discarded while solving,
    the theta part after), and the solver's state is updated after each step's last chunk. While
    loops must not nest: TensorFlow's add-ops rewrite then fails in some models."""
    if not isinstance(solver, IterativeSolver):
        raise ValueError("Sub-batched Hessian-vector products need an IterativeSolver (Neumann or "
                         f"ConjugateGradient), got {type(solver).__name__}.")
    if not loop:
        inverse = solver(lambda u: reduce(_chunk_mean(lambda c: product(c, u, theta), chunks)), v, alpha)
        inverse = [tf.stop_gradient(t) for t in inverse]
        return _chunk_mean(lambda c: product(c, inverse, phi), chunks)
    alpha = solver.resolve_alpha(alpha)
    solving_steps = solver.steps * chunks
    wrt = list(theta) + list(phi)

    def body(i, acc, mixed, *state):
        solving = i < solving_steps
        u = [tf.stop_gradient(tf.where(solving, a, b))
             for a, b in zip(solver.vector(state), solver.result(state, alpha))]
        grads = product(i % chunks, u, wrt)
        acc = [a + tf.where(solving, h, 0.0) for a, h in zip(acc, grads[:len(theta)])]
        mixed = [m + tf.where(solving, 0.0, g) for m, g in zip(mixed, grads[len(theta):])]
        last = tf.logical_and(solving, tf.equal(i % chunks, chunks - 1))
        state = tf.cond(last, lambda: tuple(solver.update(state, reduce([a / float(chunks) for a in acc]), alpha)),
                        lambda: tuple(state))
        return (i + 1, [tf.where(last, tf.zeros_like(a), a) for a in acc], mixed, *state)

    start = (tf.constant(0), [tf.zeros_like(t) for t in v], [tf.zeros_like(p) for p in phi], *solver.start(v, alpha))
    mixed = tf.while_loop(lambda i, *_: i < solving_steps + chunks, body, start, parallel_iterations=1)[2]
    return [m / float(chunks) for m in mixed]


def dev_gradient(dev_loss_fn, theta, phi, reduce=lambda xs: xs):
    """(v, direct, dev loss): v = reduce(grad_theta L_dev), the all-replica right-hand side of the
    solve, and direct = d_phi L_dev, this replica's contribution."""
    with tf.GradientTape() as tape:
        dev_loss = dev_loss_fn()
    grads = tape.gradient(dev_loss, list(theta) + list(phi))
    return reduce(zeros_for_none(grads[:len(theta)], theta)), zeros_for_none(grads[len(theta):], phi), dev_loss


def hypergradient_on_tape(outer, grad_theta, theta, phi, v, direct, solver, alpha=None, reduce=lambda xs: xs):
    """direct - v^T H^{-1} grad_phi grad_theta L_t, given grad_theta = grad_theta L_t computed on the
    persistent tape `outer` (the exact path: every product a double backward through that tape)."""

    def hvp(u):
        return reduce(zeros_for_none(outer.gradient(grad_theta, theta, output_gradients=u), theta))

    # Unrolled: in a while loop, BatchNorm's double backward makes oneDNN log an error-level notice.
    inverse_hvp = [tf.stop_gradient(t) for t in solver(hvp, v, alpha=alpha)]
    mixed = zeros_for_none(outer.gradient(grad_theta, phi, output_gradients=inverse_hvp), phi)
    return [d - m for d, m in zip(direct, mixed)]


def implicit_hypergradient(train_loss_fn, dev_loss_fn, theta, phi, solver, alpha=None,
                           reduce=lambda xs: xs, train_batch=None, chunks=1):
    """d_phi L_dev - (grad_theta L_dev)^T H^{-1} grad_phi grad_theta L_t, for the variables `phi`.

    train_loss_fn / dev_loss_fn: callables reading the current variables; with `train_batch`,
    train_loss_fn takes the batch (or a sub-batch of it) as its argument.
    chunks: sub-batches each Hessian-vector product is averaged over (module docstring);
    needs `train_batch`.
    theta: variables the Hessian is taken over; phi: the outer variables.
    reduce: sums a list of tensors over replicas. The dev gradient and every HVP
    are reduced (so all replicas solve the same system); the returned gradient is
    this replica's contribution and still has to be summed by the caller.
    Returns (hypergradient list aligned with phi, this replica's dev loss).
    """
    v, direct, dev_loss = dev_gradient(dev_loss_fn, theta, phi, reduce)
    if chunks > 1:
        if train_batch is None:
            raise ValueError("chunks > 1 needs the training batch (train_batch).")
        loop = not tf.distribute.has_strategy()  # replica functions may not all-reduce inside a while loop
        product = _chunk_product(train_loss_fn, train_batch, theta, chunks)
        mixed = _mixed_in_chunks(solver, product, v, alpha, chunks, reduce, loop, theta, phi)
        return [d - m for d, m in zip(direct, mixed)], dev_loss

    with tf.GradientTape(persistent=True) as outer:
        with tf.GradientTape() as inner:
            train_loss = train_loss_fn() if train_batch is None else train_loss_fn(train_batch)
        grad_theta = zeros_for_none(inner.gradient(train_loss, theta), theta)
    hyper = hypergradient_on_tape(outer, grad_theta, theta, phi, v, direct, solver, alpha, reduce)
    del outer
    return hyper, dev_loss
