"""Small convex solvers for combining task gradients (MGDA), in pure TensorFlow.

Everything here is made of tensor ops with fixed-count or ``tf.while_loop``
control flow only, so it runs eagerly, inside ``tf.function`` and in the
replica context of a ``tf.distribute`` strategy.

* ``project_simplex``       Euclidean projection onto {a >= 0, sum a = total}.
* ``min_norm_element``      MGDA weights: argmin_{a in simplex} a^T G a.
* ``min_norm_combination``  the same from the gradients, plus sum_k a_k g_k.
* ``project_capped_simplex`` Euclidean projection onto {0 <= a <= upper, sum a = total}.
* ``privileged_min_norm``   PTL / privileged MGDA (Song et al. 2021, Eq. 12/14) from the
                            Gram matrix: (alpha, beta) and the effective weights lam.
                            constraint10=True: Eq. 12 as written (with constraint (10);
                            lam on a capped simplex, C2 inert); False: the exact Lagrangian
                            dual of the primal (11) (no (10); C2 lets lam_j < 0).
* ``privileged_combination`` the same from the gradients, plus sum_m lam_m g_m.
"""

import numpy as np
import tensorflow as tf

__all__ = ["project_simplex", "min_norm_element", "min_norm_combination", "project_capped_simplex",
           "privileged_min_norm", "privileged_combination"]


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


def _fista(matrix, project, converged, x0, step, iterations):
    """FISTA with gradient restart (O'Donoghue & Candes 2015) for f(x) = x^T M x over a convex
    set with the exact projection `project`: y <- project(y - step M y) with momentum, from x0,
    until `converged(x)` or `iterations` steps. Returns (steps taken, x)."""
    def cond(i, x, y, t, done):
        return (i < iterations) & tf.logical_not(done)

    def body(i, x, y, t, done):
        x_new = project(y - step * tf.linalg.matvec(matrix, y))
        restart = tf.tensordot(y - x_new, x_new - x, 1) > 0
        t_new = tf.where(restart, tf.constant(1.0, tf.float64), 0.5 * (1.0 + tf.sqrt(1.0 + 4.0 * t * t)))
        momentum = tf.where(restart, tf.constant(0.0, tf.float64), (t - 1.0) / t_new)
        return i + 1, x_new, x_new + momentum * (x_new - x), t_new, converged(x_new)

    steps, x, _, _, _ = tf.while_loop(cond, body, (tf.constant(0), x0, x0, tf.constant(1.0, tf.float64),
                                                   converged(x0)))
    return steps, x


@tf.function(
    input_signature=[tf.TensorSpec([None, None], tf.float64), tf.TensorSpec([], tf.int32),
                     tf.TensorSpec([], tf.float64)],
    autograph=False)
def _min_norm_fista(gram, iterations, tolerance):
    """Accelerated projected gradient (FISTA with gradient restart) for
        f(a) = a^T G a  on the simplex,  step 1 / (2 lambda_max(G)).
    Since f* >= 0 and f - f* <= 2 (a^T G a - min_i (G a)_i) (Frank-Wolfe gap),
    it stops once  min(2 gap, f) <= tolerance * f + 1e-12,  or after ``iterations``,
    (the absolute floor: a min-norm point of 0, e.g. dependent gradients, is approached only
    sublinearly; the active-set step then makes it exact),
    then refines it by an active-set method. ``gram`` is float64 with max diagonal 1 (or all zeros)."""
    k = tf.shape(gram)[0]
    x0 = tf.fill([k], 1.0 / tf.cast(k, tf.float64))
    step = 1.0 / tf.maximum(tf.reduce_max(tf.linalg.eigvalsh(gram)), 1e-12)

    def converged(x):
        gx = tf.linalg.matvec(gram, x)
        f = tf.tensordot(x, gx, 1)
        bound = tf.minimum(2.0 * (f - tf.reduce_min(gx)), f)
        return bound <= tolerance * f + 1e-12

    n, x = _fista(gram, project_simplex, converged, x0, step, iterations)
    return _active_set(gram, x, 2 * k + 10), n


