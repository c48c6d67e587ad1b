"""Property-based fuzzing: the native core against the NumPy reference on random problems.

Hypothesis draws the *structure* of a problem and a seed; NumPy draws the values from the seed.  The
structure: depth 1-5; widths 1-16 (every width <= 16 selects the native "narrow" engine) or 1-70; N
0-300, or for one narrow network in five 1025-3100 (several chunks and gradient groups); float32 / float64;
head; targets (softmax: integer labels of several dtypes or integral floats, one-hot, soft, unnormalized
non-negative rows; sigmoid: hard or soft, (N,) or (N, 1) when k == 1, bool / uint8 / another float
dtype; identity: real values, (N,) or (N, 1) when k == 1, another float dtype); reduction; sample weights (none, random, with exact zeros, integers); input_grad; n_threads
(None, 1, 2, 3); X of another dtype (float16, int8, the other float), or sparse (issue 15: a scipy.sparse CSR, CSC
or COO matrix or array of X with a drawn share of zeros, X2 of grad_gram too); the memory layout of X, of every
weight and bias, of y and of the sample weights (C, Fortran, strided views into NaN-filled buffers,
negative strides, zero-stride broadcasts), read-only or not; the native schedule (default, or forced
to chunked or layered by ``_problems.forced_schedule``, the core's switch for experiments: both code paths run
on small problems too).  Properties:

* ``test_native_matches_reference``: ordinary scales.  ``loss_and_grad`` and ``loss`` and / or
  ``forward`` (drawn) agree with the reference, run in float64 on exactly the values the native core computes on
  (tolerance: ``_bounds.check``: relative max-norm error 1e-10 in float64 and 1e-4 in float32, the
  denominator floored by a running rounding-error bound to allow for cancellation and conditioning; the
  module docstring of ``_bounds`` justifies it); the results have the documented types, shapes and
  dtype; the caller's arrays, and the buffers views look into, are bitwise unchanged.
* ``test_large_weight_scales``: per-layer weight (and bias) scales 10**U(-1, 3): saturated hidden units,
  logits in the thousands.  Loss, gradients and probabilities finite, and the same agreement.
* Both also run one per-sample function (issue 12) on the problem, drawn with its options: norms whole or per
  layer; clipped_grad whole or per layer at 0.9 times a quantile of the norms (or inf), with the problem's
  reduction and weights; per_sample_grads with or without out=; grad_dot with V (P,) or (P, m), m up to 70 (two
  native passes), of another dtype and layout; grad_gram on X, y or a second set of 0-37 rows; sum_squared_grads
  with the weights.  The native result agrees with the reference's within ``_bounds.check`` of its error scale
  (``_bounds.per_sample_error_scales``: the per-sample gradients' scales, combined as each quantity combines
  them), is finite, has the documented type, shape and dtype, and equals the Objective's method bit for bit.
* Or, as often, one curvature product (issue 13): hvp or ggn_vp with V drawn as grad_dot's (up to 20 columns:
  two native blocks), or ggn_diag, with the problem's reduction and weights: finite, of the documented shape and
  dtype, the Objective's method bit for bit, and within ``_bounds.check`` of the reference, E from
  ``_bounds.curvature_error_scale`` (the same products on absolute values).

Profiles (tests/conftest.py): "ci" (default) runs 1000 derandomized examples per test;
``HYPOTHESIS_PROFILE=dev`` runs 100 random ones.  Both properties are marked ``slow``; their ``_quick`` twins run
``QUICK_EXAMPLES`` examples in the inner loop (``pytest -m "not slow"``).  The largest errors seen are printed after
the run (tests/_report.py).
"""

from __future__ import annotations


import numpy as np
import pytest

pytest.importorskip("hypothesis")
from hypothesis import given, note, settings, strategies as st  # noqa: E402

import mlpgrad  # noqa: E402
from mlpgrad import reference  # noqa: E402
import _report  # noqa: E402
from _bounds import check, curvature_error_scale, error_scales, per_sample_error_scales  # noqa: E402
from _problems import forced_schedule, make_network, make_targets  # noqa: E402

try:
    import scipy.sparse as scipy_sparse
