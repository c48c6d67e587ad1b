"""mlpgrad.MLPRegressor: scikit-learn's conventions (check_estimator), the same steps as scikit-learn's
MLPRegressor(activation="logistic") from the same random_state (one output and several, with and without sample
weights), R^2 as the score, the shapes of predict, and the estimator features it shares with MLPClassifier (partial_fit,
warm_start, early stopping, float32, pickling, input gradients, bad input). Dask arrays: tests/test_dask.py. Skipped
when scikit-learn is not installed."""

import inspect
import pickle
import subprocess
import sys

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")
pytest.importorskip("scipy")

from sklearn.datasets import make_regression  # noqa: E402
from sklearn.exceptions import DataConversionWarning  # noqa: E402
from sklearn.metrics import r2_score  # noqa: E402
from sklearn.neural_network import MLPRegressor as SkMLP  # noqa: E402

import mlpgrad  # noqa: E402
from mlpgrad.estimator import MLPRegressor  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

SK_SAMPLE_WEIGHT = "sample_weight" in inspect.signature(SkMLP.fit).parameters  # scikit-learn >= 1.7


def _data(k, n=240, d=8, seed=0):
    """make_regression's data with k outputs ((n,) for k = 1), scaled to unit spread (the squared errors of
    order 1, as after a StandardScaler)."""
    X, y = make_regression(n, d, n_targets=k, n_informative=5, noise=0.1, random_state=seed)
    return X, y / np.std(y)


def _max_diff(a, b):
    return max(float(np.max(np.abs(p - q))) for p, q in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_))


def _sk(**kw):
    return SkMLP(activation="logistic", **kw)


# ------------------------------------------------------------------ scikit-learn's conventions

@pytest.mark.slow
@pytest.mark.parametrize("solver", ["adam", "sgd", "lbfgs", "newton-cg"])
def test_check_estimator(solver):
    """Every check of sklearn.utils.estimator_checks passes, for every solver. sgd gets learning_rate_init=0.01:
    check_regressors_train asks for R^2 > 0.5 after max_iter=100 epochs, which sgd at the default rate 0.001 does
    not reach (scikit-learn's own MLPRegressor(activation="logistic", solver="sgd") scores 0.18 there, mlpgrad's
    the same). Skipped by check_estimator itself, depending on the environment: the pandas checks and
    check_array_api_input (needs SCIPY_ARRAY_API=1 and array-api-compat)."""
    from sklearn.utils.estimator_checks import check_estimator
    est = MLPRegressor(max_iter=100, solver=solver, **({"learning_rate_init": 0.01} if solver == "sgd" else {}))
    kwargs = {"on_skip": None} if "on_skip" in inspect.signature(check_estimator).parameters else {}
    if "on_fail" in inspect.signature(check_estimator).parameters:  # scikit-learn >= 1.6: collect, then report
        results = check_estimator(est, on_fail=None, **kwargs)
        failed = [(r["check_name"], repr(r["exception"])) for r in results if r["status"] == "failed"]
        assert not failed
        skipped = {r["check_name"] for r in results if r["status"] == "skipped"}
        allowed = {"check_sample_weights_pandas_series", "check_array_api_input", "check_regressor_data_not_an_array",
                   "check_dataframe_column_names_consistency", "check_pandas_column_name_consistency",
                   "check_n_features_in_after_fitting"}
        assert skipped <= allowed, skipped - allowed
    else:  # pragma: no cover - older scikit-learn raises on the first failure
        check_estimator(est)


