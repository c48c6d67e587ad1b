"""mlpgrad.MLPClassifier: scikit-learn's conventions (check_estimator), the same steps as scikit-learn's
MLPClassifier(activation="logistic") from the same random_state, and the extras (flat buffer, input
gradients, progress bar, plots, PyTorch input). Skipped when scikit-learn is not installed."""

import inspect
import pickle
import subprocess
import sys

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")
pytest.importorskip("scipy")

from sklearn.datasets import make_classification, make_multilabel_classification  # noqa: E402
from sklearn.neural_network import MLPClassifier as SkMLP  # noqa: E402

import mlpgrad  # noqa: E402
from mlpgrad import _native  # noqa: E402
from mlpgrad.estimator import MLPClassifier, _as_numpy  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

SK_SAMPLE_WEIGHT = "sample_weight" in inspect.signature(SkMLP.fit).parameters  # scikit-learn >= 1.7


def _data(kind, n=240, d=8, seed=0):
    if kind == "multilabel":
        X, y = make_multilabel_classification(n, d, n_classes=3, random_state=seed)
        return X / X.max(), y
    n_classes = {"binary": 2, "multiclass": 4}[kind]
    X, y = make_classification(n, d, n_informative=5, n_classes=n_classes, random_state=seed)
    return X, y


def _max_diff(a, b):
    return max(float(np.max(np.abs(p - q))) for p, q in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_))


SOLVERS = ["sgd", "adam", "lbfgs", "newton-cg"]


# ------------------------------------------------------------------ scikit-learn's conventions

@pytest.mark.slow
@pytest.mark.parametrize("solver", ["adam", "newton-cg"])
def test_check_estimator(solver):
    """Every check of sklearn.utils.estimator_checks passes, with the default solver and with newton-cg (lbfgs's
    code path but for its optimizer). Skipped by check_estimator itself, depending on the environment: the pandas
    checks (pandas not installed), check_array_api_input (needs SCIPY_ARRAY_API=1 and array-api-compat), and the
    decision_function check (the classifier has no decision_function)."""
    from sklearn.utils.estimator_checks import check_estimator
    kwargs = {"on_skip": None} if "on_skip" in inspect.signature(check_estimator).parameters else {}
    if "on_fail" in inspect.signature(check_estimator).parameters:  # scikit-learn >= 1.6: collect, then report
        results = check_estimator(MLPClassifier(max_iter=100, solver=solver), on_fail=None, **kwargs)
        failed = [(r["check_name"], repr(r["exception"])) for r in results if r["status"] == "failed"]
        assert not failed
        skipped = {r["check_name"] for r in results if r["status"] == "skipped"}
        allowed = {"check_sample_weights_pandas_series", "check_array_api_input", "check_classifier_data_not_an_array",
                   "check_classifiers_multilabel_output_format_decision_function", "check_dataframe_column_names_consistency",
                   "check_pandas_column_name_consistency", "check_n_features_in_after_fitting"}
        assert skipped <= allowed, skipped - allowed
    else:  # pragma: no cover - older scikit-learn raises on the first failure
        check_estimator(MLPClassifier(max_iter=100, solver=solver))


def test_defaults_match_scikit_learn():
    ours = MLPClassifier().get_params()
    theirs = SkMLP().get_params()
    shared = set(ours) & set(theirs)
    assert set(theirs) - shared == {"activation"}
    assert set(ours) - shared == {"dtype", "n_threads"}
    assert {k: ours[k] for k in shared} == {k: theirs[k] for k in shared}
    assert MLPClassifier.activation == "logistic"


# ------------------------------------------------------------------ the same steps as scikit-learn

SAME_STEP_CASES = [
    dict(solver="sgd", shuffle=False),
    dict(solver="sgd", shuffle=True),
    dict(solver="sgd", nesterovs_momentum=False, learning_rate="invscaling", learning_rate_init=0.1),
    dict(solver="sgd", momentum=0.0),
    dict(solver="adam", shuffle=False),
    dict(solver="adam", shuffle=True, alpha=0.1),
    dict(solver="adam", early_stopping=True),
    dict(solver="lbfgs"),
]