except ImportError:  # scipy is in the "test" extra; without it X stays dense
    scipy_sparse = None

# A failing example makes hypothesis's pytest plugin import libcst (to write a patch file), and an old
# libcst warns on import; with filterwarnings=error that would turn the report into an INTERNALERROR.
pytestmark = pytest.mark.filterwarnings("ignore:mypy_extensions.TypedDict is deprecated:DeprecationWarning")

# The largest error per (property, dtype), as a fraction of the allowed error: printed after the run.
WORST = {}


@_report.section("fuzz: largest native error as a fraction of the allowed one (as a relative max-norm error; "
                 "in units of u max(E))")
def _worst_errors():
    return [f"  {record}, {dtype}: {frac:.3g} at {what} (rel {rel:.2e}; {in_u:.3g} u max E)"
            for (record, dtype), (frac, what, rel, in_u) in sorted(WORST.items())]


# -- layouts --------------------------------------------------------------------------------------

LAYOUTS = ("C", "F", "strided", "negative", "bcast")


def with_layout(a, kind, rng, readonly=False):
    """``a`` in memory layout ``kind``: C or Fortran order, a strided view (steps 1-3 per axis, random
    offsets, C- or F-ordered parent buffer), the same with negative strides on some axes, or "bcast": a
    zero-stride view repeating a[0] (the values change to a[0]'s; both implementations see the same).
    Gaps of the parent buffer hold NaN (floats) so that a read outside the view shows in the results."""
    if kind == "C":
        out = np.array(a, order="C")
    elif kind == "F":
        out = np.array(a, order="F")
    elif kind == "bcast":
        return np.broadcast_to(a[:1], a.shape)  # read-only, stride 0 along axis 0
    else:
        steps = rng.integers(1, 4, size=a.ndim)
        steps[rng.integers(a.ndim)] = rng.integers(2, 4)  # at least one axis really strided
        offs = rng.integers(0, 3, size=a.ndim)
        shape = tuple(int(o + s * max(n, 1)) for o, s, n in zip(offs, steps, a.shape))
        fill = np.nan if a.dtype.kind == "f" else 0  # integer labels: 0 is valid (the reference reads them too)
        parent = np.full(shape, fill, dtype=a.dtype, order="F" if rng.random() < 0.5 else "C")
        out = parent[tuple(slice(int(o), int(o + s * n), int(s)) for o, s, n in zip(offs, steps, a.shape))]
        if kind == "negative":
            axes = [ax for ax in range(a.ndim) if rng.random() < 0.5] or [int(rng.integers(a.ndim))]
            out = np.flip(out, axis=axes)
        out[...] = a
    if readonly:
        out.flags.writeable = False
    return out


def _arrays(a):
    """The arrays of an input: itself, or a sparse matrix's values and indices (or coordinates)."""
    if not isinstance(a, np.ndarray):  # scipy.sparse
        return [a.data] + [getattr(a, name) for name in ("indices", "indptr") if hasattr(a, name)] + list(
            getattr(a, "coords", ()))
    return [a]


def _snapshot(inputs):
    """Bitwise record of arrays (and sparse matrices' arrays), and of the whole buffer each view looks into."""
    out = []
    for a in (arr for x in inputs for arr in _arrays(x)):
        base = a
        while isinstance(base.base, np.ndarray):
            base = base.base
        out.append((a.shape, a.strides, a.dtype.str, a.flags.writeable, a.tobytes(), base.tobytes()))
    return out


# -- problems -------------------------------------------------------------------------------------

PS_OPS = ("norms", "layer_norms", "clipped", "clipped_per_layer", "grads", "dot", "gram", "sumsq")
CURVATURE_OPS = ("hvp", "ggn_vp", "ggn_diag")  # issue 13: drawn as often as the per-sample functions together

