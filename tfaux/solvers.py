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
        min a^T G a   s.t.  sum a = 1,  0 <= a <= upper,
    where only the ``capped`` coordinates (upper < 1) can sit at their upper bound
    (an upper bound of 1 is implied by the other constraints). Working set: ``low``
    (a_i = 0) and ``up`` (a_i = upper_i). Each round solves the KKT system on the
    free set F,  G_F. a - mu = 0,  sum a = 1  (pseudo-inverse: a minimum-norm
    solution when it is singular); if that leaves the box it steps to the first
    bound and fixes the blocking index there, else it frees the index with the most
    violated multiplier (mu - (G a)_i on ``low``, (G a)_i - mu on ``up``), stopping
    when none exceeds 1e-13. f never increases. Ends with an exact projection onto
    the feasible set (removes rounding); keeps x if the result is not better."""
    k = tf.shape(gram)[0]
    index = tf.range(k)
    zeros = tf.zeros_like(x)
    inf = tf.constant(float("inf"), x.dtype)

    def cond(r, x, low, up, done):
        return (r < rounds) & tf.logical_not(done)

    def body(r, x, low, up, done):
        free = tf.logical_not(low | up)
        m = tf.cast(free, x.dtype)
        fixed = tf.where(up, upper, zeros)
        top = tf.concat([gram * m[:, None] + tf.linalg.diag(1.0 - m), -m[:, None]], axis=1)
        bottom = tf.concat([tf.ones([k], x.dtype), tf.zeros([1], x.dtype)], axis=0)[None, :]
        rhs = tf.concat([fixed, tf.ones([1], x.dtype)], axis=0)
        sol = tf.linalg.matvec(tf.linalg.pinv(tf.concat([top, bottom], axis=0)), rhs)[:k]
        sol = tf.where(free & tf.math.is_finite(sol), sol, tf.where(free, x, fixed))
        block_low = free & (sol < 0)
        block_up = free & capped & (sol > upper)
        one = tf.ones_like(x)
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
        # Multipliers at the working-set minimiser (used only when inside).
        grad = tf.linalg.matvec(gram, x_new)
        count = tf.reduce_sum(m)
        mu_empty = tf.where(tf.reduce_any(up), tf.reduce_max(tf.where(up, grad, -inf)),
                            tf.reduce_min(tf.where(low, grad, inf)))
        mu = tf.where(count > 0, tf.reduce_sum(m * grad) / tf.maximum(count, 1.0), mu_empty)
        violation = tf.where(low, mu - grad, tf.where(up, grad - mu, -inf * one))
        violation = tf.where(upper > 0, violation, -inf * one)  # upper = 0 (C1 = 0): pinned at 0
        i = tf.argmax(violation, output_type=tf.int32)
        optimal = inside & (tf.reduce_max(violation) <= 1e-13)
        release = inside & tf.logical_not(optimal) & (index == i)
        low_new = (low | (tf.logical_not(inside) & hit_low)) & tf.logical_not(release)
        up_new = (up | (tf.logical_not(inside) & hit_up)) & tf.logical_not(release)
        return r + 1, x_new, low_new, up_new, optimal

    start = (tf.constant(0), x, x <= 0, capped & (x >= upper), tf.constant(False))
    _, x_ref, _, _, _ = tf.while_loop(cond, body, start)
    x_ref = project_capped_simplex(tf.where(tf.math.is_finite(x_ref), x_ref, x), upper)
    ok = _objective(gram, x_ref) <= _objective(gram, x)
    return tf.where(ok, x_ref, x)


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

    def cond(i, x, y, t, done):
        return (i < iterations) & tf.logical_not(done)

    def body(i, x, y, t, done):
        x_new = project_capped_simplex(y - step * tf.linalg.matvec(gram, y), upper)
        restart = tf.tensordot(y - x_new, x_new - x, 1) > 0
        t_new = tf.where(restart, tf.constant(1.0, tf.float64), 0.5 * (1.0 + tf.sqrt(1.0 + 4.0 * t * t)))
        momentum = tf.where(restart, tf.constant(0.0, tf.float64), (t - 1.0) / t_new)
        y_new = x_new + momentum * (x_new - x)
        return i + 1, x_new, y_new, t_new, converged(x_new)

    n, x, _, _, _ = tf.while_loop(cond, body, (tf.constant(0), x0, x0, tf.constant(1.0, tf.float64), converged(x0)))
    return _box_active_set(gram, upper, upper < 1.0, x, 3 * k + 10), n


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


def privileged_min_norm(gram, targets, c1, c2=0.0, iterations=5000, tolerance=1e-10):
    """PTL / privileged MGDA weights (Song et al., ICCV 2021, Eq. 12/14) from a T x T Gram
    matrix G_mn = g_m . g_n, target tasks I_t (``targets`` True) and privileged tasks I_p:

        min_{alpha, beta}  1/2 || sum_m alpha_m g_m + sum_{i in I_t, j in I_p} beta_ij (g_i - g_j) ||^2
        s.t. sum_m alpha_m = 1,  alpha >= 0,  alpha_j <= C1 (j in I_p),
             0 <= beta_ij <= C2,  sum_{i in I_t} beta_ij <= alpha_j (j in I_p).

    The combination is d = sum_m lam_m g_m with lam_i = alpha_i + sum_j beta_ij (i in I_t)
    and lam_j = alpha_j - sum_i beta_ij (j in I_p). Reduction: the image of the feasible
    (alpha, beta) under this map is exactly the capped simplex
        {lam >= 0,  sum lam = 1,  lam_j <= C1 for j in I_p}
    (every feasible pair lands there: sum lam = sum alpha and 0 <= lam_j <= alpha_j <= C1,
    lam_i >= alpha_i >= 0; conversely (alpha, beta) = (lam, 0) is feasible), and the
    objective depends on lam only. So the problem is exactly
        lam* = argmin lam^T G lam  over the capped simplex,
    and C2 (the "direction correction" of the paper) never changes d*: constraint (10)
    makes every correction beta expressible by alpha alone. (Without (10), the
    Lagrangian dual of the paper's primal (11), lam_j could go negative and C2 would
    matter.) With no privileged task, or C1 = 0, this is MGDA over the target tasks;
    C1 >= 1 is MGDA over all tasks.
    Solved exactly: no privileged task or C1 == 0 (static) calls ``min_norm_element`` on
    the target block; one target + one privileged task (T = 2) uses the closed form
    lam_p = clip((G_tt - G_tp) / (G_tt + G_pp - 2 G_tp), 0, min(C1, 1)); otherwise, in
    float64 on G / max_m G_mm, FISTA with exact projections onto the capped simplex until
    the certified suboptimality is <= ``tolerance`` * f (plus 1e-12) or ``iterations``
    steps, then a primal active-set method that solves the KKT system on the free set.
    ``targets``: T static bools with at least one True. ``c1`` may be a tensor (e.g. a
    schedule), ``c2`` is only checked (>= 0). Returns (alpha [T], beta [|I_t|, |I_p|],
    lam [T]) in G's dtype, with the representative (alpha, beta) = (lam, 0) of the optimal
    set (alpha, beta are not unique; d and lam are, for independent g); no gradient flows.
    """
    mask = _target_mask(targets)
    num_tasks, num_targets = mask.size, int(mask.sum())
    num_privileged = num_tasks - num_targets
    c1_value = _check_nonnegative("c1", c1)
    _check_nonnegative("c2", c2)
    gram = tf.stop_gradient(tf.convert_to_tensor(gram))
    dtype = gram.dtype
    g = tf.cast(gram, tf.float64)
    g = 0.5 * (g + tf.transpose(g))
    if g.shape[0] is not None and g.shape[0] != num_tasks:
        raise ValueError(f"privileged_min_norm: gram is {g.shape[0]} x {g.shape[0]}, "
                         f"but targets has {num_tasks} entries")
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


def privileged_combination(grads, targets, c1, c2=0.0, **solver_options):
    """PTL from T flat gradients (a list of [D] tensors or one [T, D] tensor):

        G = g g^T,  lam = privileged_min_norm(G, targets, c1, c2)[2],  d = sum_m lam_m g_m.

    Returns (lam [T], d [D]); d carries gradients only through g. The update is theta - r d
    (the paper's primal direction is -d)."""
    g = tf.stack(grads) if isinstance(grads, (list, tuple)) else tf.convert_to_tensor(grads)
    _, _, lam = privileged_min_norm(tf.matmul(g, g, transpose_b=True), targets, c1, c2, **solver_options)
    return lam, tf.linalg.matvec(g, lam, transpose_a=True)