@pytest.mark.parametrize("kind", ["binary", "multiclass", "multilabel"])
@pytest.mark.parametrize("kw", SAME_STEP_CASES, ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()))
def test_same_steps_as_scikit_learn(kind, kw):
    """From the same random_state, float64: the same initial weights (checked with max_iter=1 steps
    undone... i.e. the same draws), the same mini-batches and the same optimizer steps. After 4 epochs
    (sgd, adam: 2 x 4 mini-batches each) or 4 L-BFGS iterations, the parameters agree to 1e-10 absolute
    (observed: ~1e-16 for sgd/adam, ~1e-13 for lbfgs, whose line searches amplify the rounding of the
    different summation orders) and so do the loss curves (rtol 1e-10)."""
    X, y = _data(kind)
    common = dict(hidden_layer_sizes=(12, 7), max_iter=4, random_state=3, batch_size=32, **kw)
    sk = SkMLP(activation="logistic", **common).fit(X, y)
    mg = MLPClassifier(**common).fit(X, y)
    assert mg.n_iter_ == sk.n_iter_
    assert mg.out_activation_ == sk.out_activation_
    assert [c.shape for c in mg.coefs_] == [c.shape for c in sk.coefs_]
    assert _max_diff(mg, sk) <= 1e-10
    assert mg.loss_ == pytest.approx(sk.loss_, rel=1e-10)
    if kw["solver"] != "lbfgs":
        np.testing.assert_allclose(mg.loss_curve_, sk.loss_curve_, rtol=1e-10)
        assert mg.t_ == sk.t_
    if kw.get("early_stopping"):
        np.testing.assert_allclose(mg.validation_scores_, sk.validation_scores_)
        assert len(mg.validation_loss_curve_) == len(mg.validation_scores_)
    np.testing.assert_array_equal(mg.predict(X), sk.predict(X))
    np.testing.assert_allclose(mg.predict_proba(X), sk.predict_proba(X), atol=1e-10)


def test_same_initial_weights():
    X, y = _data("multiclass")
    mg = MLPClassifier(hidden_layer_sizes=(5,), random_state=7, max_iter=1)
    sk = SkMLP(hidden_layer_sizes=(5,), activation="logistic", random_state=7, max_iter=1)
    # the draws of _initialize, before any step
    mg._random_state = np.random.RandomState(7)
    sk._random_state = np.random.RandomState(7)
    for est in (mg, sk):
        est._label_binarizer = sklearn.preprocessing.LabelBinarizer().fit(y)
    Y = mg._label_binarizer.transform(y)
    mg._initialize([8, 5, 4], np.dtype(np.float64))
    sk._initialize(Y, [8, 5, 4], np.float64)
    assert _max_diff(mg, sk) == 0.0


@pytest.mark.skipif(not SK_SAMPLE_WEIGHT, reason="scikit-learn < 1.7 has no sample_weight in MLPClassifier.fit")
@pytest.mark.parametrize("solver", ["sgd", "adam", "lbfgs"])
def test_same_steps_with_sample_weight(solver):
    X, y = _data("multiclass")
    sw = np.random.default_rng(0).uniform(0.1, 3.0, size=len(y))
    common = dict(hidden_layer_sizes=(10,), max_iter=3, random_state=0, batch_size=40, solver=solver)
    sk = SkMLP(activation="logistic", **common).fit(X, y, sample_weight=sw)
    mg = MLPClassifier(**common).fit(X, y, sample_weight=sw)
    assert _max_diff(mg, sk) <= 1e-10


def test_float32_close_to_float64():
    X, y = _data("multiclass")
    a = MLPClassifier(hidden_layer_sizes=(16,), max_iter=5, random_state=0).fit(X, y)
    b = MLPClassifier(hidden_layer_sizes=(16,), max_iter=5, random_state=0, dtype="float32").fit(X, y)
    assert b.coefs_[0].dtype == np.float32 and a.coefs_[0].dtype == np.float64
    assert _max_diff(a, b) < 1e-4
    c = MLPClassifier(hidden_layer_sizes=(16,), max_iter=5, random_state=0).fit(X.astype(np.float32), y)
    assert c.coefs_[0].dtype == np.float32  # dtype=None follows X, as scikit-learn does


# ------------------------------------------------------------------ every solver, and newton-cg