@st.composite
def specs(draw, scaled=False):
    """The structure of one problem, as a dict; the values come from ``seed``."""
    depth = draw(st.integers(1, 5))
    cap = draw(st.sampled_from([16, 70]))
    sizes = draw(st.lists(st.integers(1, cap), min_size=depth + 1, max_size=depth + 1))
    n = draw(st.integers(0, 300))
    if cap == 16 and draw(st.integers(0, 4)) == 0:  # several 1024-row chunks of the narrow engine
        n = draw(st.integers(1025, 3100))
    dtype = draw(st.sampled_from(["float32", "float64"]))
    head = draw(st.sampled_from(["sigmoid", "softmax", "identity"]))
    k = sizes[-1]
    if head == "softmax":
        kind = draw(st.sampled_from(["labels", "onehot", "soft", "unnormalized"]))
        y_dtype = draw(st.sampled_from(["int64", "int32", "uint8", "int16", "float64", "float32"]
                                       if kind == "labels" else ["same", "float64", "float32"]))
        y_1d = kind == "labels"
    elif head == "identity":
        kind = "real"
        y_dtype = draw(st.sampled_from(["same", "float64", "float32"]))
        y_1d = k == 1 and draw(st.booleans())
    else:
        kind = draw(st.sampled_from(["hard", "soft"]))
        y_dtype = draw(st.sampled_from(["same", "float64", "float32"] + (["uint8", "bool"] if kind == "hard" else [])))
        y_1d = k == 1 and draw(st.booleans())  # sigmoid with k == 1: y (N,) or (N, 1)
    reduction = draw(st.sampled_from(["sum", "mean"]))
    if n == 0:
        reduction = "sum"  # "mean" of nothing raises (tested in test_inputs.py)
    spec = dict(
        sizes=sizes, n=n, dtype=dtype, head=head, kind=kind, y_dtype=y_dtype, y_1d=y_1d, reduction=reduction,
        sample_weight=draw(st.sampled_from(["none", "random", "zeros", "int"])),
        input_grad=draw(st.booleans()),
        also=draw(st.sampled_from(["loss", "forward", "both"])),  # besides loss_and_grad
        n_threads=draw(st.sampled_from([None, 1, 2, 3])),
        schedule=draw(st.sampled_from([None, None, "chunked", "layered"])),
        X_dtype=draw(st.sampled_from(["same", "same", "same", "float16", "int8", "other"])),
        X_layout=draw(st.sampled_from(LAYOUTS)),
        W_layouts=draw(st.lists(st.sampled_from(LAYOUTS), min_size=depth, max_size=depth)),
        b_layouts=draw(st.lists(st.sampled_from(LAYOUTS), min_size=depth, max_size=depth)),
        y_layout=draw(st.sampled_from(LAYOUTS)),
        w_layout=draw(st.sampled_from(LAYOUTS)),
        readonly=draw(st.booleans()),
        seed=draw(st.integers(0, 2**32 - 1)),
    )
    # log10 of each layer's weight scale: 0 (make_network's N(0, 1/d_in)), or -1 .. 3.
    spec["log_scales"] = (draw(st.lists(st.floats(-1.0, 3.0), min_size=depth, max_size=depth)) if scaled
                          else [0.0] * depth)
    # one per-sample function on the same problem, with its options
    spec["per_sample"] = dict(
        op=draw(st.sampled_from(PS_OPS if draw(st.booleans()) else CURVATURE_OPS)),
        clip=draw(st.sampled_from([0.1, 0.5, 0.9, np.inf])),  # max_norm: 0.9 times this quantile of the norms
        m=draw(st.sampled_from([None, 1, 3, 70])),  # V (P,), or (P, m): 70 makes two native passes of <= 64
        V_dtype=draw(st.sampled_from(["same", "float64", "float32", "int8"])),
        V_layout=draw(st.sampled_from(LAYOUTS)),
        n2=draw(st.sampled_from([None, None, 0, 1, 37])),  # grad_gram's second set (None: X, y themselves)
        out=draw(st.booleans()),  # per_sample_grads into out=
    )
    # X sparse (issue 15): a scipy.sparse format of X after zeroing a share 1 - X_density of it (X2 the same)
    spec["X_sparse"] = draw(st.sampled_from([None, None, None, "csr_matrix", "csr_array", "csc_matrix",
                                             "coo_array"]))
    spec["X_density"] = draw(st.sampled_from([0.0, 0.05, 0.3, 1.0]))
    return spec


