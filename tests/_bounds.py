"""The tests' tolerances, one table per dtype (``TOLERANCES``, read with ``tol``), and rounding-error bounds for
comparing the native core with the reference (``check``, used by test_fuzz.py and test_extremes.py; the scales of
the per-sample gradients from the same analysis, ``per_sample_error_scales``).  Imported as a plain module, like
_problems.

``error_scales`` runs a first-order running error analysis beside the reference's forward and backward
pass and returns, for every result, a tensor E of error scales in units of the unit roundoff u: a
result computed in floating point with unit roundoff u is off by about (a modest multiple of) u * E,
elementwise.  ``check`` compares with the relative max-norm error, its denominator floored by that
scale:

    max|got - want| / max(max|want|, C u max(E) / tol)  <=  tol

i.e. |got - want| <= max(tol max|want|, C u max(E)), with tol = ``tol(dtype, "floored")``.  Why a floor at
all: a gradient is a sum over rows (dW, db) or over units (dX) of terms of both signs, and when the terms cancel
the rounding error stays proportional to the terms' magnitudes (u sum |terms|), not to the small result: no
relative bound holds (a softmax head with k = 2 has db_L[0] = -db_L[1] = sum_i c_i (p_i0 - y_i0), which may be
tiny by chance).  E tracks those magnitudes and how the problem's conditioning amplifies the rounding of the
forward pass (sigmoid'(z) computed as h (1 - h) from a rounded h near 1; logits of size |z| carrying an
error u |z| into exp).  Away from cancellation and ill-conditioning the check is the plain relative
one.

C = 64: E counts each operation's rounding with weight 1, while the rounding of a length-m sum is up
to (m - 1) u sum|terms| in the worst case and ~sqrt(m) u typically (m: up to 3100 rows, or 70 units; the
native core sums in blocks, per lane and pairwise), a vectorized exp / log1p / reciprocal is within a
few ulp, and in float64 both implementations round.  Measured on the fuzz examples: the largest native
error is ~8 u max(E) (float32, a bias gradient summed over 3000 rows; test_fuzz.py prints the largest),
so C = 64 leaves a margin of ~8 and still rejects any error above ~7e-15 (float64) or ~4e-6 (float32)
of the terms' magnitudes.
"""

from __future__ import annotations

import numpy as np

from mlpgrad import reference

# Max-norm relative errors, max|got - want| / max|want|, per dtype: "default" and, where needed, a named other
# bound with its reason.  Finite-difference bounds are not here: they bound a stencil's truncation error, not a
# dtype's rounding, and live beside their stencils (test_reference_gradcheck.py, test_seed_formulas.py).
TOLERANCES = {
    np.dtype(np.float32): {
        # The native result against the float64 reference on the same values (or two native paths, or mlpgrad.dask
        # against the in-memory API) on a well-conditioned problem: float32 rounding summed over up to 4096 rows
        # (NumPy's own float32 reference stays below 3e-6 on test_native_vs_reference's largest cases).
        "default": 1e-5,
        # The relative part of a bound whose denominator is floored, by the rounding-error scale in check() below
        # or by 1e-3 in test_extremes' NaN / inf comparisons: the floor absorbs cancellation, and the relative part
        # covers the fuzzer's and the extremes' problems (saturated units, logits of 1e3 - 1e4, 3100-row sums).
        "floored": 1e-4,
        # Gradients that cancel over the batch (test_native_vs_reference.LOOSER_F32: the largest |db| is 1/142 of
        # the summed |delta| it comes from, and the lost digits compound backwards through five layers).
        "cancelling": 5e-5,
        # Sums over 2^20 rows (test_accuracy.py): the engine's blocked sums keep the error near the per-row
        # rounding, a tighter bound than "default" and the point of that test.
        "blocked_sum": 1e-6,
        # Gradients through logits that are float32 dot products of 2^15 terms (test_extremes' X of more than 2^31
        # elements): their rounding reaches ~1e-5 relative by itself (measured 3.4e-5 in dW_0).
        "long_dot": 1e-4,
    },
    np.dtype(np.float64): {
        "default": 1e-12,      # as float32's "default": float64 rounding over up to 4096 rows
        "floored": 1e-10,      # as float32's "floored"
        # Parameters after several optimizer steps computed in another summation order (mlpgrad.dask's L-BFGS
        # against the in-memory one): line searches amplify the rounding differences; an absolute bound.
        "optimizer": 1e-10,
    },
}


def tol(dtype, kind: str = "default") -> float:
    """The bound of ``kind`` for ``dtype`` (see ``TOLERANCES``)."""
    return TOLERANCES[np.dtype(dtype)][kind]