@pytest.mark.parametrize("kind", ["binary", "multiclass", "multilabel"])
@pytest.mark.parametrize("solver", SOLVERS)
def test_every_solver_fits_with_scikit_learns_attributes(kind, solver):
    """Every solver fits every target kind: n_iter_ iterations (at most max_iter), one loss_curve_ entry each, the
    last being loss_; newton-cg sets exactly lbfgs's fitted attributes."""
    X, y = _data(kind, n=120)
    est = MLPClassifier(hidden_layer_sizes=(7,), max_iter=4, random_state=0, solver=solver).fit(X, y)
    assert 1 <= est.n_iter_ <= 4 and len(est.loss_curve_) == est.n_iter_
    assert est.loss_ == est.loss_curve_[-1] and np.isfinite(est.loss_)
    assert est.predict(X).shape == np.shape(y) and est.predict_proba(X).shape[0] == len(X)
    if solver == "newton-cg":
        lbfgs = MLPClassifier(hidden_layer_sizes=(7,), max_iter=4, random_state=0, solver="lbfgs").fit(X, y)
        assert {k for k in vars(est) if k.endswith("_")} == {k for k in vars(lbfgs) if k.endswith("_")}
        assert est.best_loss_ == min(est.loss_curve_) and est.validation_scores_ is None


@pytest.mark.parametrize("solver", ["lbfgs", "newton-cg"])
def test_full_batch_integer_weights_repeat_rows(solver):
    """The full-batch objective with sample weight 2 on a row is the objective with that row twice (the mean over
    the total weight): the same iterates, up to the rounding of the other summation order."""
    X, y = _data("multiclass", n=80)
    w = np.where(np.arange(80) % 3 == 0, 2.0, 1.0)
    rep = np.repeat(np.arange(80), w.astype(int))
    kw = dict(hidden_layer_sizes=(6,), max_iter=5, random_state=0, solver=solver)
    a = MLPClassifier(**kw).fit(X, y, sample_weight=w)
    b = MLPClassifier(**kw).fit(X[rep], y[rep])
    assert a.n_iter_ == b.n_iter_
    assert _max_diff(a, b) <= 1e-9
    np.testing.assert_allclose(a.loss_curve_, b.loss_curve_, rtol=1e-12)


def _fit_objective(est, X, y):
    """The Objective that est's full-batch solver minimized (scikit-learn's mean loss and penalty alpha / N)."""
    Y = est._label_binarizer.transform(y)
    T = np.argmax(Y, axis=1) if est.out_activation_ == "softmax" else Y.reshape(len(X), -1).astype(float)
    head = "softmax" if est.out_activation_ == "softmax" else "sigmoid"
    return mlpgrad.Objective(est._layer_units(), X, T, head=head, reduction="mean", alpha=est.alpha / len(X))


def test_newton_cg_max_iter_warns_and_curve_decreases():
    """max_iter reached: scikit-learn's ConvergenceWarning naming max_iter; n_iter_ = max_iter, one loss per outer
    iteration, decreasing (every step passed a Wolfe line search), the last the objective at the fitted
    parameters."""
    from sklearn.exceptions import ConvergenceWarning
    X, y = _data("multiclass")
    est = MLPClassifier(hidden_layer_sizes=(10,), max_iter=3, random_state=0, solver="newton-cg", tol=0.0)
    with pytest.warns(ConvergenceWarning, match=r"(?s)newton-cg failed to converge after 3 iteration\(s\).*max_iter=3"):
        est.fit(X, y)
    assert est.n_iter_ == 3 and len(est.loss_curve_) == 3
    assert np.all(np.diff(est.loss_curve_) < 0)
    assert est.loss_ == pytest.approx(_fit_objective(est, X, y).loss(est._flat), rel=1e-12)