def sparse_of(D, fmt, readonly):
    """D as the scipy.sparse matrix or array ``fmt`` (its values read-only with ``readonly``)."""
    X = getattr(scipy_sparse, fmt)(D)
    X.data.flags.writeable = not readonly
    return X


def build(spec):
    """(native arguments, float64 reference arguments): the reference gets exactly the values the native
    core computes on (X, targets and sample weights converted to the weights' dtype, then to float64)."""
    rng = np.random.default_rng(spec["seed"])
    dt = np.dtype(spec["dtype"])
    sizes, n, head = spec["sizes"], spec["n"], spec["head"]
    k = sizes[-1]
    Ws, bs = make_network(sizes, np.float64, rng)
    Ws = [(W * 10.0 ** s).astype(dt) for W, s in zip(Ws, spec["log_scales"])]
    bs = [(b * 10.0 ** s).astype(dt) for b, s in zip(bs, spec["log_scales"])]

    X = rng.standard_normal((n, sizes[0]))
    X = {"same": lambda: X.astype(dt), "float16": lambda: X.astype(np.float16),
         "int8": lambda: np.round(3 * X).astype(np.int8),
         "other": lambda: X.astype(np.float64 if dt == np.float32 else np.float32)}[spec["X_dtype"]]()

    kind = spec["kind"]
    if head == "softmax" and kind in ("labels", "onehot"):
        labels = rng.integers(0, k, size=n)
        y = labels.astype(spec["y_dtype"]) if kind == "labels" else np.eye(k)[labels]
    elif head == "softmax":
        y = make_targets("softmax", "soft", n, k, np.float64, rng)
        if kind == "unnormalized":  # non-negative rows of any sum, some exact zeros
            y = y * rng.uniform(0.0, 3.0, (n, 1)) * (rng.random((n, k)) < 0.7)
    elif head == "identity":
        y = make_targets("identity", "real", n, k, np.float64, rng).reshape(n, k)
        if spec["y_1d"]:
            y = y.reshape(n)
    else:
        y = make_targets("sigmoid", "labels" if kind == "hard" else "soft", n, k, np.float64, rng).reshape(n, k)
        if spec["y_1d"]:
            y = y.reshape(n)
    if y.dtype.kind == "f":
        y = y.astype(dt if spec["y_dtype"] == "same" else spec["y_dtype"])

    w = None
    if spec["sample_weight"] != "none":
        w = rng.uniform(0.0, 2.0, n).astype(dt)
        if spec["sample_weight"] == "zeros":
            w[rng.random(n) < 0.4] = 0
        elif spec["sample_weight"] == "int":
            w = rng.integers(0, 3, n)
        if spec["reduction"] == "mean" and n:
            w[0] = max(w[0], 1)  # a positive total weight, whatever the layout below keeps
    ro = spec["readonly"]
    Ws = [with_layout(W, kind_, rng, ro) for W, kind_ in zip(Ws, spec["W_layouts"])]
    bs = [with_layout(b, kind_, rng, ro) for b, kind_ in zip(bs, spec["b_layouts"])]
    if spec["X_sparse"] and X.dtype != np.float16 and scipy_sparse:  # scipy.sparse has no float16
        X = sparse_of(X * (rng.random(X.shape) < spec["X_density"]), spec["X_sparse"], ro)
    else:
        X = with_layout(X, spec["X_layout"], rng, ro)
    y = with_layout(y, spec["y_layout"], rng, ro)
    if w is not None:
        w = with_layout(w, spec["w_layout"], rng, ro)
    native = dict(Ws=Ws, bs=bs, X=X, y=y, w=w)

    def exact64(a):  # the values the native core computes on, in float64 (a sparse X dense)
        return (np.asarray(a) if isinstance(a, np.ndarray) else a.toarray()).astype(dt).astype(np.float64)

    ref = dict(Ws=[exact64(W) for W in Ws], bs=[exact64(b) for b in bs], X=exact64(X),
               y=np.asarray(y).astype(np.int64) if (head == "softmax" and y.ndim == 1) else exact64(y),
               w=None if w is None else exact64(w))
    return native, ref