def test_defaults_match_scikit_learn():
    """scikit-learn's parameters and defaults (but activation, fixed, and "poisson", which the core has no head
    for), in scikit-learn's order of the positional ones: loss, then hidden_layer_sizes."""
    ours, theirs = MLPRegressor().get_params(), SkMLP().get_params()
    shared = set(ours) & set(theirs)
    assert set(theirs) - shared == {"activation"}
    assert set(ours) - shared == {"dtype", "n_threads"}
    assert {k: ours[k] for k in shared} == {k: theirs[k] for k in shared}
    positional = [p.name for p in inspect.signature(MLPRegressor).parameters.values()
                  if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert positional == ["loss", "hidden_layer_sizes"]
    assert MLPRegressor.activation == "logistic"
    with pytest.raises(ValueError, match="loss"):
        MLPRegressor(loss="poisson").fit(*_data(1, n=20))


# ------------------------------------------------------------------ the same steps as scikit-learn

SAME_STEP_CASES = [
    dict(solver="sgd", shuffle=False),
    dict(solver="sgd", shuffle=True),
    dict(solver="sgd", nesterovs_momentum=False, learning_rate="invscaling", learning_rate_init=0.01),
    dict(solver="sgd", momentum=0.0),
    dict(solver="adam", shuffle=False),
    dict(solver="adam", shuffle=True, alpha=0.1),
    dict(solver="adam", alpha=0.0),
    dict(solver="adam", early_stopping=True),
    dict(solver="lbfgs"),
    dict(solver="lbfgs", alpha=0.1),
]


@pytest.mark.parametrize("k", [1, 3], ids=["1-D", "3-outputs"])
@pytest.mark.parametrize("kw", SAME_STEP_CASES, ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()))
def test_same_steps_as_scikit_learn(k, kw):
    """From the same random_state, float64: the same initial weights, mini-batches and optimizer steps. After 4
    epochs (sgd, adam: 8 mini-batches each) or 4 L-BFGS iterations the parameters agree to 1e-10 absolute
    (observed: ~1e-16 for sgd / adam, ~1e-13 for lbfgs, whose line searches amplify the rounding of the other
    summation order), and so do the losses scikit-learn reports (rtol 1e-10): for 3 outputs its loss averages the
    squared error over them, its gradient sums it (both reproduced: by a native call per mini-batch for adam and
    sgd with alpha > 0, by the (value, gradient) pairs handed to L-BFGS-B)."""
    X, y = _data(k)
    common = dict(hidden_layer_sizes=(12, 7), max_iter=4, random_state=3, batch_size=32, **kw)
    sk = _sk(**common).fit(X, y)
    mg = MLPRegressor(**common).fit(X, y)
    assert mg.n_iter_ == sk.n_iter_ and mg.n_outputs_ == sk.n_outputs_ == k
    assert mg.out_activation_ == sk.out_activation_ == "identity"
    assert [c.shape for c in mg.coefs_] == [c.shape for c in sk.coefs_]
    assert _max_diff(mg, sk) <= 1e-10
    assert mg.loss_ == pytest.approx(sk.loss_, rel=1e-10)
    if kw["solver"] != "lbfgs":
        np.testing.assert_allclose(mg.loss_curve_, sk.loss_curve_, rtol=1e-10)
        assert mg.t_ == sk.t_
        if not kw.get("early_stopping"):
            assert mg.best_loss_ == pytest.approx(sk.best_loss_, rel=1e-10)
    if kw.get("early_stopping"):
        np.testing.assert_allclose(mg.validation_scores_, sk.validation_scores_, rtol=1e-10)
        assert mg.best_validation_score_ == pytest.approx(sk.best_validation_score_, rel=1e-10)
        assert len(mg.validation_loss_curve_) == len(mg.validation_scores_)
    assert mg.predict(X).shape == sk.predict(X).shape == y.shape
    np.testing.assert_allclose(mg.predict(X), sk.predict(X), atol=1e-10)
    assert mg.score(X, y) == pytest.approx(sk.score(X, y), rel=1e-10)


def test_same_initial_weights():
    X, y = _data(3)
    mg = MLPRegressor(hidden_layer_sizes=(5,), random_state=7, max_iter=1)
    sk = SkMLP(hidden_layer_sizes=(5,), activation="logistic", random_state=7, max_iter=1)
    mg._random_state = np.random.RandomState(7)  # the draws of _initialize, before any step
    sk._random_state = np.random.RandomState(7)
    mg._initialize([8, 5, 3], np.dtype(np.float64))
    sk._initialize(y, [8, 5, 3], np.float64)
    assert _max_diff(mg, sk) == 0.0
    assert mg.out_activation_ == sk.out_activation_ == "identity"


