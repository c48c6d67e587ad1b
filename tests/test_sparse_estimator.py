"""Sparse X in the estimators (issue 15, part 1): MLPClassifier and MLPRegressor take a scipy.sparse X (CSR and
CSC as scikit-learn's MLP does, other formats through its validation) in fit, partial_fit, predict,
predict_proba, predict_log_proba, score and input_gradient, and take the steps they take on the same X dense:
adam and sgd (the native epochs, shuffled mini-batches of CSR rows) to 1e-12 in float64 after whole fits;
lbfgs and newton-cg after a few iterations (their line searches and curvature amplify the last-bit differences
of the first layer's sums over later iterations, as any change of summation order does). On a sparse X they also
take scikit-learn's own steps (MLPClassifier / MLPRegressor(activation="logistic") on the same sparse matrix).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

sp = pytest.importorskip("scipy.sparse")
pytest.importorskip("sklearn")

from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.neural_network import MLPClassifier as SkClassifier, MLPRegressor as SkRegressor  # noqa: E402

from mlpgrad import MLPClassifier, MLPRegressor  # noqa: E402


def data(kind, n=240, d0=150, density=0.05, seed=0):
    rng = np.random.default_rng(seed)
    X = sp.random(n, d0, density=density, random_state=seed, format="csr", dtype=np.float64)
    if kind == "classifier":
        return X, rng.integers(0, 3, n)
    return X, rng.standard_normal((n, 2))


ESTIMATORS = {"classifier": (MLPClassifier, SkClassifier), "regressor": (MLPRegressor, SkRegressor)}


def params(est):
    return est.coefs_ + est.intercepts_


def largest_difference(a, b):
    return max(float(np.max(np.abs(p - q))) for p, q in zip(params(a), params(b)))


def fit(Est, X, y, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return Est(hidden_layer_sizes=(12,), random_state=0, **kw).fit(X, y)


@pytest.mark.parametrize("kind", ["classifier", "regressor"])
@pytest.mark.parametrize("solver, max_iter", [("adam", 15), ("sgd", 15), ("lbfgs", 4), ("newton-cg", 3)])
def test_same_steps_sparse_and_dense(kind, solver, max_iter):
    Est = ESTIMATORS[kind][0]
    X, y = data(kind)
    a = fit(Est, X, y, solver=solver, max_iter=max_iter)
    b = fit(Est, X.toarray(), y, solver=solver, max_iter=max_iter)
    assert a.n_iter_ == b.n_iter_
    assert largest_difference(a, b) <= 1e-12
    np.testing.assert_allclose(a.loss_curve_ if solver in ("adam", "sgd") else [a.loss_],
                               b.loss_curve_ if solver in ("adam", "sgd") else [b.loss_], rtol=1e-12)
    np.testing.assert_allclose(a.predict(X), b.predict(X.toarray()), rtol=1e-12, atol=1e-12)
    assert abs(a.score(X, y) - b.score(X.toarray(), y)) <= 1e-12


@pytest.mark.parametrize("kind", ["classifier", "regressor"])
@pytest.mark.parametrize("solver", ["adam", "sgd", "lbfgs"])
def test_same_steps_as_scikit_learn_on_sparse_X(kind, solver):
    ours, theirs = ESTIMATORS[kind]
    X, y = data(kind, seed=1)
    kw = dict(solver=solver, max_iter=10 if solver != "lbfgs" else 4)
    a = fit(ours, X, y, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        b = theirs(hidden_layer_sizes=(12,), activation="logistic", random_state=0, **kw).fit(X, y)
    assert a.n_iter_ == b.n_iter_
    assert largest_difference(a, b) <= 1e-10
    np.testing.assert_allclose(a.predict(X), b.predict(X), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("fmt", ["csr", "csc", "coo", "lil"])
def test_every_method_takes_a_sparse_X(fmt):
    X, y = data("classifier", seed=2)
    Xf = X.asformat(fmt)
    before = Xf.copy()
    clf = fit(MLPClassifier, Xf, y, max_iter=5, early_stopping=True)
    ref = fit(MLPClassifier, X.toarray(), y, max_iter=5, early_stopping=True)
    assert largest_difference(clf, ref) <= 1e-12
    D = X.toarray()
    np.testing.assert_allclose(clf.predict_proba(Xf), ref.predict_proba(D), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(clf.predict_log_proba(Xf), ref.predict_log_proba(D), rtol=1e-12)
    np.testing.assert_array_equal(clf.predict(Xf), ref.predict(D))
    assert clf.score(Xf, y) == ref.score(D, y)
    g = clf.input_gradient(Xf, y)
    assert isinstance(g, np.ndarray) and g.shape == D.shape  # dL/dX is dense
    np.testing.assert_allclose(g, ref.input_gradient(D, y), rtol=1e-12, atol=1e-15)
    clf.set_params(early_stopping=False).partial_fit(Xf, y)
    ref.set_params(early_stopping=False).partial_fit(D, y)
    assert largest_difference(clf, ref) <= 1e-12
    # the caller's matrix is unchanged
    assert (Xf != before).nnz == 0 and type(Xf) is type(before)


def test_float32_sparse():
    X, y = data("regressor", seed=3)
    X32 = X.astype(np.float32)
    a = fit(MLPRegressor, X32, y, max_iter=10)
    b = fit(MLPRegressor, X32.toarray(), y, max_iter=10)
    assert a.coefs_[0].dtype == np.float32
    assert largest_difference(a, b) <= 1e-5


def test_wrong_columns_at_predict_name_the_mismatch():
    X, y = data("classifier")
    clf = fit(MLPClassifier, X, y, max_iter=3)
    with pytest.raises(ValueError, match="features"):
        clf.predict(sp.random(4, X.shape[1] + 1, density=0.1, format="csr"))