def run_and_compare(spec, record):
    """Run the native API on the spec's problem: check the results' types, unchanged inputs and the
    agreement with the reference.  Returns the native (loss, gradients, probabilities, per-sample results)."""
    note(f"spec = {spec}")
    native, ref = build(spec)
    dt = np.dtype(spec["dtype"])
    head, red, sizes, n = spec["head"], spec["reduction"], spec["sizes"], spec["n"]
    Ws, bs, X, y, w = native["Ws"], native["bs"], native["X"], native["y"], native["w"]
    ps = per_sample_arguments(spec, native, ref)
    inputs = Ws + bs + [X, y] + ([] if w is None else [w]) + ps["inputs"]
    before, ids = _snapshot(inputs), [id(a) for a in Ws + bs]
    kw = dict(head=head, reduction=red, sample_weight=w, n_threads=spec["n_threads"])

    L2 = P = None
    with forced_schedule(spec["schedule"]):
        L, g = mlpgrad.loss_and_grad(Ws, bs, X, y, input_grad=spec["input_grad"], **kw)
        if spec["also"] != "forward":
            L2 = mlpgrad.loss(Ws, bs, X, y, **kw)
        if spec["also"] != "loss":
            P = mlpgrad.forward(Ws, bs, X, head=head, n_threads=spec["n_threads"])
        # the Objective on the same problem: the same native call on the packed parameters, the same bits
        obj = mlpgrad.Objective(sizes, X, y, dtype=dt, **kw)
        L_obj, g_obj = obj.loss_and_grad(mlpgrad.pack(Ws, bs))
        ps_result = per_sample_native(spec, native, ps, obj)

    assert _snapshot(inputs) == before, "the native API modified an input array"
    assert L_obj == L and np.array_equal(g_obj, mlpgrad.pack(g.weights, g.biases), equal_nan=True)
    assert [id(a) for a in Ws + bs] == ids
    assert type(L) is float and (L2 is None or type(L2) is float)
    assert isinstance(g, mlpgrad.Gradients) and len(g.weights) == len(g.biases) == len(Ws)
    for a, p in zip(g.weights + g.biases, Ws + bs):
        assert type(a) is np.ndarray and a.dtype == dt and a.shape == p.shape
    if spec["input_grad"]:
        assert type(g.input) is np.ndarray and g.input.dtype == dt and g.input.shape == (n, sizes[0])
    else:
        assert g.input is None
    assert P is None or (type(P) is np.ndarray and P.dtype == dt and P.shape == (n, sizes[-1]))

    R = ref
    L_ref, g_ref = reference.loss_and_grad(R["Ws"], R["bs"], R["X"], R["y"], head=head, reduction=red,
                                           sample_weight=R["w"], input_grad=True)
    E = error_scales(R["Ws"], R["bs"], R["X"], R["y"], R["w"], head, red, dt)
    key = (record, dt.name)
    check("loss", L, L_ref, E["loss"], dt, worst=WORST, key=key)
    if L2 is not None:
        check("loss()", L2, L_ref, E["loss"], dt, worst=WORST, key=key)
    for l in range(len(Ws)):
        check(f"dW[{l}]", g.weights[l], g_ref.weights[l], E["dW"][l], dt, worst=WORST, key=key)
        check(f"db[{l}]", g.biases[l], g_ref.biases[l], E["db"][l], dt, worst=WORST, key=key)
    if spec["input_grad"]:
        check("dX", g.input, g_ref.input, E["dX"], dt, worst=WORST, key=key)
    if P is not None:
        P_ref = reference.forward(R["Ws"], R["bs"], R["X"], head=head)
        check("forward", P, P_ref, E["P"], dt, worst=WORST, key=key)
    per_sample_compare(spec, ps, ps_result, ref, E["loss"], key)
    return L, g, P, ps_result


# -- the per-sample functions (issue 12) on the same problem -----------------------------------------

def _quantile_level(norms, q):
    """max_norm for clip quantile q of norms (N,): 0.9 times the quantile (some samples clipped), 1 when it is 0."""
    if q == np.inf or norms.shape[0] == 0:
        return float(q) if q == np.inf else 1.0
    level = 0.9 * float(np.quantile(norms, q))
    return level if level > 0 else 1.0


