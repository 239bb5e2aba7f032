"""Small convex solvers for combining task gradients (MGDA), in pure TensorFlow.

Everything here is made of tensor ops with fixed-count or ``tf.while_loop``
control flow only, so it runs eagerly, inside ``tf.function`` and in the
replica context of a ``tf.distribute`` strategy.

* ``project_simplex``       Euclidean projection onto {a >= 0, sum a = total}.
* ``min_norm_element``      MGDA weights: argmin_{a in simplex} a^T G a.
* ``min_norm_combination``  the same from the gradients, plus sum_k a_k g_k.
"""

import tensorflow as tf

__all__ = ["project_simplex", "min_norm_element", "min_norm_combination"]


def project_simplex(v, total=1.0):
    """Euclidean projection of a 1-D tensor onto the scaled simplex.

        a* = argmin_a ||a - v||^2   s.t.  a >= 0,  sum_i a_i = total   (total > 0)

    Sort-based algorithm (Held, Wolfe & Crowder 1974; Duchi et al. 2008):
    u = sort(v, descending), c_k = u_1 + ... + u_k,
    rho = max{k : u_k - (c_k - total) / k > 0},
    theta = (c_rho - total) / rho,   a* = max(v - theta, 0).
    """
    v = tf.convert_to_tensor(v)
    total = tf.cast(total, v.dtype)
    u = tf.sort(v, direction="DESCENDING")
    css = tf.cumsum(u)
    k = tf.range(1, tf.size(v) + 1)
    kf = tf.cast(k, v.dtype)
    positive = u - (css - total) / kf > 0
    # The condition holds on a prefix of k (and always for k = 1); take its last index.
    rho = tf.reduce_max(tf.where(positive, k, tf.ones_like(k)))
    theta = (tf.gather(css, rho - 1) - total) / tf.cast(rho, v.dtype)
    return tf.maximum(v - theta, tf.zeros_like(v))


def _two_task(gram):
    """Closed form for K = 2 (Sener & Koltun 2018, Alg. 1):
    a_1 = clip((G22 - G12) / (G11 + G22 - 2 G12), 0, 1), a_2 = 1 - a_1."""
    g11, g12, g22 = gram[0, 0], gram[0, 1], gram[1, 1]
    denom = g11 + g22 - 2.0 * g12  # = ||g1 - g2||^2 >= 0
    safe = denom > 1e-12 * tf.maximum(g11 + g22, tf.constant(1e-300, gram.dtype))
    a1 = tf.where(safe, (g22 - g12) / tf.where(safe, denom, tf.ones_like(denom)), 0.5 * tf.ones_like(denom))
    a1 = tf.clip_by_value(a1, 0.0, 1.0)
    return tf.stack([a1, 1.0 - a1])


def _objective(gram, a):
    return tf.tensordot(a, tf.linalg.matvec(gram, a), 1)


def _support_minimiser(gram, mask):
    """Minimiser of a^T G a over {sum a = 1, a_i = 0 off the mask S}: the KKT system
        G_SS a_S = mu 1,  1^T a_S = 1,
    solved with a pseudo-inverse (the minimum-norm solution when G_SS is singular)."""
    k = tf.shape(gram)[0]
    m = tf.cast(mask, gram.dtype)
    top = tf.concat([gram * m[:, None] * m[None, :] + tf.linalg.diag(1.0 - m), -m[:, None]], axis=1)
    bottom = tf.concat([m, tf.zeros([1], gram.dtype)], axis=0)[None, :]
    rhs = tf.concat([tf.zeros([k], gram.dtype), tf.ones([1], gram.dtype)], axis=0)
    sol = tf.linalg.matvec(tf.linalg.pinv(tf.concat([top, bottom], axis=0)), rhs)[:k] * m
    return tf.where(tf.math.is_finite(sol), sol, tf.zeros_like(sol))


def _active_set(gram, x, rounds):
    """Primal active-set refinement (Nocedal & Wright, Alg. 16.3) of a feasible x for
        min a^T G a  s.t.  a >= 0, sum a = 1,
    starting from the working set {x_i > 0}. Each round minimises on the working
    set; if that leaves the simplex it steps to the boundary and drops the blocking
    index, else it adds the index with the most negative multiplier
    (G a)_i - a^T G a, stopping when none is negative. f never increases."""
    k = tf.shape(gram)[0]
    index = tf.range(k)

    def cond(r, x, mask, done):
        return (r < rounds) & tf.logical_not(done)

    def body(r, x, mask, done):
        sol = _support_minimiser(gram, mask)
        d = sol - x
        blocking = mask & (sol < 0)
        ratio = tf.where(blocking, x / tf.where(blocking, x - sol, tf.ones_like(x)), 2.0 * tf.ones_like(x))
        j = tf.argmin(ratio, output_type=tf.int32)
        tau = tf.clip_by_value(tf.reduce_min(ratio), 0.0, 1.0)
        inside = tf.logical_not(tf.reduce_any(blocking))
        # Either move to the support minimiser, or to the boundary and drop j.
        x_new = tf.where(inside, sol, tf.where(index == j, tf.zeros_like(x), tf.maximum(x + tau * d, 0.0)))
        x_new = x_new / tf.reduce_sum(x_new)
        multiplier = tf.linalg.matvec(gram, x_new) - _objective(gram, x_new)
        multiplier = tf.where(mask, tf.ones_like(multiplier), multiplier)
        i = tf.argmin(multiplier, output_type=tf.int32)
        optimal = inside & (tf.reduce_min(multiplier) >= -1e-13)
        mask_new = tf.where(inside, mask | (index == i), mask & (index != j))
        mask_new = tf.where(optimal, mask, mask_new)
        return r + 1, x_new, mask_new, optimal

    _, x_ref, _, _ = tf.while_loop(cond, body, (tf.constant(0), x, x > 0, tf.constant(False)))
    ok = tf.reduce_all(tf.math.is_finite(x_ref)) & (_objective(gram, x_ref) <= _objective(gram, x))
    return tf.where(ok, x_ref, x)