def logit_tol(dtype, zmax: float) -> float:
    """The bound for results computed from logits as large as ``zmax``: the logits themselves carry a rounding
    error of about eps |z|, which exp turns into that relative error of the probabilities (and of what depends on
    them), so the bound grows with |z|: max(default, 2 eps zmax)."""
    return max(tol(dtype), 2 * float(np.finfo(dtype).eps) * zmax)


C_ROUNDING = 64.0


def dense_targets(y, head, n, k):
    """(N, k) float64 targets: softmax labels as one-hot rows, sigmoid (N,) as (N, 1)."""
    y = np.asarray(y)
    if head == "softmax" and y.ndim == 1:
        T = np.zeros((n, k))
        T[np.arange(n), y.astype(np.int64)] = 1.0
        return T
    return y.astype(np.float64).reshape(n, k)


def error_scales(Ws, bs, X, y, sample_weight, head, reduction, dtype):
    """Error scales E (in units of u of ``dtype``, the native computation's) of every result, from float64
    inputs holding exactly the values the native core computes on: a dict with "loss" (float), "P"
    (forward probabilities), "dW", "db" (lists) and "dX".

    Each operation adds its own rounding, u times the magnitudes of its operands (for a sum: u sum|terms|,
    which keeps the bound meaningful under cancellation), plus the propagated errors of its inputs times
    the operation's sensitivity.  Forward: z_l = h W + b gets |h| |W| + |b| plus E_h |W|; h = sigmoid(z)
    gets h (its own rounding) plus sigmoid'(z) E_z.  Head: p = sigmoid(z) (softmax(z)) is off by
    p (1 - p) E_z (p (E_z + max E_z)); delta_L = c (p - t) (c (p sum t - t)) by c times that plus
    |p| + |t| (identity: p = z, delta_L = c (z - t) off by c (E_z + |z| + |t|)).  Backward: dW = h^T delta, db = sum delta, dh = delta W^T get the magnitudes of their
    products plus the propagated errors; delta_{l-1} = dh * h (1 - h) also gets |dh| |1 - 2h| E_h, the
    error of h (1 - h) computed from a rounded h, which is large relative to h (1 - h) when h is near 0
    or 1 (saturated units: the ill-conditioned step of the backward pass).  Loss: sum_i c_i l_i of
    non-negative terms; l_i is off by |dl_i/dz| E_z.  Underflow: exp-based values (h, p, each loss term)
    below the smallest normal number may be flushed to zero, an absolute error of up to ``tiny``
    (1.2e-38 in float32), i.e. tiny / u in E (float32: a loss of 1e-72 computes as 0)."""
    n = X.shape[0]
    w = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    c = w / w.sum() if reduction == "mean" else w
    r = _passes(Ws, bs, X, y, c, head, dtype)
    out = {"loss": float(np.abs(c) @ r["El"]), "P": r["Ep"], "dW": [None] * len(Ws), "db": [None] * len(Ws),
           "dX": r["Edh0"]}
    for l, (h, Eh, ad, Et) in enumerate(zip(r["hs"], r["Ehs"], r["ads"], r["Ets"])):
        out["dW"][l] = np.abs(h).T @ Et + Eh.T @ ad
        out["db"][l] = Et.sum(axis=0)
    return out