def min_norm_element(gram, iterations=5000, tolerance=1e-10):
    """MGDA min-norm weights (Sener & Koltun 2018) from a K x K Gram matrix.

        alpha* = argmin_{alpha >= 0, sum alpha = 1}  alpha^T G alpha,   G_ij = g_i . g_j,

    i.e. sum_k alpha*_k g_k is the min-norm point of the convex hull of the g_k.
    K = 2 (static shape) uses the closed form
        a_1 = clip((G22 - G12) / (G11 + G22 - 2 G12), 0, 1),  a_2 = 1 - a_1.
    Otherwise, in float64 on G / max_i G_ii: FISTA with projections onto the
    simplex until the certified suboptimality is <= ``tolerance`` * f (plus 1e-12),
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


# ---------------------------------------------------------------------------
# PTL: privileged multiple-gradient descent (Song et al., ICCV 2021, seed 004)
# ---------------------------------------------------------------------------


def project_capped_simplex(v, upper, total=1.0):
    """Euclidean projection of a 1-D tensor onto the capped simplex.

        a* = argmin_a ||a - v||^2   s.t.  sum_i a_i = total,  0 <= a_i <= upper_i,

    which is non-empty iff sum_i upper_i >= total > 0 (assumed). a* = clip(v - theta, 0, upper)
    where s(theta) = sum_i clip(v_i - theta, 0, upper_i) = total. s is continuous,
    non-increasing and linear between the 2K breakpoints {v_i - upper_i} u {v_i}; theta is
    found exactly by evaluating s at every breakpoint (O(K^2), no sort) and interpolating
    linearly between the two consecutive breakpoints that bracket ``total``.
    """
    v = tf.convert_to_tensor(v)
    upper = tf.cast(upper, v.dtype)
    total = tf.cast(total, v.dtype)
    points = tf.concat([v - upper, v], axis=0)
    sums = tf.reduce_sum(tf.clip_by_value(v[None, :] - points[:, None], 0.0, upper[None, :]), axis=1)
    big = tf.constant(float("inf"), v.dtype)
    above = sums >= total  # s(min point) = sum upper >= total; s(max point) = 0 < total
    lo_point = tf.reduce_max(tf.where(above, points, -big))
    hi_point = tf.reduce_min(tf.where(above, big, points))
    lo_sum = tf.reduce_min(tf.where(above, sums, big))
    hi_sum = tf.reduce_max(tf.where(above, -big, sums))
    gap = lo_sum - hi_sum
    theta = lo_point + (lo_sum - total) * (hi_point - lo_point) / tf.where(gap > 0, gap, tf.ones_like(gap))
    return tf.clip_by_value(v - theta, tf.zeros_like(v), upper)


def _capped_linear_minimiser(r, upper):
    """min_s s.r over the capped simplex {sum s = 1, 0 <= s <= upper}: fill the
    coordinates in increasing order of r up to their caps (greedy is exact for a
    linear objective on this polymatroid). Returns the minimum value."""
    order = tf.argsort(r)
    caps = tf.gather(upper, order)
    weights = tf.clip_by_value(1.0 - tf.cumsum(caps, exclusive=True), 0.0, caps)
    return tf.reduce_sum(weights * tf.gather(r, order))


def _box_active_set(gram, upper, capped, x, rounds):
    """Primal active-set refinement (Nocedal & Wright, Alg. 16.3) of a feasible x for
        min a^T G a   s.t.  sum a = 1,  0 <= a <= upper
    (``_dual_active_set`` with every coordinate in the sum; only the ``capped`` ones, upper
    < 1, can sit at their upper bound), then an exact projection onto the feasible set
    (removes rounding); keeps x if the result is not better."""
    refined = _dual_active_set(gram, upper, capped, tf.ones_like(x), x, rounds)
    x_ref = project_capped_simplex(refined, upper)
    return tf.where(_objective(gram, x_ref) <= _objective(gram, x), x_ref, x)


@tf.function(
    input_signature=[tf.TensorSpec([None, None], tf.float64), tf.TensorSpec([None], tf.float64),
                     tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.float64)],
    autograph=False)
def _capped_min_norm_fista(gram, upper, iterations, tolerance):
    """FISTA with gradient restart for f(a) = a^T G a on {sum a = 1, 0 <= a <= upper}
    (exact projections by ``project_capped_simplex``), step 1 / (2 lambda_max(G)).
    Certified stop as in ``_min_norm_fista``: f - f* <= 2 (f - min_s s^T G a) (the
    Frank-Wolfe gap over the capped simplex) and f - f* <= f; then ``_box_active_set``.
    ``gram`` is float64 with max diagonal 1 (or zero); ``upper`` in (0, 1], capped where < 1."""
    k = tf.shape(gram)[0]
    x0 = project_capped_simplex(tf.fill([k], 1.0 / tf.cast(k, tf.float64)), upper)
    step = 1.0 / tf.maximum(tf.reduce_max(tf.linalg.eigvalsh(gram)), 1e-12)

    def converged(x):
        gx = tf.linalg.matvec(gram, x)
        f = tf.tensordot(x, gx, 1)
        bound = tf.minimum(2.0 * (f - _capped_linear_minimiser(gx, upper)), f)
        return bound <= tolerance * f + 1e-12

    n, x = _fista(gram, lambda v: project_capped_simplex(v, upper), converged, x0, step, iterations)
    return _box_active_set(gram, upper, upper < 1.0, x, 3 * k + 10), n


# -- the Lagrangian dual of the paper's primal (11): Eq. 12 without constraint (10) --------


def _dual_map(mask):
    """Static numpy pieces of the map x = [alpha, vec beta] -> lam = A x for targets ``mask``:
    A = [I_T | B], column (a, b) of B (row-major over I_t x I_p) is e_{i_a} - e_{j_b}; and
    S^(1/2) for S = A A^T = I + L (L the Laplacian of the complete bipartite graph I_t x I_p),
    so lambda_max(A^T G A) = lambda_max(S^(1/2) G S^(1/2)) is a T x T eigenvalue problem."""
    target_index, privileged_index = np.flatnonzero(mask), np.flatnonzero(~mask)
    num_tasks = mask.size
    pairs = np.zeros((num_tasks, target_index.size * privileged_index.size))
    for a, i in enumerate(target_index):
        for b, j in enumerate(privileged_index):
            pairs[i, a * privileged_index.size + b] = 1.0
            pairs[j, a * privileged_index.size + b] = -1.0
    amap = np.concatenate([np.eye(num_tasks), pairs], axis=1)
    values, vectors = np.linalg.eigh(amap @ amap.T)
    return amap, (vectors * np.sqrt(np.maximum(values, 0.0))) @ vectors.T


def _dual_active_set(q, upper, capped, simplex, x, rounds):
    """Primal active-set refinement (Nocedal & Wright, Alg. 16.3) of a feasible x for
        min x^T Q x   s.t.  sum_{k in simplex} x_k = 1,  0 <= x <= upper
    (``_box_active_set`` with the equality constraint on the ``simplex`` coordinates only; here
    x = [alpha, vec beta]). Working set ``low`` (x_k = 0) and ``up`` (x_k = upper_k, only where
    ``capped``; both for upper_k = 0: pinned). Each round solves the KKT system on the free set
    F,  (Q x)_F = mu e_F,  e^T x = 1,  gathered to its |F| + 1 unknowns, by a pseudo-inverse
    (Q = A^T G A is singular: a minimum-norm solution); if that leaves the box it steps to the
    first bound and fixes the blocking index there, else it frees the index with the most
    violated multiplier
    (simplex coordinates: mu - (Q x)_k at 0, (Q x)_k - mu at the cap; the others: -(Q x)_k at
    0, (Q x)_k at the cap), stopping when none exceeds 1e-13. f never increases. ``x`` is
    returned if the result is not finite."""
    n = tf.shape(q)[0]
    index = tf.range(n)
    zeros = tf.zeros_like(x)
    one = tf.ones_like(x)
    inf = tf.constant(float("inf"), x.dtype)
    in_simplex = simplex > 0

    def cond(r, x, low, up, done):
        return (r < rounds) & tf.logical_not(done)

    def body(r, x, low, up, done):
        free = tf.logical_not(low | up)
        fixed = tf.where(up, upper, zeros)
        # The KKT system on the free coordinates only (gathered: |F| + 1 unknowns, not n + 1).
        where = tf.where(free)
        e_free = tf.gather_nd(simplex, where)
        top = tf.concat([tf.gather(tf.gather_nd(q, where), where[:, 0], axis=1), -e_free[:, None]], axis=1)
        bottom = tf.concat([e_free, tf.zeros([1], x.dtype)], axis=0)[None, :]
        rhs = tf.concat([-tf.gather_nd(tf.linalg.matvec(q, fixed), where),
                         1.0 - tf.reduce_sum(simplex * fixed, keepdims=True)], axis=0)
        sol_free = tf.linalg.matvec(tf.linalg.pinv(tf.concat([top, bottom], axis=0)), rhs)[:-1]
        sol = tf.tensor_scatter_nd_update(fixed, where, sol_free)
        sol = tf.where(free & tf.math.is_finite(sol), sol, tf.where(free, x, fixed))
        block_low = free & (sol < 0)
        block_up = free & capped & (sol > upper)
        ratio = tf.where(block_low, x / tf.where(block_low, x - sol, one),
                         tf.where(block_up, (upper - x) / tf.where(block_up, sol - x, one), 2.0 * one))
        j = tf.argmin(ratio, output_type=tf.int32)
        tau = tf.clip_by_value(tf.reduce_min(ratio), 0.0, 1.0)
        inside = tf.logical_not(tf.reduce_any(block_low | block_up))
        hit_low = (index == j) & block_low
        hit_up = (index == j) & block_up
        stepped = tf.clip_by_value(x + tau * (sol - x), zeros, upper)
        stepped = tf.where(hit_low, zeros, tf.where(hit_up, upper, stepped))
        x_new = tf.where(inside, sol, stepped)
        grad = tf.linalg.matvec(q, x_new)
        free_simplex = free & in_simplex
        count = tf.reduce_sum(tf.cast(free_simplex, x.dtype))
        up_simplex, low_simplex = up & in_simplex, low & in_simplex
        mu_empty = tf.where(tf.reduce_any(up_simplex), tf.reduce_max(tf.where(up_simplex, grad, -inf)),
                            tf.reduce_min(tf.where(low_simplex, grad, inf)))
        mu = tf.where(count > 0, tf.reduce_sum(tf.where(free_simplex, grad, zeros)) / tf.maximum(count, 1.0),
                      mu_empty)
        shifted = tf.where(in_simplex, grad - mu, grad)
        violation = tf.where(low, -shifted, tf.where(up, shifted, -inf * one))
        violation = tf.where(upper > 0, violation, -inf * one)  # upper = 0 (C1 or C2 = 0): pinned at 0
        i = tf.argmax(violation, output_type=tf.int32)
        optimal = inside & (tf.reduce_max(violation) <= 1e-13)
        release = inside & tf.logical_not(optimal) & (index == i)
        low_new = (low | (tf.logical_not(inside) & hit_low)) & tf.logical_not(release)
        up_new = (up | (tf.logical_not(inside) & hit_up)) & tf.logical_not(release)
        return r + 1, x_new, low_new, up_new, optimal

    start = (tf.constant(0), x, x <= 0, capped & (x >= upper), tf.constant(False))
    _, x_ref, _, _, _ = tf.while_loop(cond, body, start)
    return tf.where(tf.math.is_finite(x_ref), x_ref, x)


@tf.function(
    input_signature=[tf.TensorSpec([None, None], tf.float64), tf.TensorSpec([None, None], tf.float64),
                     tf.TensorSpec([None, None], tf.float64), tf.TensorSpec([None], tf.float64),
                     tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.float64), tf.TensorSpec([], tf.int32)],
    autograph=False)
def _privileged_dual_fista(gram, amap, s_half, upper, iterations, tolerance, rounds):
    """The Lagrangian dual of Problem (11) in x = [alpha (T), vec beta (|I_t| |I_p|)]:
        min f(x) = x^T Q x,  Q = A^T G A   over  {sum alpha = 1, 0 <= alpha <= upper_alpha}
                                                  x {0 <= beta <= C2}
    (``upper`` = [1 on targets, min(C1, 1) on privileged tasks, C2 on every pair]).
    First ``_dual_active_set`` (at most ``rounds`` rounds) from the centre of the capped
    simplex (beta = 0), usually exact in a few rounds. Then, unless that point is certified,
    FISTA with gradient restart, step 1 / (2 lambda_max(Q)), exact separable projection
    (capped simplex x box), and ``_dual_active_set`` once more. Certificate: f - f* <= 2 (f - min_s s^T Q x) (the
    Frank-Wolfe gap; the linear minimiser over capped simplex x box is greedy on alpha and
    beta_k = C2 [(Q x)_k < 0]) and f - f* <= f; FISTA stops once
    min(2 gap, f) <= tolerance * f + 1e-12  or after ``iterations`` steps. Each refinement is
    projected exactly onto the feasible set and kept only where it does not raise f.
    ``gram`` is float64 with max diagonal 1 (or zero). Returns (x, FISTA steps taken)."""
    t = tf.shape(gram)[0]
    n = tf.shape(amap)[1]
    q = tf.matmul(amap, tf.matmul(gram, amap), transpose_a=True)
    q = 0.5 * (q + tf.transpose(q))
    step = 1.0 / tf.maximum(tf.reduce_max(tf.linalg.eigvalsh(tf.matmul(s_half, tf.matmul(gram, s_half)))), 1e-12)
    upper_alpha, upper_beta = upper[:t], upper[t:]

    def project(x):
        return tf.concat([project_capped_simplex(x[:t], upper_alpha),
                          tf.clip_by_value(x[t:], tf.zeros_like(upper_beta), upper_beta)], axis=0)

    def objective(x):
        return tf.tensordot(x, tf.linalg.matvec(q, x), 1)

    def converged(x):
        qx = tf.linalg.matvec(q, x)
        f = tf.tensordot(x, qx, 1)
        linear = _capped_linear_minimiser(qx[:t], upper_alpha) + tf.reduce_sum(upper_beta * tf.minimum(qx[t:], 0.0))
        bound = tf.minimum(2.0 * (f - linear), f)
        return bound <= tolerance * f + 1e-12

    simplex = tf.concat([tf.ones([t], tf.float64), tf.zeros([n - t], tf.float64)], axis=0)
    capped = tf.concat([upper_alpha < 1.0, tf.ones([n - t], tf.bool)], axis=0)

    def refine(x):
        x_ref = project(_dual_active_set(q, upper, capped, simplex, x, rounds))
        return tf.where(objective(x_ref) <= objective(x), x_ref, x)

    x0 = refine(project(tf.concat([tf.fill([t], 1.0 / tf.cast(t, tf.float64)), tf.zeros([n - t], tf.float64)], 0)))
    steps, x = _fista(q, project, converged, x0, step, iterations)
    x = tf.cond(steps > 0, lambda: refine(x), lambda: x)
    return x, steps


def _target_mask(targets):
    """``targets`` (bools, or a tensor with a static value) as a numpy bool vector."""
    if tf.is_tensor(targets):
        value = tf.get_static_value(targets)
        if value is None:
            raise ValueError("privileged_min_norm: `targets` must be static (a list of bools or a constant)")
        targets = value
    mask = np.asarray(targets, dtype=bool).reshape(-1)
    if not mask.any():
        raise ValueError("privileged_min_norm: at least one task must be a target task")
    return mask


def _check_nonnegative(name, c):
    value = tf.get_static_value(c) if tf.is_tensor(c) else c
    if value is not None and float(value) < 0:
        raise ValueError(f"privileged_min_norm: {name} must be >= 0, got {float(value)}")
    return value


def _privileged_dual(g, mask, c1, c2, iterations, tolerance):
    """``privileged_min_norm(..., constraint10=False)`` on the float64, symmetrised Gram ``g``
    (at least one privileged task): (alpha, beta, lam) in float64."""
    num_tasks = mask.size
    target_index, privileged_index = np.flatnonzero(mask), np.flatnonzero(~mask)
    c1 = tf.cast(c1, tf.float64) if tf.is_tensor(c1) else tf.constant(c1, tf.float64)
    c2 = tf.cast(c2, tf.float64) if tf.is_tensor(c2) else tf.constant(c2, tf.float64)
    cap = tf.clip_by_value(c1, 0.0, 1.0)
    if num_tasks == 2:
        # lam_p = alpha_p - beta ranges over [-C2, min(C1, 1)]; f is a 1-D quadratic in lam_p.
        t, p = target_index[0], privileged_index[0]
        g_tt, g_tp, g_pp = g[t, t], g[t, p], g[p, p]
        denom = g_tt + g_pp - 2.0 * g_tp
        safe = denom > 1e-12 * tf.maximum(g_tt + g_pp, tf.constant(1e-300, tf.float64))
        free = tf.where(safe, (g_tt - g_tp) / tf.where(safe, denom, tf.ones_like(denom)), 0.5 * tf.ones_like(denom))
        lam_p = tf.clip_by_value(free, -c2, cap)
        alpha_p = tf.maximum(lam_p, 0.0)
        order = np.array([[t], [p]])
        alpha = tf.scatter_nd(order, tf.stack([1.0 - alpha_p, alpha_p]), [2])
        lam = tf.scatter_nd(order, tf.stack([1.0 - lam_p, lam_p]), [2])
        return alpha, tf.reshape(tf.maximum(-lam_p, 0.0), [1, 1]), lam
    amap, s_half = _dual_map(mask)
    pairs = amap.shape[1] - num_tasks
    scale = tf.reduce_max(tf.linalg.diag_part(g))
    g = g / tf.where(scale > 0, scale, tf.ones_like(scale))
    ones = tf.ones([num_tasks], tf.float64)
    upper = tf.concat([tf.where(tf.constant(mask), ones, cap * ones), c2 * tf.ones([pairs], tf.float64)], axis=0)
    x, _ = _privileged_dual_fista(g, tf.constant(amap), tf.constant(s_half), upper, tf.constant(iterations, tf.int32),
                                  tf.constant(tolerance, tf.float64), tf.constant(2 * amap.shape[1] + 10, tf.int32))
    beta = tf.reshape(x[num_tasks:], [target_index.size, privileged_index.size])
    return x[:num_tasks], beta, tf.linalg.matvec(tf.constant(amap), x)


def privileged_min_norm(gram, targets, c1, c2=0.0, iterations=5000, tolerance=1e-10, constraint10=True):
    """PTL / privileged MGDA weights (Song et al., ICCV 2021, Eq. 12/14) from a T x T Gram
    matrix G_mn = g_m . g_n, target tasks I_t (``targets`` True) and privileged tasks I_p:

        min_{alpha, beta}  1/2 || sum_m alpha_m g_m + sum_{i in I_t, j in I_p} beta_ij (g_i - g_j) ||^2
        s.t. sum_m alpha_m = 1,  alpha >= 0,  alpha_j <= C1 (j in I_p),
             0 <= beta_ij <= C2,
             sum_{i in I_t} beta_ij <= alpha_j (j in I_p)       [constraint (10); only if constraint10]

    The combination is d = sum_m lam_m g_m with lam_i = alpha_i + sum_j beta_ij (i in I_t)
    and lam_j = alpha_j - sum_i beta_ij (j in I_p); the paper's primal direction is
    d* = -d, the update theta - r d.

    ``constraint10=True`` (default): Eq. 12 exactly as the paper writes it. Reduction: the
    image of the feasible (alpha, beta) under this map is exactly the capped simplex
        {lam >= 0,  sum lam = 1,  lam_j <= C1 for j in I_p}
    (every feasible pair lands there: sum lam = sum alpha and 0 <= lam_j <= alpha_j <= C1,
    lam_i >= alpha_i >= 0; conversely (alpha, beta) = (lam, 0) is feasible), and the
    objective depends on lam only. So the problem is exactly
        lam* = argmin lam^T G lam  over the capped simplex,
    and C2 (the "direction correction" of the paper) never changes d*: constraint (10)
    makes every correction beta expressible by alpha alone. With no privileged task, or
    C1 = 0, this is MGDA over the target tasks; C1 >= 1 is MGDA over all tasks.
    Solved exactly: no privileged task or C1 == 0 (static) calls ``min_norm_element`` on
    the target block; one target + one privileged task (T = 2) uses the closed form
    lam_p = clip((G_tt - G_tp) / (G_tt + G_pp - 2 G_tp), 0, min(C1, 1)); otherwise, in
    float64 on G / max_m G_mm, FISTA with exact projections onto the capped simplex until
    the certified suboptimality is <= ``tolerance`` * f (plus 1e-12) or ``iterations``
    steps, then a primal active-set method that solves the KKT system on the free set.
    Returns the representative (alpha, beta) = (lam, 0) of the optimal set.

    ``constraint10=False``: the true Lagrangian dual of the paper's primal Problem (11)
    (multipliers alpha_m of the v-constraints, beta_ij of the eta-constraints; stationarity
    in v, xi, eta, d gives sum alpha = 1, alpha_j <= C1, beta_ij <= C2 and d* = -d; nothing
    gives (10)), so strong duality holds and Theorem 1 applies to -d exactly. Here C2 acts:
    lam_j = alpha_j - sum_i beta_ij may go negative (down to -|I_t| C2), i.e. d is bent away
    from the privileged gradients by at most C2 per (target, privileged) pair, towards
    "every target descends at least as fast as every privileged task" (the paper's
    constraint (8), eta_ij its priced violation). As C2 grows (C1 fixed) the total violation
    sum_ij max(0, <g_i - g_j, d*>) and ||d*|| never increase (a target's own rate <g_i, d*>
    may rise: the priority is relative). C2 = 0 is exactly the constraint10=True problem;
    C1 = 0 is not MGDA over the targets here (alpha_j = 0, but lam_j = -sum_i beta_ij <= 0).
    For T = 2: lam_p = clip((G_tt - G_tp) / (G_tt + G_pp - 2 G_tp), -C2, min(C1, 1)), which
    differs from the default only when G_tp > G_tt (the privileged gradient outruns the
    target along g_t: no conflict, the case Sec. 4.2 is about). Otherwise, in float64 on
    G / max_m G_mm, in x = [alpha, vec beta] (T + |I_t| |I_p| unknowns), f = x^T A^T G A x
    (A x = lam): a primal active-set method on the KKT system (gathered to the free
    coordinates; pseudo-inverse, A^T G A being singular) from beta = 0, checked by the
    Frank-Wolfe gap over capped simplex x [0, C2] box (certified once 2 gap <= ``tolerance`` *
    f + 1e-12); if not certified, FISTA with the exact separable projection onto that set until
    it is (or ``iterations`` steps), and the active-set method again. (alpha, beta) is one
    optimal pair (not unique); lam and d are unique for independent g. A static C2 == 0 takes
    the constraint10=True path.

    ``targets``: T static bools with at least one True. ``c1`` may be a tensor (e.g. a
    schedule); ``c2`` too, but it is only checked (>= 0) when ``constraint10`` (and must be
    finite without it). Returns (alpha [T], beta [|I_t|, |I_p|], lam [T]) in G's dtype;
    no gradient flows.
    """
    mask = _target_mask(targets)
    num_tasks, num_targets = mask.size, int(mask.sum())
    num_privileged = num_tasks - num_targets
    c1_value = _check_nonnegative("c1", c1)
    c2_value = _check_nonnegative("c2", c2)
    dual = not constraint10 and num_privileged > 0 and not (c2_value is not None and float(c2_value) == 0.0)
    if dual and c2_value is not None and not np.isfinite(float(c2_value)):
        raise ValueError(f"privileged_min_norm: c2 must be finite with constraint10=False, got {float(c2_value)}")
    gram = tf.stop_gradient(tf.convert_to_tensor(gram))
    dtype = gram.dtype
    g = tf.cast(gram, tf.float64)
    g = 0.5 * (g + tf.transpose(g))
    if g.shape[0] is not None and g.shape[0] != num_tasks:
        raise ValueError(f"privileged_min_norm: gram is {g.shape[0]} x {g.shape[0]}, "
                         f"but targets has {num_tasks} entries")
    if dual:
        return tuple(tf.cast(x, dtype) for x in _privileged_dual(g, mask, c1, c2, iterations, tolerance))
    target_index = np.flatnonzero(mask)
    privileged_index = np.flatnonzero(~mask)
    beta = tf.zeros([num_targets, num_privileged], dtype)
    if num_privileged == 0 or (c1_value is not None and float(c1_value) == 0.0):
        sub = tf.gather(tf.gather(g, target_index, axis=0), target_index, axis=1)
        lam = tf.scatter_nd(target_index[:, None], min_norm_element(sub, iterations, tolerance), [num_tasks])
    else:
        c1 = tf.cast(c1, tf.float64) if tf.is_tensor(c1) else tf.constant(c1, tf.float64)  # no float32 detour
        cap = tf.clip_by_value(c1, 0.0, 1.0)
        if num_tasks == 2:
            order = np.concatenate([target_index, privileged_index])
            a = _two_task(tf.gather(tf.gather(g, order, axis=0), order, axis=1))
            lam_p = tf.minimum(a[1], cap)
            lam = tf.scatter_nd(order[:, None], tf.stack([1.0 - lam_p, lam_p]), [2])
        else:
            ones = tf.ones([num_tasks], tf.float64)
            upper = tf.where(tf.constant(mask), ones, cap * ones)
            scale = tf.reduce_max(tf.linalg.diag_part(g))
            g = g / tf.where(scale > 0, scale, tf.ones_like(scale))
            lam, _ = _capped_min_norm_fista(g, upper, tf.constant(iterations, tf.int32),
                                            tf.constant(tolerance, tf.float64))
    lam = tf.cast(lam, dtype)
    return lam, beta, lam


def privileged_combination(grads, targets, c1, c2=0.0, constraint10=True, **solver_options):
    """PTL from T flat gradients (a list of [D] tensors or one [T, D] tensor):

        G = g g^T,  lam = privileged_min_norm(G, targets, c1, c2, constraint10=...)[2],
        d = sum_m lam_m g_m.

    Returns (lam [T], d [D]); d carries gradients only through g. The update is theta - r d
    (the paper's primal direction is -d)."""
    g = tf.stack(grads) if isinstance(grads, (list, tuple)) else tf.convert_to_tensor(grads)
    _, _, lam = privileged_min_norm(tf.matmul(g, g, transpose_b=True), targets, c1, c2,
                                    constraint10=constraint10, **solver_options)
    return lam, tf.linalg.matvec(g, lam, transpose_a=True)