def per_sample_arguments(spec, native, ref):
    """The drawn per-sample call's arguments (max_norm, V, X2 / y2, out), native and exact float64, with the
    float64 per-sample gradients G and their error scales EG (_bounds.per_sample_error_scales) of each set.
    "inputs": the caller's arrays among them (checked unchanged)."""
    o = spec["per_sample"]
    dt = np.dtype(spec["dtype"])
    R = ref
    rng = np.random.default_rng(spec["seed"] + 1)
    G, EG = per_sample_error_scales(R["Ws"], R["bs"], R["X"], R["y"], spec["head"], dt)
    n, P = G.shape
    layers = np.concatenate([np.full(W.size, l) for l, W in enumerate(R["Ws"])]
                            + [np.full(b.size, l) for l, b in enumerate(R["bs"])])
    ps = dict(G=G, EG=EG, layers=layers, inputs=[], native={}, ref={})
    if o["op"] in ("clipped", "clipped_per_layer"):
        if o["op"] == "clipped":
            clip = _quantile_level(np.sqrt((G * G).sum(axis=1)), o["clip"])
        else:
            clip = [_quantile_level(np.sqrt((G[:, layers == l] ** 2).sum(axis=1)), o["clip"])
                    for l in range(len(R["Ws"]))]
        ps["native"]["max_norm"] = ps["ref"]["max_norm"] = clip
    elif o["op"] in ("dot", "hvp", "ggn_vp"):
        m = o["m"] if o["op"] == "dot" or o["m"] is None else min(o["m"], 20)  # 20: two native curvature blocks
        V = rng.standard_normal((P, m or 1))
        V = np.round(3 * V).astype(np.int8) if o["V_dtype"] == "int8" else V.astype(
            dt if o["V_dtype"] == "same" else o["V_dtype"])
        V = with_layout(V[:, 0] if m is None else V, o["V_layout"], rng, spec["readonly"])
        ps["native"]["V"] = V
        ps["ref"]["V"] = np.asarray(V).astype(dt).astype(np.float64)
        ps["inputs"].append(V)
    elif o["op"] == "gram":
        n2 = o["n2"]
        if n2 is None and n * n * P > 5e7:  # the reference's G G^T and its bound: a second set instead
            n2 = 37
        if n2 is not None:
            native2, ref2 = build(dict(spec, n=n2, seed=spec["seed"] + 2))
            ps["native"].update(X2=native2["X"], y2=native2["y"])
            ps["ref"].update(X2=ref2["X"], y2=ref2["y"])
            ps["inputs"] += [native2["X"], native2["y"]]
            ps["G2"], ps["EG2"] = per_sample_error_scales(R["Ws"], R["bs"], ref2["X"], ref2["y"], spec["head"], dt)
        else:
            ps["G2"], ps["EG2"] = G, EG
    elif o["op"] == "grads" and o["out"]:
        ps["native"]["out"] = np.full((n, P), np.nan, dtype=dt)
    return ps