def test_newton_cg_stops_at_tol_without_warning():
    """tol is the bound on the gradient's largest component, as for lbfgs: the fit stops before max_iter, without
    a warning, at parameters whose gradient is within tol."""
    import warnings
    from sklearn.exceptions import ConvergenceWarning
    X, y = _data("binary")
    est = MLPClassifier(hidden_layer_sizes=(6,), max_iter=200, random_state=0, solver="newton-cg", tol=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        est.fit(X, y)
    assert est.n_iter_ < 200
    _, grad = _fit_objective(est, X, y).loss_and_grad(est._flat)
    print(f"newton-cg stopped after {est.n_iter_} iterations at max|grad| = {np.max(np.abs(grad)):.2e}")
    assert np.max(np.abs(grad)) <= 1e-3


def test_newton_cg_float32_close_to_float64():
    """float32 newton-cg keeps float32 parameters and follows the float64 fit's losses; the parameters drift more
    than lbfgs's (observed 6e-4 after 5 iterations, against 2e-7), as the conjugate gradients amplify the products'
    rounding."""
    X, y = _data("multiclass")
    kw = dict(hidden_layer_sizes=(16,), max_iter=5, random_state=0, solver="newton-cg")
    a = MLPClassifier(**kw).fit(X, y)
    b = MLPClassifier(dtype="float32", **kw).fit(X, y)
    assert b.coefs_[0].dtype == np.float32 and b.n_iter_ == a.n_iter_
    np.testing.assert_allclose(b.loss_curve_, a.loss_curve_, rtol=1e-4)
    assert _max_diff(a, b) < 1e-2


@pytest.mark.parametrize("kind", ["binary", "multiclass"])
def test_newton_cg_reaches_lbfgs_loss(kind):
    """On a small problem newton-cg reaches the training loss at which lbfgs stops (run to its own rule, tol
    1e-6), in far fewer outer iterations (observed: binary 36 against 1970, multiclass 20 against 1136)."""
    X, y = _data(kind)
    kw = dict(hidden_layer_sizes=(8,), random_state=0, tol=1e-6)
    lbfgs = MLPClassifier(solver="lbfgs", max_iter=3000, **kw).fit(X, y)
    newton = MLPClassifier(solver="newton-cg", max_iter=60, **kw).fit(X, y)
    reached = np.flatnonzero(np.array(newton.loss_curve_) <= lbfgs.loss_ * (1 + 1e-3))
    print(f"{kind}: lbfgs {lbfgs.loss_:.6f} after {lbfgs.n_iter_}; newton-cg {newton.loss_:.6f} after "
          f"{newton.n_iter_}, lbfgs's within 0.1% at iteration {reached[0] + 1 if reached.size else None}")
    assert reached.size and reached[0] + 1 < lbfgs.n_iter_


# ------------------------------------------------------------------ the native optimizer steps

def _adam_step_numpy(params, grads, m, v, n_reg, l2, lr, beta1, beta2, eps):
    """scikit-learn's AdamOptimizer step (its arithmetic, on the flat buffer), in NumPy."""
    g = grads.copy()
    g[:n_reg] += l2 * params[:n_reg]
    m *= beta1
    m += (1 - beta1) * g
    v *= beta2
    v += (1 - beta2) * (g * g)
    params -= lr * m / (np.sqrt(v) + eps)
    w = params[:n_reg]
    return float(np.dot(w, w))


def _sgd_step_numpy(params, grads, velocity, n_reg, l2, lr, momentum, nesterov):
    """scikit-learn's SGDOptimizer step (momentum, optionally Nesterov's), in NumPy."""
    g = grads.copy()
    g[:n_reg] += l2 * params[:n_reg]
    velocity *= momentum
    velocity -= lr * g
    if nesterov:
        params += momentum * velocity - lr * g
    else:
        params += velocity
    w = params[:n_reg]
    return float(np.dot(w, w))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("solver", ["adam", "sgd", "sgd-plain"])
def test_native_steps_match_numpy(dtype, solver):
    """One native step (a one-batch epoch of train_epoch) against the NumPy step on the same gradient."""
    rng = np.random.default_rng(1)
    sizes, N = [25, 30, 7], 40
    n = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
    n_reg = sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    X = rng.standard_normal((N, sizes[0])).astype(dtype)
    labels = rng.integers(0, sizes[-1], N)
    p0 = (0.3 * rng.standard_normal(n)).astype(dtype)
    s1 = [rng.standard_normal(n).astype(dtype), rng.uniform(0, 1, n).astype(dtype)]
    pa, pb = p0.copy(), p0.copy()
    sa, sb = [s.copy() for s in s1], [s.copy() for s in s1]
    Ws, bs = mlpgrad.unpack(p0, sizes)
    _, grads = mlpgrad.loss_and_grad(Ws, bs, X, labels, head="softmax", reduction="mean")
    g = mlpgrad.pack(grads.weights, grads.biases)
    alpha, nesterov = 0.01 * N, solver == "sgd"  # the step's l2 is alpha / N
    native = "adam" if solver == "adam" else "sgd"
    lr = 0.003 if solver == "adam" else 0.1
    options = _native.train_options(native, N, alpha, lr, 0.9, 0.999, 1e-8, 0.9, nesterov)
    data = _native.bind_data(X, labels, None, "softmax", sizes[0], sizes[-1], np.dtype(dtype))
    t = np.zeros(1, np.int64)
    sumsq = float(np.dot(p0[:n_reg].astype(np.float64), p0[:n_reg]))
    _, ra, _ = _native.train_epoch(pa, np.empty_like(pa), sa[0], sa[1], t, sizes, data, None, options, sumsq, 1)
    if solver == "adam":  # the first step's bias-corrected rate
        rb = _adam_step_numpy(pb, g, sb[0], sb[1], n_reg, 0.01, lr * np.sqrt(1 - 0.999) / (1 - 0.9), 0.9, 0.999,
                              1e-8)
    else:
        rb = _sgd_step_numpy(pb, g, sb[0], n_reg, 0.01, lr, 0.9, nesterov)
    rtol = 1e-5 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(pa, pb, rtol=rtol, atol=rtol)
    for x, z in zip(sa, sb):
        np.testing.assert_allclose(x, z, rtol=rtol, atol=rtol)
    assert ra == pytest.approx(rb, rel=rtol)


# ------------------------------------------------------------------ estimator features

@pytest.mark.parametrize("solver", SOLVERS)
def test_coefs_are_views_of_one_flat_buffer_and_pickle(solver):
    X, y = _data("binary")
    est = MLPClassifier(hidden_layer_sizes=(6, 5), max_iter=3, random_state=0, solver=solver).fit(X, y)
    assert all(p.base is est._flat for p in est.coefs_ + est.intercepts_)
    assert est._flat.size == sum(p.size for p in est.coefs_ + est.intercepts_)
    clone = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(clone.predict_proba(X), est.predict_proba(X))
    assert all(p.base is clone._flat for p in clone.coefs_ + clone.intercepts_)
    clone.coefs_[0] = clone.coefs_[0] * 0  # assigned by the user: re-packed on use
    assert not np.allclose(clone.predict_proba(X), est.predict_proba(X))


def test_partial_fit_and_warm_start():
    X, y = _data("multiclass")
    common = dict(hidden_layer_sizes=(8,), random_state=0, batch_size=50)
    sk = SkMLP(activation="logistic", **common)
    mg = MLPClassifier(**common)
    for _ in range(3):
        sk.partial_fit(X, y, classes=np.unique(y))
        mg.partial_fit(X, y, classes=np.unique(y))
    assert _max_diff(mg, sk) <= 1e-10
    a = MLPClassifier(warm_start=True, max_iter=2, **common).fit(X, y)
    b = SkMLP(activation="logistic", warm_start=True, max_iter=2, **common).fit(X, y)
    a.fit(X, y)
    b.fit(X, y)
    assert _max_diff(a, b) <= 1e-10
    with pytest.raises(AttributeError):
        MLPClassifier(solver="lbfgs").partial_fit


def _set_state_by_hand(mlp):
    """The fitted state of scikit-learn's test_fit (sklearn/neural_network/tests/test_mlp.py), set attribute by
    attribute: the parameters of its worked example and the bookkeeping that scikit-learn's partial_fit reads.
    It sets no validation_scores_ (read only with early_stopping=True) and nothing of mlpgrad's own."""
    mlp.coefs_ = [np.array([[0.1, 0.2], [0.3, 0.1], [0.5, 0]]), np.array([[0.1], [0.2]])]
    mlp.intercepts_ = [np.array([0.1, 0.1]), np.array([1.0])]
    mlp.n_outputs_, mlp.n_features_in_, mlp.n_layers_ = 1, 3, 3
    mlp.n_iter_, mlp.learning_rate_, mlp.t_ = 0, 0.1, 0
    mlp._coef_grads, mlp._intercept_grads = [0] * 2, [0] * 2
    mlp.out_activation_ = "logistic"
    mlp.best_loss_, mlp.loss_curve_, mlp._no_improvement_count = np.inf, [], 0
    mlp._intercept_velocity = [np.zeros_like(b) for b in mlp.intercepts_]
    mlp._coef_velocity = [np.zeros_like(W) for W in mlp.coefs_]
    return mlp


@pytest.mark.parametrize("verbose", [False, True])
def test_partial_fit_on_a_state_set_by_hand(verbose, capsys):
    """Issue 15: partial_fit on a state set as scikit-learn's tests set it raised AttributeError (no
    validation_scores_). It takes scikit-learn's step, which its test_fit works out by hand."""
    X, y = np.array([[0.6, 0.8, 0.7]]), np.array([0])
    kw = dict(solver="sgd", learning_rate_init=0.1, alpha=0.1, random_state=1, max_iter=1, hidden_layer_sizes=2,
              momentum=0, verbose=verbose)
    ours = _set_state_by_hand(MLPClassifier(**kw))
    theirs = _set_state_by_hand(SkMLP(activation="logistic", **kw))
    ours.partial_fit(X, y, classes=[0, 1])
    theirs.partial_fit(X, y, classes=[0, 1])
    assert _max_diff(ours, theirs) <= 1e-15
    np.testing.assert_allclose(ours.coefs_[1].ravel(), [0.04706, 0.154089], atol=1e-3)  # test_fit's values
    assert ours.intercepts_[1] == pytest.approx(0.9235, abs=1e-3)
    assert ours.predict_proba(X)[0, 1] == pytest.approx(theirs.predict_proba(X)[0, 1], abs=1e-15)
    assert ours.loss_curve_ == pytest.approx(theirs.loss_curve_, abs=1e-15) and ours.n_iter_ == theirs.n_iter_ == 1
    if verbose:
        assert "loss" in "".join(capsys.readouterr())


def test_fit_on_a_state_set_by_hand():
    """The other reads of the state set by hand: parameters given as nested lists or tuples (re-packed in
    float64), a warm-start fit with early stopping on scikit-learn's bookkeeping alone (mlpgrad's
    validation_loss_curve_ is started, NaN for the epochs before), and predict."""
    X = np.random.default_rng(0).standard_normal((60, 3))
    y = (X[:, 0] > 0).astype(int)
    est = _set_state_by_hand(MLPClassifier(hidden_layer_sizes=2, max_iter=3, warm_start=True, early_stopping=True,
                                           random_state=0))
    est.coefs_ = tuple(W.tolist() for W in est.coefs_)
    est.classes_ = np.array([0, 1])
    est._label_binarizer = sklearn.preprocessing.LabelBinarizer().fit(est.classes_)
    est.validation_scores_, est.best_validation_score_, est.best_loss_ = [0.5], 0.5, None
    assert est.predict_proba(X).shape == (60, 2) and est.coefs_[0].dtype == np.float64
    est.fit(X, y)
    assert len(est.validation_scores_) == len(est.validation_loss_curve_) == 4
    assert np.isnan(est.validation_loss_curve_[0]) and np.all(np.isfinite(est.validation_loss_curve_[1:]))


@pytest.mark.parametrize("solver", ["adam", "sgd"])
def test_stochastic_fit_after_a_full_batch_fit(solver):
    """The same pattern as the issue's: a stochastic fit or partial_fit continuing a lbfgs fit (warm_start, or
    set_params(solver=...)) read the stopping rule's state, which only a stochastic first fit creates (scikit-learn
    raises AttributeError there too); and early stopping turned on in a warm start after a fit without it."""
    X, y = _data("binary", n=80)
    kw = dict(hidden_layer_sizes=(4,), max_iter=3, random_state=0)
    est = MLPClassifier(solver="lbfgs", warm_start=True, **kw).fit(X, y)
    lbfgs_iterations = len(est.loss_curve_)
    est.set_params(solver=solver).fit(X, y)
    assert len(est.loss_curve_) == lbfgs_iterations + 3 and est.t_ == 3 * len(X)
    est = MLPClassifier(solver="lbfgs", **kw).fit(X, y)
    est.set_params(solver=solver).partial_fit(X, y)
    assert est.n_iter_ == 1 and np.isfinite(est.loss_)
    est = MLPClassifier(solver=solver, warm_start=True, **kw).fit(X, y)
    est.set_params(early_stopping=True).fit(X, y)
    assert len(est.validation_scores_) == len(est.validation_loss_curve_) == 3
    assert est.best_validation_score_ == max(est.validation_scores_)


def test_dataframe_feature_names_as_scikit_learn():
    """pandas input records feature_names_in_; other names, or none, at predict: the same error or warning as
    scikit-learn's MLPClassifier."""
    pd = pytest.importorskip("pandas")
    import warnings
    X, y = _data("multiclass", n=60)
    X = X[:, :3]
    df = pd.DataFrame(X, columns=["a", "b", "c"])
    renamed = df.rename(columns={"c": "z"})
    for solver in ("adam", "lbfgs"):
        ests = [cls(hidden_layer_sizes=(4,), max_iter=3, solver=solver, random_state=0).fit(df, pd.Series(y))
                for cls in (MLPClassifier, lambda **kw: SkMLP(activation="logistic", **kw))]
        for est in ests:
            np.testing.assert_array_equal(est.feature_names_in_, ["a", "b", "c"])
            assert est.n_features_in_ == 3
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                est.predict(df)  # the same names: no warning
        on_array = MLPClassifier(hidden_layer_sizes=(4,), max_iter=3, solver=solver, random_state=0).fit(X, y)
        assert _max_diff(ests[0], on_array) == 0  # the same fit as on the NumPy array
        for bad, kind in ((renamed, ValueError), (X, UserWarning)):
            messages = []
            for est in ests:
                with pytest.raises(kind) if kind is ValueError else pytest.warns(kind) as info:
                    for method in ("predict", "predict_proba", "score"):
                        args = (bad, y) if method == "score" else (bad,)
                        getattr(est, method)(*args)
                messages.append(str(info.value if kind is ValueError else info[0].message))
            assert messages[0].replace(type(ests[0]).__name__, "MLPClassifier") == messages[1]
    est = MLPClassifier(hidden_layer_sizes=(4,), max_iter=3, random_state=0).fit(X, y)
    assert not hasattr(est, "feature_names_in_")
    with pytest.warns(UserWarning, match="fitted without feature names"):
        est.predict(df)
    est = MLPClassifier(hidden_layer_sizes=(4,), random_state=0)
    est.partial_fit(df, y, classes=np.unique(y))
    np.testing.assert_array_equal(est.feature_names_in_, ["a", "b", "c"])
    with pytest.raises(ValueError, match="feature names should match"):
        est.partial_fit(renamed, y)


@pytest.mark.parametrize("kind", ["binary", "multiclass", "multilabel"])
def test_input_gradient(kind):
    X, y = _data(kind, n=50)
    est = MLPClassifier(hidden_layer_sizes=(9,), max_iter=20, random_state=0, solver="lbfgs").fit(X, y)
    dX = est.input_gradient(X, y)
    assert dX.shape == X.shape
    # against central differences of each sample's loss
    Y = est._label_binarizer.transform(y)
    head = "softmax" if est.out_activation_ == "softmax" else "sigmoid"
    yy = np.argmax(Y, axis=1) if head == "softmax" else Y.astype(float).reshape(len(X), -1)
    if head == "sigmoid" and yy.shape[1] == 1:
        yy = yy[:, 0]
    h = 1e-6
    for i in (0, 7):
        for j in (0, 3):
            Xp, Xm = X[i:i + 1].copy(), X[i:i + 1].copy()
            Xp[0, j] += h
            Xm[0, j] -= h
            fd = (mlpgrad.loss(est.coefs_, est.intercepts_, Xp, yy[i:i + 1], head=head)
                  - mlpgrad.loss(est.coefs_, est.intercepts_, Xm, yy[i:i + 1], head=head)) / (2 * h)
            assert dX[i, j] == pytest.approx(fd, rel=1e-5, abs=1e-8)


@pytest.mark.parametrize("kind", ["binary", "multiclass", "multilabel"])
def test_input_gradient_refuses_labels_not_in_classes(kind):
    """A label the estimator was not fitted on is an error (partial_fit's message), not a row of zero targets
    (what the label binarizer makes of it); y's rows must match X's; the caller's y is not modified."""
    X, y = _data(kind, n=50)
    est = MLPClassifier(hidden_layer_sizes=(5,), max_iter=5, random_state=0, solver="lbfgs").fit(X, y)
    bad = y.copy()
    if kind == "multilabel":
        bad = np.hstack([bad, bad[:, :1]])  # one indicator column more: class index 3
    else:
        bad[7] = 9
    kept = bad.copy()
    with pytest.raises(ValueError, match=r"`y` has classes not in `self.classes_`"):
        est.input_gradient(X, bad)
    np.testing.assert_array_equal(bad, kept)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        est.input_gradient(X, y[:-1])
    np.testing.assert_array_equal(est.input_gradient(X, list(y)), est.input_gradient(X, y))


def test_early_stopping_curves_and_plot(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    X, y = _data("multiclass", n=400)
    est = MLPClassifier(hidden_layer_sizes=(10,), max_iter=15, early_stopping=True, random_state=0).fit(X, y)
    assert len(est.loss_curve_) == len(est.validation_scores_) == len(est.validation_loss_curve_) == est.n_iter_
    assert est.best_loss_ is None and est.best_validation_score_ == max(est.validation_scores_)
    ax = mlpgrad.plot_loss_curve(est)
    ax.figure.savefig(tmp_path / "curve.png")
    assert (tmp_path / "curve.png").stat().st_size > 1000
    import matplotlib.pyplot as plt
    plt.close("all")


@pytest.mark.parametrize("solver", SOLVERS)
def test_verbose_progress(capsys, solver):
    X, y = _data("binary")
    MLPClassifier(hidden_layer_sizes=(4,), max_iter=3, verbose=True, solver=solver, random_state=0).fit(X, y)
    out = capsys.readouterr()
    assert "loss" in out.out + out.err


def test_torch_input_without_copy():
    torch = pytest.importorskip("torch")
    X, y = _data("multiclass")
    Xt = torch.from_numpy(X.copy())
    view = _as_numpy(Xt)
    assert isinstance(view, np.ndarray) and np.shares_memory(view, Xt.numpy())
    a = MLPClassifier(hidden_layer_sizes=(6,), max_iter=3, random_state=0).fit(Xt, torch.from_numpy(y))
    b = MLPClassifier(hidden_layer_sizes=(6,), max_iter=3, random_state=0).fit(X, y)
    assert _max_diff(a, b) == 0.0
    np.testing.assert_array_equal(a.predict(Xt), b.predict(X))
    req = Xt.clone().requires_grad_(True)  # a tensor that requires grad is read through detach()
    np.testing.assert_array_equal(a.predict_proba(req), b.predict_proba(X))


def test_mlpgrad_imports_without_scikit_learn():
    code = ("import sys; sys.modules['sklearn'] = None\n"
            "import mlpgrad\n"
            "try:\n    mlpgrad.MLPClassifier\nexcept ImportError as e:\n    print('ImportError', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "ImportError" in out and "mlpgrad[sklearn]" in out


@pytest.mark.slow  # two estimators fitted on digits and on the regression cases, and matplotlib
def test_demo_runs(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from mlpgrad.cli import main
    assert main(["demo", "--max-iter", "3", "--plot", str(tmp_path / "c.png")]) == 0
    out = capsys.readouterr().out
    assert "sklearn MLPClassifier(logistic)" in out and "mlpgrad MLPClassifier" in out
    for case in ("diabetes", "friedman1 5000 x 10"):  # the regression table: a row per estimator and dtype
        rows = [line for line in out.splitlines() if line.startswith(case)]
        assert len(rows) == 3 and "sklearn MLPRegressor(logistic)" in rows[0] and "mlpgrad MLPRegressor" in rows[1]
    assert (tmp_path / "c.png").exists()
    import matplotlib.pyplot as plt
    plt.close("all")


def test_demo_newton_cg_table(capsys):
    """--newton-cg: a row per full-batch solver on digits, with the iterations and time to reach lbfgs's loss."""
    from mlpgrad.cli import main
    assert main(["demo", "--max-iter", "8", "--newton-cg", "--no-sklearn", "--dtype", "float64"]) == 0
    out = capsys.readouterr().out
    assert "iterations and time to reach lbfgs's final training loss" in out
    rows = [line.split() for line in out.splitlines() if line.startswith("digits") and "float64" in line]
    assert [r[1] for r in rows[-2:]] == ["lbfgs", "newton-cg"]
    assert rows[-2][3] == "8" and rows[-2][6] == "1.00x"  # lbfgs reaches its own loss at its last iteration


def test_jax_input_without_copy():
    jnp = pytest.importorskip("jax.numpy")
    X, y = _data("binary")
    X = X.astype(np.float32)
    Xj = jnp.asarray(X)
    view = _as_numpy(Xj)
    assert view.__array_interface__["data"][0] == Xj.unsafe_buffer_pointer()  # DLPack: the same memory
    a = MLPClassifier(hidden_layer_sizes=(6,), max_iter=3, random_state=0).fit(Xj, y)
    b = MLPClassifier(hidden_layer_sizes=(6,), max_iter=3, random_state=0).fit(X, y)
    assert a.coefs_[0].dtype == np.float32 and _max_diff(a, b) == 0.0
