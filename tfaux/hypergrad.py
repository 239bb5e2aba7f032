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
tape, so the training loss and its gradient are computed once per upper step.
"""

import dataclasses

import tensorflow as tf


def zeros_for_none(grads, variables):
    """Gradients as tensors, with zeros for variables the target does not depend on."""
    return [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g) for g, v in zip(grads, variables)]


def _dot(xs, ys):
    return tf.add_n([tf.reduce_sum(x * y) for x, y in zip(xs, ys)])


@dataclasses.dataclass(frozen=True)
class Neumann:
    """H^{-1} v ~= alpha * sum_{j=0..K} (I - alpha H)^j v  (Lorraine et al. 2020).

    Converges when 0 < alpha < 2 / lambda_max(H); `alpha=None` lets the caller
    pick it (AuxiliaryModel passes the lower learning rate, like the reference code).
    """

    terms: int = 3
    alpha: float | None = None

    def __call__(self, hvp, v, alpha=None):
        alpha = self.alpha if self.alpha is not None else alpha  # the solver's own alpha wins
        if alpha is None:
            raise ValueError("Neumann needs alpha (the series step size).")
        term = list(v)
        total = list(v)
        for _ in range(self.terms):
            hv = hvp(term)
            term = [t - alpha * h for t, h in zip(term, hv)]
            total = [s + t for s, t in zip(total, term)]
        return [alpha * s for s in total]


@dataclasses.dataclass(frozen=True)
class ConjugateGradient:
    """Solve (H + damping I) x = v by `iterations` steps of conjugate gradient."""

    iterations: int = 20
    damping: float = 0.0
    tolerance: float = 1e-20

    def __call__(self, hvp, v, alpha=None):
        def op(u):
            return [h + self.damping * x for h, x in zip(hvp(u), u)]

        x = [tf.zeros_like(t) for t in v]
        r = list(v)
        p = list(v)
        rs = _dot(r, r)
        for _ in range(self.iterations):
            ap = op(p)
            pap = _dot(p, ap)
            active = tf.logical_and(rs > self.tolerance, tf.abs(pap) > 0.0)
            step = tf.where(active, rs / tf.where(active, pap, 1.0), 0.0)
            x = [xi + step * pi for xi, pi in zip(x, p)]
            r = [ri - step * api for ri, api in zip(r, ap)]
            rs_new = _dot(r, r)
            beta = tf.where(active, rs_new / tf.where(active, rs, 1.0), 0.0)
            p = [ri + beta * pi for ri, pi in zip(r, p)]
            rs = rs_new
        return x


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


def implicit_hypergradient(train_loss_fn, dev_loss_fn, theta, phi, solver, alpha=None,
                           reduce=lambda xs: xs):
    """d_phi L_dev - (grad_theta L_dev)^T H^{-1} grad_phi grad_theta L_t, for the variables `phi`.

    train_loss_fn / dev_loss_fn: callables reading the current variables.
    theta: variables the Hessian is taken over; phi: the outer variables.
    reduce: sums a list of tensors over replicas. The dev gradient and every HVP
    are reduced (so all replicas solve the same system); the returned gradient is
    this replica's contribution and still has to be summed by the caller.
    Returns (hypergradient list aligned with phi, this replica's dev loss).
    """
    with tf.GradientTape() as dev_tape:
        dev_loss = dev_loss_fn()
    dev_grads = dev_tape.gradient(dev_loss, list(theta) + list(phi))
    v = reduce(zeros_for_none(dev_grads[:len(theta)], theta))
    direct = zeros_for_none(dev_grads[len(theta):], phi)

    with tf.GradientTape(persistent=True) as outer:
        with tf.GradientTape() as inner:
            train_loss = train_loss_fn()
        grad_theta = zeros_for_none(inner.gradient(train_loss, theta), theta)

    def hvp(u):
        return reduce(zeros_for_none(outer.gradient(grad_theta, theta, output_gradients=u), theta))

    inverse_hvp = [tf.stop_gradient(t) for t in solver(hvp, v, alpha=alpha)]
    mixed = outer.gradient(grad_theta, phi, output_gradients=inverse_hvp)
    del outer
    hyper = [d - tf.convert_to_tensor(m) for d, m in zip(direct, zeros_for_none(mixed, phi))]
    return hyper, dev_loss