def per_sample_native(spec, native, ps, obj):
    """The drawn per-sample function's native results as a dict of arrays, and the Objective's method on the
    same problem giving the same bits."""
    o, a = spec["per_sample"], ps["native"]
    Ws, bs, X, y, w = native["Ws"], native["bs"], native["X"], native["y"], native["w"]
    head, threads = spec["head"], spec["n_threads"]
    theta = mlpgrad.pack(Ws, bs)
    op = o["op"]
    if op in ("norms", "layer_norms"):
        r = {"norms": mlpgrad.per_sample_grad_norms(Ws, bs, X, y, head=head, per_layer=op == "layer_norms",
                                                    n_threads=threads)}
        same = [(obj.per_sample_grad_norms(theta, per_layer=op == "layer_norms"), r["norms"])]
    elif op.startswith("clipped"):
        loss, g, norms = mlpgrad.clipped_grad(Ws, bs, X, y, head=head, max_norm=a["max_norm"],
                                              reduction=spec["reduction"], sample_weight=w, n_threads=threads)
        assert type(loss) is float and g.input is None
        r = {"loss": np.array(loss), "grad": mlpgrad.pack(g.weights, g.biases), "norms": norms}
        same = list(zip(obj.clipped_grad(theta, a["max_norm"]), r.values()))
    elif op == "grads":
        r = {"rows": mlpgrad.per_sample_grads(Ws, bs, X, y, head=head, out=a.get("out"), n_threads=threads)}
        assert a.get("out") is None or r["rows"] is a["out"]
        same = [(obj.per_sample_grads(theta), r["rows"])]
    elif op == "dot":
        r = {"dot": mlpgrad.grad_dot(Ws, bs, X, y, a["V"], head=head, n_threads=threads)}
        same = [(obj.grad_dot(theta, a["V"]), r["dot"])]
    elif op == "gram":
        r = {"gram": mlpgrad.grad_gram(Ws, bs, X, y, a.get("X2"), a.get("y2"), head=head, n_threads=threads)}
        same = [(obj.grad_gram(theta, a.get("X2"), a.get("y2")), r["gram"])]
    elif op in CURVATURE_OPS:
        V = () if op == "ggn_diag" else (a["V"],)
        r = {op: getattr(mlpgrad, op)(Ws, bs, X, y, *V, head=head, reduction=spec["reduction"], sample_weight=w,
                                      n_threads=threads)}
        same = [(getattr(obj, op)(theta, *V), r[op])]
    else:
        g = mlpgrad.sum_squared_grads(Ws, bs, X, y, head=head, sample_weight=w, n_threads=threads)
        assert g.input is None
        r = {"grad": mlpgrad.pack(g.weights, g.biases)}
        same = [(obj.sum_squared_grads(theta), r["grad"])]
    for got, want in same:
        assert np.array_equal(got, want, equal_nan=True), f"{op}: the Objective's method differs from the function"
    return r