@tf.function(
    input_signature=[tf.TensorSpec([None, None], tf.float64), tf.TensorSpec([], tf.int32),
                     tf.TensorSpec([], tf.float64)],
    autograph=False)
def _min_norm_fista(gram, iterations, tolerance):
    """Accelerated projected gradient (FISTA with gradient restart) for
        f(a) = a^T G a  on the simplex,  step 1 / (2 lambda_max(G)).
    Since f* >= 0 and f - f* <= 2 (a^T G a - min_i (G a)_i) (Frank-Wolfe gap),
    it stops once  min(2 gap, f) <= tolerance * f + 1e-15,  or after ``iterations``,
    then refines it by an active-set method. ``gram`` is float64 with max diagonal 1 (or all zeros)."""
    k = tf.shape(gram)[0]
    x0 = tf.fill([k], 1.0 / tf.cast(k, tf.float64))
    step = 1.0 / tf.maximum(tf.reduce_max(tf.linalg.eigvalsh(gram)), 1e-12)

    def converged(x):
        gx = tf.linalg.matvec(gram, x)
        f = tf.tensordot(x, gx, 1)
        bound = tf.minimum(2.0 * (f - tf.reduce_min(gx)), f)
        return bound <= tolerance * f + 1e-15

    def cond(i, x, y, t, done):
        return (i < iterations) & tf.logical_not(done)

    def body(i, x, y, t, done):
        x_new = project_simplex(y - step * tf.linalg.matvec(gram, y))
        restart = tf.tensordot(y - x_new, x_new - x, 1) > 0  # O'Donoghue & Candes 2015
        t_new = tf.where(restart, tf.constant(1.0, tf.float64), 0.5 * (1.0 + tf.sqrt(1.0 + 4.0 * t * t)))
        momentum = tf.where(restart, tf.constant(0.0, tf.float64), (t - 1.0) / t_new)
        y_new = x_new + momentum * (x_new - x)
        return i + 1, x_new, y_new, t_new, converged(x_new)

    n, x, _, _, _ = tf.while_loop(cond, body, (tf.constant(0), x0, x0, tf.constant(1.0, tf.float64), converged(x0)))
    return _active_set(gram, x, 2 * k + 10), n


def min_norm_element(gram, iterations=5000, tolerance=1e-10):
    """MGDA min-norm weights (Sener & Koltun 2018) from a K x K Gram matrix.

        alpha* = argmin_{alpha >= 0, sum alpha = 1}  alpha^T G alpha,   G_ij = g_i . g_j,

    i.e. sum_k alpha*_k g_k is the min-norm point of the convex hull of the g_k.
    K = 2 (static shape) uses the closed form
        a_1 = clip((G22 - G12) / (G11 + G22 - 2 G12), 0, 1),  a_2 = 1 - a_1.
    Otherwise, in float64 on G / max_i G_ii: FISTA with projections onto the
    simplex until the certified suboptimality is <= ``tolerance`` * f (plus 1e-15),
    or for at most ``iterations`` steps, then a primal active-set refinement that
    solves the KKT system on the support exactly. A degenerate G (zeros,
    identical gradients) gives a valid simplex point.
    Returns alpha [K] in G's dtype; no gradient flows through alpha.
    """
    gram = tf.stop_gradient(tf.convert_to_tensor(gram))
    dtype = gram.dtype
    g = tf.cast(gram, tf.float64)
    g = 0.5 * (g + tf.transpose(g))
    if g.shape[0] == 1:
        return tf.ones([1], dtype)
    if g.shape[0] == 2:
        return tf.cast(_two_task(g), dtype)
    scale = tf.reduce_max(tf.linalg.diag_part(g))
    g = g / tf.where(scale > 0, scale, tf.ones_like(scale))
    alpha, _ = _min_norm_fista(g, tf.constant(iterations, tf.int32), tf.constant(tolerance, tf.float64))
    return tf.cast(alpha, dtype)


def min_norm_combination(grads):
    """MGDA from K flat gradients (a list of [D] tensors or one [K, D] tensor):

        G = g g^T,  alpha = min_norm_element(G),  d = sum_k alpha_k g_k.

    Returns (alpha [K], d [D]); d carries gradients only through g (alpha is constant).
    """
    g = tf.stack(grads) if isinstance(grads, (list, tuple)) else tf.convert_to_tensor(grads)
    alpha = min_norm_element(tf.matmul(g, g, transpose_b=True))
    return alpha, tf.linalg.matvec(g, alpha, transpose_a=True)