@pytest.mark.skipif(not SK_SAMPLE_WEIGHT, reason="scikit-learn < 1.7 has no sample_weight in MLPRegressor.fit")
@pytest.mark.parametrize("k", [1, 3], ids=["1-D", "3-outputs"])
@pytest.mark.parametrize("solver", ["sgd", "adam", "lbfgs"])
def test_same_steps_with_sample_weight(solver, k):
    X, y = _data(k)
    sw = np.random.default_rng(0).uniform(0.1, 3.0, size=len(y))
    common = dict(hidden_layer_sizes=(10,), max_iter=3, random_state=0, batch_size=40, solver=solver, alpha=0.01)
    sk = _sk(**common).fit(X, y, sample_weight=sw)
    mg = MLPRegressor(**common).fit(X, y, sample_weight=sw)
    assert _max_diff(mg, sk) <= 1e-10
    assert mg.loss_ == pytest.approx(sk.loss_, rel=1e-10)
    assert mg.score(X, y, sample_weight=sw) == pytest.approx(sk.score(X, y, sample_weight=sw), rel=1e-10)


@pytest.mark.parametrize("k", [1, 3], ids=["1-D", "3-outputs"])
def test_same_stopping_as_scikit_learn(k):
    """The stopping rule reads the reported loss: with a coarse tol both stop after the same epoch, before
    max_iter, with the same curve (for 3 outputs through the per-mini-batch epochs)."""
    X, y = _data(k)
    common = dict(hidden_layer_sizes=(10,), max_iter=100, random_state=0, tol=1e-2, n_iter_no_change=2,
                  learning_rate_init=0.01)
    sk = _sk(**common).fit(X, y)
    mg = MLPRegressor(**common).fit(X, y)
    assert mg.n_iter_ == sk.n_iter_ < 100
    np.testing.assert_allclose(mg.loss_curve_, sk.loss_curve_, rtol=1e-10)


def test_several_outputs_with_alpha_report_scikit_learns_loss_curve():
    """Several outputs and alpha > 0 with adam: the native epoch scales each batch's data loss by 1/k but not its
    penalty (train_epoch's loss_scale), so that loss_curve_ is scikit-learn's."""
    X, y = _data(3)
    kw = dict(hidden_layer_sizes=(9,), max_iter=3, random_state=0, batch_size=50, alpha=0.5)
    a = MLPRegressor(**kw).fit(X, y)
    b = SkMLP(activation="logistic", **kw).fit(X, y)
    assert _max_diff(a, b) <= 1e-12
    np.testing.assert_allclose(a.loss_curve_, b.loss_curve_, rtol=1e-12)


# ------------------------------------------------------------------ score and predict

@pytest.mark.parametrize("k", [1, 3], ids=["1-D", "3-outputs"])
def test_score_is_r2(k):
    """score is sklearn.metrics.r2_score of predict, with sample weights, several outputs averaged uniformly."""
    X, y = _data(k)
    est = MLPRegressor(hidden_layer_sizes=(10,), solver="lbfgs", max_iter=30, random_state=0).fit(X, y)
    sw = np.random.default_rng(1).uniform(0, 2, len(y))
    assert type(est.score(X, y)) is float
    assert est.score(X, y) == r2_score(y, est.predict(X))
    assert est.score(X, y, sample_weight=sw) == r2_score(y, est.predict(X), sample_weight=sw)
    if k > 1:
        per_output = r2_score(y, est.predict(X), multioutput="raw_values")
        assert est.score(X, y) == pytest.approx(np.mean(per_output), rel=1e-14)