def _passes(Ws, bs, X, y, c, head, dtype):
    """The forward and backward passes of error_scales with the samples' factors c (N,): per layer l the input
    hs[l] and its scale Ehs[l], delta_l = c_i dl_i/dz_l deltas[l], |delta_l| ads[l] and Ets[l] (the propagated
    error of delta_l plus each product's own rounding); the head's Ep and per-sample El; Edh0, the scale of dL/dX."""
    n, k, L = X.shape[0], Ws[-1].shape[1], len(Ws)
    fi = np.finfo(dtype)
    eta = float(fi.tiny) / (float(fi.eps) / 2)  # underflow, in units of u
    T = dense_targets(y, head, n, k)
    aW = [np.abs(W) for W in Ws]

    h, Eh = X, np.zeros_like(X)  # X is exact: the caller passes the converted values
    hs, Ehs = [], []
    for l in range(L):
        hs.append(h)
        Ehs.append(Eh)
        z = h @ Ws[l] + bs[l]
        Ez = np.abs(h) @ aW[l] + np.abs(bs[l]) + Eh @ aW[l]
        if l < L - 1:
            h = reference.sigmoid_forward(z)
            Eh = h * (1 - h) * Ez + h + eta
    cc = np.abs(c)[:, None]
    if head == "sigmoid":
        p = reference.sigmoid_forward(z)
        Ep = p * (1 - p) * Ez + p + eta
        delta = c[:, None] * (p - T)
        Edelta = cc * (Ep + p + T)
        El = reference.sigmoid_xent_forward(z, T) + (np.abs(p - T) * Ez).sum(axis=1) + k * eta
    elif head == "identity":  # p = z; r = z - t rounds to u (|z| + |t|) besides z's own error
        p, Ep = z, Ez
        r = z - T
        delta = c[:, None] * r
        Edelta = cc * (Ez + np.abs(z) + np.abs(T))
        El = reference.identity_forward(z, T) + (np.abs(r) * (Ez + np.abs(z) + np.abs(T))).sum(axis=1)
    else:
        p = reference.softmax_forward(z)
        Ezm = Ez + Ez.max(axis=1, keepdims=True)  # z_j - max z; every p_j depends on every z_j
        Ep = p * (Ezm + 1) + eta
        st = T.sum(axis=1, keepdims=True)
        delta = c[:, None] * (p * st - T)
        Edelta = cc * (Ep * st + p * st + T)
        El = reference.softmax_xent_forward(z, T) + (T * Ezm).sum(axis=1) + k * eta
    out = {"hs": hs, "Ehs": Ehs, "deltas": [None] * L, "ads": [None] * L, "Ets": [None] * L, "Ep": Ep, "El": El}

    ad = np.abs(delta)
    for l in reversed(range(L)):
        h, Eh = hs[l], Ehs[l]
        Et = Edelta + ad  # the propagated error of delta and the rounding of each product
        out["deltas"][l], out["ads"][l], out["Ets"][l] = delta, ad, Et
        dh = delta @ Ws[l].T
        Edh = Et @ aW[l].T
        if l > 0:
            s = h * (1 - h)
            Edelta = Edh * s + np.abs(dh) * (np.abs(1 - 2 * h) * Eh + s)
            delta = dh * s
            ad = np.abs(delta)
        else:
            out["Edh0"] = Edh
    return out


def per_sample_error_scales(Ws, bs, X, y, head, dtype):
    """(G, EG): the per-sample gradients G (N, P) (row i = g_i, each sample's own loss, pack order) from float64
    inputs holding exactly the native core's values, and the error scales EG (N, P) of the native ones in units of
    u, from error_scales' passes with unit factors: the W_l part of g_i, h_{l-1,i} delta_{l,i}^T, gets
    |h| Et + E_h |delta|, the b_l part Et (Et: delta's propagated error plus the product's rounding).

    What is computed from the rows gets the scale of its operations on (G, EG), as in error_scales: a norm
    ||g_i|| gets ||E_G,i|| + ||g_i|| (the propagated error, and the rounding of its sum of squares); a sum of
    products a b over samples or parameters gets sum (E_a |b| + |a| E_b + |a b|)."""
    n = X.shape[0]
    r = _passes(Ws, bs, X, y, np.ones(n), head, dtype)
    G, EG = [], []
    for h, Eh, d, ad, Et in zip(r["hs"], r["Ehs"], r["deltas"], r["ads"], r["Ets"]):
        size = h.shape[1] * d.shape[1]
        G.append(np.einsum("ni,nj->nij", h, d).reshape(n, size))
        EG.append((np.einsum("ni,nj->nij", np.abs(h), Et) + np.einsum("ni,nj->nij", Eh, ad)).reshape(n, size))
    return np.concatenate(G + r["deltas"], axis=1), np.concatenate(EG + r["Ets"], axis=1)


def check(what, got, want, E, dtype, rel=None, worst=None, key=None):
    """Assert max|got - want| <= max(rel max|want|, C u max(E)) (see the module docstring; ``rel`` defaults to
    ``tol(dtype, "floored")``); return the error as a fraction of the allowed one.  ``worst``: a dict keeping the
    largest fraction per ``key``."""
    dtype = np.dtype(dtype)
    got, want, E = (np.asarray(a, dtype=np.float64) for a in (got, want, E))
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    if want.size == 0:
        return 0.0
    rel = tol(dtype, "floored") if rel is None else rel
    u = float(np.finfo(dtype).eps) / 2
    scale = float(np.max(np.abs(want)))
    allowed = max(rel * scale, C_ROUNDING * u * float(np.max(E)))
    diff = float(np.max(np.abs(got - want)))  # NaN if either has NaN: then the assert below fails
    frac = diff / allowed if allowed > 0 else (0.0 if diff == 0 else float("inf"))
    if worst is not None and not frac <= worst.get(key, (-1.0,))[0]:
        worst[key] = (frac, what, diff / max(scale, 1e-300), diff / max(u * float(np.max(E)), 1e-300))
    assert frac <= 1.0, (f"{what}: max|native - reference| = {diff:.3e} > allowed {allowed:.3e} "
                         f"(max|reference| {scale:.3e}, u max(E) {u * float(np.max(E)):.3e})")
    return frac