def per_sample_compare(spec, ps, r, ref, E_loss, key):
    """The native per-sample results against the reference's, each within _bounds.check of its error scale
    (per_sample_error_scales' rules), with the documented shapes and dtype."""
    o, a = spec["per_sample"], ps["ref"]
    dt = np.dtype(spec["dtype"])
    R, head, op = ref, spec["head"], spec["per_sample"]["op"]
    G, EG, layers = ps["G"], ps["EG"], ps["layers"]
    n, P = G.shape
    L = len(R["Ws"])
    data = (R["Ws"], R["bs"], R["X"], R["y"])
    aG = np.abs(G)

    def norm_scales(per_layer):  # ||E_G,i|| + ||g_i|| (N, L) by layer, or (N, 1)
        cols = [layers == l for l in range(L)] if per_layer else [slice(None)]
        return np.stack([np.sqrt((EG[:, c] ** 2).sum(axis=1)) + np.sqrt((G[:, c] ** 2).sum(axis=1))
                         for c in cols], axis=1)

    def flat_check(what, got, want, E):  # tensor by tensor: dW_l, db_l
        sizes = [W.shape[0] for W in R["Ws"]] + [R["Ws"][-1].shape[1]]
        for part, (g_, w_, e_) in enumerate(zip(*(mlpgrad.unpack(x, sizes)[0] + mlpgrad.unpack(x, sizes)[1]
                                                  for x in (got, want, E)))):
            name = f"dW[{part}]" if part < L else f"db[{part - L}]"
            check(f"{what} {name}", g_, w_, e_, dt, worst=WORST, key=key)

    for name, value in r.items():
        assert type(value) is np.ndarray and value.dtype == (np.float64 if name == "loss" else dt), name
    if op in ("norms", "layer_norms"):
        per_layer = op == "layer_norms"
        want = reference.per_sample_grad_norms(*data, head=head, per_layer=per_layer)
        assert r["norms"].shape == ((n, L) if per_layer else (n,))
        check(op, r["norms"], want, norm_scales(per_layer).reshape(want.shape), dt, worst=WORST, key=key)
    elif op.startswith("clipped"):
        per_layer = op == "clipped_per_layer"
        loss, g, norms = reference.clipped_grad(*data, head=head, max_norm=a["max_norm"],
                                                reduction=spec["reduction"], sample_weight=R["w"])
        c = np.ones(n) if R["w"] is None else R["w"]
        if spec["reduction"] == "mean":
            c = c / c.sum()
        limit = np.asarray(a["max_norm"], dtype=np.float64)
        nrm = norms.reshape(n, L if per_layer else 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            f = np.where(nrm > limit, limit / nrm, 1.0)
            rel = np.where(nrm > 0, norm_scales(per_layer) / nrm, 0.0)  # the norm's error, relative
        col = layers if per_layer else np.zeros(P, dtype=np.int64)
        E = (np.abs(c)[:, None] * f[:, col] * (EG + aG * (rel[:, col] + 2))).sum(axis=0)
        check(f"{op} loss", float(r["loss"]), loss, E_loss, dt, worst=WORST, key=key)
        assert r["norms"].shape == norms.shape
        check(f"{op} norms", r["norms"], norms, norm_scales(per_layer).reshape(norms.shape), dt, worst=WORST, key=key)
        flat_check(op, r["grad"], mlpgrad.pack(g.weights, g.biases), E)
    elif op == "grads":
        want = reference.per_sample_grads(*data, head=head)
        check(op, r["rows"], want, EG, dt, worst=WORST, key=key)
    elif op == "dot":
        V = a["V"]
        want = reference.grad_dot(*data, V, head=head)
        E = (EG + aG) @ np.abs(V.reshape(P, -1))
        check(op, r["dot"], want, E.reshape(want.shape), dt, worst=WORST, key=key)
    elif op == "gram":
        want = reference.grad_gram(*data, a.get("X2"), a.get("y2"), head=head)
        G2, EG2 = ps["G2"], ps["EG2"]
        E = (EG + aG) @ np.abs(G2).T + aG @ EG2.T
        check(op, r["gram"], want, E, dt, worst=WORST, key=key)
    elif op in CURVATURE_OPS:
        V = () if op == "ggn_diag" else (a["V"],)
        want = getattr(reference, op)(*data, *V, head=head, reduction=spec["reduction"], sample_weight=R["w"])
        assert r[op].shape == want.shape
        E = curvature_error_scale(*data, R["w"], head, spec["reduction"], dt, *V, op=op)
        check(op, r[op], want, E, dt, worst=WORST, key=key)
    else:
        g = reference.sum_squared_grads(*data, head=head, sample_weight=R["w"])
        w = np.ones(n) if R["w"] is None else np.abs(R["w"])
        flat_check(op, r["grad"], mlpgrad.pack(g.weights, g.biases), w @ (2 * aG * EG + G * G))


def _large_weight_scales(spec):
    L, g, P, ps_result = run_and_compare(spec, "weight scales up to 1e3")
    assert np.isfinite(L)
    for a in g.weights + g.biases + ([g.input] if g.input is not None else []):
        assert np.all(np.isfinite(a))
    assert P is None or (np.all(np.isfinite(P)) if spec["head"] == "identity" else np.all((P >= 0) & (P <= 1)))
    assert all(np.all(np.isfinite(a)) for a in ps_result.values()), f"{spec['per_sample']['op']}: not finite"


@pytest.mark.slow
@given(specs())
def test_native_matches_reference(spec):
    run_and_compare(spec, "ordinary scales")


@pytest.mark.slow
@given(specs(scaled=True))
def test_large_weight_scales(spec):
    """Per-layer weight (and bias) scales 10**U(-1, 3): saturated hidden sigmoids, logits up to thousands.
    Everything finite (the losses come from the logits), and the reference's answer within the bound."""
    _large_weight_scales(spec)


# The inner loop's share of the two properties (pytest -m "not slow"): a few examples of each, so that a change
# that breaks them shows at once; the profile's other settings (derandomized in "ci") still apply.
QUICK_EXAMPLES = 25


@settings(max_examples=QUICK_EXAMPLES)
@given(specs())
def test_native_matches_reference_quick(spec):
    run_and_compare(spec, "ordinary scales")


@settings(max_examples=QUICK_EXAMPLES)
@given(specs(scaled=True))
def test_large_weight_scales_quick(spec):
    _large_weight_scales(spec)