def test_predict_shapes():
    """(n,) after a fit on y (n,) or (n, 1) (the latter with scikit-learn's DataConversionWarning), (n, k) after a
    fit on y (n, k), k > 1; in the parameters' dtype."""
    X, y = _data(1, n=60)
    est = MLPRegressor(hidden_layer_sizes=(4,), max_iter=3, random_state=0)
    assert est.fit(X, y).predict(X).shape == (60,)
    with pytest.warns(DataConversionWarning):
        est.fit(X, y[:, None])
    assert est.predict(X).shape == (60,) and est.n_outputs_ == 1
    X3, y3 = _data(3, n=60)
    assert est.fit(X3, y3).predict(X3).shape == (60, 3)
    assert est.predict(X3[:1]).shape == (1, 3)
    f32 = MLPRegressor(hidden_layer_sizes=(4,), max_iter=3, random_state=0, dtype="float32").fit(X3, y3)
    assert f32.predict(X3).dtype == np.float32


@pytest.mark.parametrize("solver", ["lbfgs", "newton-cg", "adam"])
def test_integer_and_float32_targets(solver):
    """Targets of any real dtype are the same targets: integer y gives the fit of the same values as floats."""
    X, y = _data(2, n=80)
    yi = np.round(3 * y).astype(np.int64)
    kw = dict(hidden_layer_sizes=(5,), max_iter=3, random_state=0, solver=solver)
    a = MLPRegressor(**kw).fit(X, yi)
    b = MLPRegressor(**kw).fit(X, yi.astype(np.float64))
    assert _max_diff(a, b) == 0.0


# ------------------------------------------------------------------ estimator features

def test_partial_fit_and_warm_start():
    X, y = _data(3)
    common = dict(hidden_layer_sizes=(8,), random_state=0, batch_size=50)
    sk, mg = _sk(**common), MLPRegressor(**common)
    for _ in range(3):
        sk.partial_fit(X, y)
        mg.partial_fit(X, y)
    assert _max_diff(mg, sk) <= 1e-10
    np.testing.assert_allclose(mg.loss_curve_, sk.loss_curve_, rtol=1e-10)
    a = MLPRegressor(warm_start=True, max_iter=2, **common).fit(X, y)
    b = _sk(warm_start=True, max_iter=2, **common).fit(X, y)
    a.fit(X, y)
    b.fit(X, y)
    assert _max_diff(a, b) <= 1e-10 and len(a.loss_curve_) == 4
    with pytest.raises(AttributeError):
        MLPRegressor(solver="lbfgs").partial_fit


def test_early_stopping_scores_are_r2():
    """validation_scores_ are the R^2 of the held-out rows (scikit-learn's split from the random state), the best
    one restores its parameters; validation_loss_curve_ is the held-out squared error on loss_curve_'s scale."""
    X, y = _data(2, n=400)
    est = MLPRegressor(hidden_layer_sizes=(10,), max_iter=15, early_stopping=True, random_state=0,
                       learning_rate_init=0.01).fit(X, y)
    assert len(est.loss_curve_) == len(est.validation_scores_) == len(est.validation_loss_curve_) == est.n_iter_
    assert est.best_loss_ is None and est.best_validation_score_ == max(est.validation_scores_)
    from sklearn.model_selection import train_test_split
    rs = np.random.RandomState(0)
    rs.uniform(size=sum(a * b + b for a, b in [(8, 10), (10, 2)]))  # the initialization's draws, in order
    _, X_val, _, y_val = train_test_split(X, y, random_state=rs, test_size=0.1)
    assert r2_score(y_val, est.predict(X_val)) == pytest.approx(est.best_validation_score_, rel=1e-12)
    assert est.validation_loss_curve_[-1] > 0