def curvature_error_scale(Ws, bs, X, y, sample_weight, head, reduction, dtype, V=None, op="ggn_vp"):
    """The magnitude E of the rounding error of hvp / ggn_vp (V (P,) or (P, m)) or ggn_diag, in units of u, for
    ``check``: the same products with every factor replaced by its absolute value (|W|, |X|, |V|, |delta|), so
    that terms which cancel in the result count with their size. The slopes h (1 - h) and the head's p (1 - p)
    (and p - t) count as h (1 - h) + h: computed from a rounded h or p near 1 they are off by about u h (a
    hidden unit or an output in saturation). Only max(E) enters check's floor. float64 arrays in, float64 out;
    ``dtype`` is not used (E is in units of u), kept for the call's symmetry with error_scales."""
    hs, z = reference._forward_pass(Ws, bs, X)
    ahs = [np.abs(hs[0])] + hs[1:]
    slopes = [None] + [h * (1 - h) + h for h in hs[1:]]
    aWs = [np.abs(W) for W in Ws]
    n, k = z.shape
    w = np.ones(n) if sample_weight is None else np.abs(np.asarray(sample_weight, dtype=np.float64))
    c = w / w.sum() if reduction == "mean" and n else w
    p = reference.head_output(head, z)
    t = reference._dense_targets(reference.check_problem(Ws, bs, X, y, head, "sum", None))
    s = t.sum(axis=1) if head == "softmax" else np.ones(n)

    def abs_head(r):  # |c Hhead| |r|, the slope p (1 - p) counted as p (1 - p) + p
        if head == "sigmoid":
            return c[:, None] * (p * (1 - p) + p) * r
        if head == "identity":
            return c[:, None] * r
        return (c * s)[:, None] * (p * r + p * (p * r).sum(axis=1, keepdims=True))

    def backward(top, squares=False):  # weight products of the absolute backward of the output rows `top`
        dWs, dbs, delta = [], [], top
        for l in reversed(range(len(Ws))):
            h = ahs[l] ** 2 if squares else ahs[l]
            d = delta ** 2 if squares else delta
            dWs.insert(0, h.T @ d)
            dbs.insert(0, d.sum(axis=0))
            if l > 0:
                delta = (delta @ aWs[l].T) * slopes[l]
        return dWs, dbs

    def flat(dWs, dbs):
        return np.concatenate([a.ravel() for a in dWs] + list(dbs))

    if op == "ggn_diag":
        E = 0
        for j in range(k):
            col = np.zeros((n, k))
            col[:, j] = 1.0
            factor = np.sqrt(np.abs(abs_head(col))) + (np.sqrt((c * s)[:, None] * p) * p if head == "softmax" else 0)
            E = E + flat(*backward(factor, squares=True))
        return E
    V2 = np.abs(np.asarray(V, dtype=np.float64)).reshape(sum(W.size + b.size for W, b in zip(Ws, bs)), -1)
    sizes = [W.shape[0] for W in Ws] + [Ws[-1].shape[1]]
    ordinary = None
    if op == "hvp":  # |delta_l| of the ordinary backward, from |c (p - t)| floored by c u p (u (|z| + |t|) identity)
        ordinary = [None] * len(Ws)
        delta = c[:, None] * (np.abs(p - t) + (np.abs(p) + np.abs(t) if head == "identity" else p))
        for l in reversed(range(len(Ws))):
            ordinary[l] = delta
            if l > 0:
                delta = (delta @ aWs[l].T) * slopes[l]
    cols = []
    for v in V2.T:
        VW, Vb = mlpgrad_unpack(v, sizes)
        R_hs, R_z = [np.zeros_like(ahs[0])], None
        for l in range(len(Ws)):
            R_z = R_hs[l] @ aWs[l] + ahs[l] @ VW[l] + Vb[l]
            if l + 1 < len(Ws):
                R_hs.append(slopes[l + 1] * R_z)
        top = abs_head(R_z)
        if op == "ggn_vp":
            cols.append(flat(*backward(top)))
            continue
        dWs, dbs, R_delta = [None] * len(Ws), [None] * len(Ws), top
        for l in reversed(range(len(Ws))):
            dWs[l] = R_hs[l].T @ ordinary[l] + ahs[l].T @ R_delta
            dbs[l] = R_delta.sum(axis=0)
            if l > 0:
                dh = ordinary[l] @ aWs[l].T
                R_delta = (R_delta @ aWs[l].T + ordinary[l] @ VW[l].T) * slopes[l] + dh * R_hs[l]
        cols.append(flat(dWs, dbs))
    return np.stack(cols, axis=1).reshape(np.shape(V))


def mlpgrad_unpack(v, sizes):
    """(V_Ws, V_bs): a flat (P,) vector's parts in pack order."""
    import mlpgrad
    return mlpgrad.unpack(v, sizes)