def test_plot_loss_curve_names_r2(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    X, y = _data(1, n=200)
    est = MLPRegressor(hidden_layer_sizes=(6,), max_iter=4, early_stopping=True, random_state=0).fit(X, y)
    ax = mlpgrad.plot_loss_curve(est)
    assert ax._mlpgrad_score_axis.get_ylabel() == "validation R^2"
    ax.figure.savefig(tmp_path / "curve.png")
    plt.close("all")


def test_float32_close_to_float64():
    X, y = _data(2)
    kw = dict(hidden_layer_sizes=(16,), max_iter=5, random_state=0)
    a = MLPRegressor(**kw).fit(X, y)
    b = MLPRegressor(dtype="float32", **kw).fit(X, y)
    assert b.coefs_[0].dtype == np.float32 and a.coefs_[0].dtype == np.float64
    assert _max_diff(a, b) < 1e-4
    np.testing.assert_allclose(b.loss_curve_, a.loss_curve_, rtol=1e-5)
    c = MLPRegressor(**kw).fit(X.astype(np.float32), y)
    assert c.coefs_[0].dtype == np.float32  # dtype=None follows X, as scikit-learn does
    lb = [MLPRegressor(solver="lbfgs", dtype=dt, **kw).fit(X, y) for dt in ("float64", "float32")]
    assert _max_diff(*lb) < 1e-4


@pytest.mark.parametrize("solver", ["adam", "lbfgs", "newton-cg"])
def test_coefs_are_views_of_one_flat_buffer_and_pickle(solver):
    X, y = _data(2)
    est = MLPRegressor(hidden_layer_sizes=(6, 5), max_iter=3, random_state=0, solver=solver).fit(X, y)
    assert all(p.base is est._flat for p in est.coefs_ + est.intercepts_)
    clone = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(clone.predict(X), est.predict(X))
    assert clone.score(X, y) == est.score(X, y)
    if solver == "adam":  # training continues from the unpickled parameters
        clone.partial_fit(X, y)
    else:
        clone.fit(X, y)
    assert np.isfinite(clone.loss_)


def _reported(est, X, y):
    """scikit-learn's full-batch loss at est's parameters: the mean squared error over samples and outputs, halved,
    plus alpha / 2 ||W||^2 / N (from mlpgrad.Objective's identity head, whose loss sums over the outputs)."""
    obj = mlpgrad.Objective(est._layer_units(), X, y.reshape(len(X), -1), head="identity", reduction="mean",
                            alpha=est.alpha / len(X))
    w = est._flat[:est._n_reg]
    penalty = 0.5 * est.alpha / len(X) * float(np.dot(w, w))
    return (obj.loss(est._flat) - penalty) / est.n_outputs_ + penalty


@pytest.mark.parametrize("k", [1, 3], ids=["1-D", "3-outputs"])
def test_newton_cg(k):
    """newton-cg: lbfgs's fitted attributes, a decreasing loss curve on scikit-learn's scale (the last entry the
    reported loss at the fitted parameters), and it reaches lbfgs's loss after max_iter=30 in fewer iterations."""
    X, y = _data(k)
    kw = dict(hidden_layer_sizes=(8,), random_state=0, alpha=0.01)
    est = MLPRegressor(solver="newton-cg", max_iter=8, tol=0.0, **kw).fit(X, y)
    assert est.n_iter_ == len(est.loss_curve_) == 8
    assert np.all(np.diff(est.loss_curve_) < 0)
    assert est.loss_ == pytest.approx(_reported(est, X, y), rel=1e-12)
    lbfgs = MLPRegressor(solver="lbfgs", max_iter=30, **kw).fit(X, y)
    assert lbfgs.loss_ == pytest.approx(_reported(lbfgs, X, y), rel=1e-12)
    assert {n for n in vars(est) if n.endswith("_")} == {n for n in vars(lbfgs) if n.endswith("_")}
    newton = MLPRegressor(solver="newton-cg", max_iter=30, tol=0.0, **kw).fit(X, y)
    reached = np.flatnonzero(np.asarray(newton.loss_curve_) <= lbfgs.loss_)
    assert reached.size and reached[0] + 1 < lbfgs.n_iter_


@pytest.mark.parametrize("k", [1, 3], ids=["1-D", "3-outputs"])
def test_input_gradient(k):
    """dL/dX of each sample's squared error 1/2 sum_j (z_j - y_j)^2, against central differences."""
    X, y = _data(k, n=50)
    est = MLPRegressor(hidden_layer_sizes=(9,), max_iter=20, random_state=0, solver="lbfgs").fit(X, y)
    dX = est.input_gradient(X, y)
    assert dX.shape == X.shape
    T = y.reshape(len(X), -1)
    h = 1e-6
    for i in (0, 7):
        for j in (0, 3):
            Xp, Xm = X[i:i + 1].copy(), X[i:i + 1].copy()
            Xp[0, j] += h
            Xm[0, j] -= h
            fd = (mlpgrad.loss(est.coefs_, est.intercepts_, Xp, T[i:i + 1], head="identity")
                  - mlpgrad.loss(est.coefs_, est.intercepts_, Xm, T[i:i + 1], head="identity")) / (2 * h)
            assert dX[i, j] == pytest.approx(fd, rel=1e-5, abs=1e-8)
    with pytest.raises(ValueError, match=r"y must have shape \(50, %d\)" % k):
        est.input_gradient(X, np.zeros((50, k + 1)))


# ------------------------------------------------------------------ bad input

@pytest.mark.parametrize("solver", ["adam", "lbfgs"])
def test_bad_targets(solver):
    """Targets that are not finite reals of X's rows: scikit-learn's ValueError (NaN, infinity, row count) or
    mlpgrad's, naming y (strings, another width when a fit continues)."""
    X, y = _data(2, n=30)
    est = MLPRegressor(hidden_layer_sizes=(3,), max_iter=2, random_state=0, solver=solver)
    for bad, match in ((np.where(np.arange(60).reshape(30, 2) == 7, np.nan, y), "NaN"),
                       (np.where(np.arange(60).reshape(30, 2) == 7, np.inf, y), "infinity"),
                       (y[:29], "inconsistent numbers of samples"),
                       (np.array(["a"] * 30), "y must hold real numbers"),
                       (np.zeros((30, 2, 2)), r"y must be 1-D \(n_samples,\) or 2-D .* got shape \(30, 2, 2\)")):
        with pytest.raises(ValueError, match=match):
            est.fit(X, bad)
    est.set_params(warm_start=True).fit(X, y)
    with pytest.raises(ValueError, match=r"y has 1 output\(s\), but MLPRegressor was fitted with 2"):
        est.fit(X, y[:, 0])
    if solver == "adam":
        with pytest.raises(ValueError, match="fitted with 2"):
            est.partial_fit(X, y[:, :1].ravel())


def test_mlpgrad_imports_without_scikit_learn():
    code = ("import sys; sys.modules['sklearn'] = None\n"
            "import mlpgrad\n"
            "try:\n    mlpgrad.MLPRegressor\nexcept ImportError as e:\n    print('ImportError', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "ImportError" in out and "mlpgrad.MLPRegressor" in out and "mlpgrad[sklearn]" in out


@pytest.mark.parametrize("solver", ["adam", "lbfgs"])
def test_verbose_progress(capsys, solver):
    X, y = _data(2, n=60)
    MLPRegressor(hidden_layer_sizes=(4,), max_iter=3, verbose=True, solver=solver, random_state=0).fit(X, y)
    out = capsys.readouterr()
    assert "loss" in out.out + out.err


def test_readme_regressor_example_runs():
    """The README's MLPRegressor example (the python block of its scikit-learn section) runs without a warning
    (lbfgs converges before max_iter), and fits well."""
    import warnings
    import pathlib
    import re
    text = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text[text.index("## scikit-learn estimator"):]
    block = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exec(compile(block, "README.md", "exec"), namespace)
    reg, X, Y = namespace["reg"], namespace["X"], namespace["Y"]
    assert reg.predict(X[:2]).shape == (2, 2) and reg.score(X, Y) > 0.99
