"""``python -m mlpgrad demo``: mlpgrad.MLPClassifier and MLPRegressor next to scikit-learn's MLPClassifier and
MLPRegressor with activation="logistic".

Trains both with the same hyper-parameters on scikit-learn's bundled digits data (no download) and prints
their fit times and test accuracies side by side; ``--large`` adds a synthetic 200 000 x 100 problem
(make_classification); ``--newton-cg`` adds a table of mlpgrad's full-batch solvers on each classification case,
the iterations and time newton-cg and lbfgs take to reach lbfgs's final training loss; ``--plot FILE.png`` writes
the digits loss curves. A second table does the same for the regressors, with their test R^2, on the bundled
diabetes data and on Friedman's synthetic problem #1 (make_friedman1, 5000 x 10), X and y standardized with the
training rows' means and deviations (``--no-regression`` leaves it out). Needs the "sklearn" extra
(``pip install ".[sklearn]"``).
"""

from __future__ import annotations

import argparse
import time


__all__ = ["add_arguments", "run_command"]

DESCRIPTION = __doc__


def _datasets(args):
    """(case name, (X_train, X_test, y_train, y_test), max_iter, solvers of the main table): digits, and with
    --large the synthetic case."""
    from sklearn.datasets import load_digits, make_classification
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    yield "digits", train_test_split(X, y, test_size=0.25, random_state=0, stratify=y), args.max_iter, [args.solver]
    if args.large:
        X, y = make_classification(n_samples=args.large_samples, n_features=100, n_informative=40, n_classes=2,
                                   random_state=0)
        yield (f"synthetic {args.large_samples} x 100", train_test_split(X, y, test_size=0.2, random_state=0),
               args.large_max_iter, args.large_solvers.split(","))


def _standardized(split):
    """(X_train, X_test, y_train, y_test) with X and y shifted and scaled by the training rows' means and
    deviations (R^2 is the same on either scale)."""
    X_tr, X_te, y_tr, y_te = split
    mx, sx, my, sy = X_tr.mean(axis=0), X_tr.std(axis=0), y_tr.mean(), y_tr.std()
    return (X_tr - mx) / sx, (X_te - mx) / sx, (y_tr - my) / sy, (y_te - my) / sy


def _regression_datasets(args):
    """The regression table's cases, as _datasets': diabetes (442 x 10) and Friedman #1 (5000 x 10, noise 1)."""
    from sklearn.datasets import load_diabetes, make_friedman1
    from sklearn.model_selection import train_test_split

    X, y = load_diabetes(return_X_y=True, scaled=False)
    yield "diabetes", _standardized(train_test_split(X, y, test_size=0.25, random_state=0)), args.max_iter, \
        [args.solver]
    X, y = make_friedman1(n_samples=5000, n_features=10, noise=1.0, random_state=0)
    yield "friedman1 5000 x 10", _standardized(train_test_split(X, y, test_size=0.2, random_state=0)), \
        args.max_iter, [args.solver]


def _cases(datasets, args):
    """(case name, (X_train, X_test, y_train, y_test), the hyper-parameters of both estimators)."""
    for case, split, max_iter, solvers in datasets:
        for solver in solvers:
            yield case, split, dict(hidden_layer_sizes=(100,), solver=solver, max_iter=max_iter, random_state=0,
                                    early_stopping=args.early_stopping and solver != "lbfgs")


def _fit(est, X_train, y_train, X_test, y_test, repeat=1):
    """The best of ``repeat`` fits (each from the same random_state, so the same model): on a shared machine
    the minimum is the least disturbed measurement."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    best = float("inf")
    for _ in range(max(1, repeat)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            t0 = time.perf_counter()
            est.fit(X_train, y_train)
            best = min(best, time.perf_counter() - t0)
    return best, est.score(X_test, y_test)


def _newton_table(datasets, dtypes, args, MLPClassifier):
    """mlpgrad's newton-cg against its lbfgs from the same initialization: the iterations and the fit time each
    needs to reach lbfgs's final training loss (lbfgs: its whole fit). newton-cg's are found from a fit of the
    case's max_iter (its loss curve), then timed by a fit of just that many iterations (the same iterates). newton-cg
    runs with tol=0: its gradient rule may stop it at a higher loss than lbfgs's own rule stops lbfgs (on digits with
    the default tol, at iteration 20 and a loss 2.5 times lbfgs's), and the question here is the cost of a loss."""
    import numpy as np

    print("\nnewton-cg against lbfgs (mlpgrad): iterations and time to reach lbfgs's final training loss")
    header = (f"{'case':<24} {'solver':<9} {'dtype':<8} {'iters':>5} {'time':>10} {'vs lbfgs':>9} "
              f"{'final loss':>11} {'after':>5}")
    print(header)
    print("-" * len(header))
    for case, (X_tr, X_te, y_tr, y_te), max_iter, _ in datasets:
        for dt in dtypes:
            params = dict(hidden_layer_sizes=(100,), max_iter=max_iter, random_state=0, dtype=dt,
                          n_threads=args.threads)
            lbfgs = MLPClassifier(solver="lbfgs", **params)
            ref, _ = _fit(lbfgs, X_tr, y_tr, X_te, y_te, args.repeat)
            print(f"{case:<24} {'lbfgs':<9} {dt:<8} {lbfgs.n_iter_:>5} {ref:>8.3f} s {'1.00x':>9} "
                  f"{lbfgs.loss_:>11.3e} {lbfgs.n_iter_:>5}", flush=True)
            newton = MLPClassifier(solver="newton-cg", **dict(params, tol=0.0))
            _fit(newton, X_tr, y_tr, X_te, y_te)
            reached = np.flatnonzero(np.asarray(newton.loss_curve_) <= lbfgs.loss_)
            if reached.size:
                iters = int(reached[0]) + 1
                secs, _ = _fit(MLPClassifier(solver="newton-cg", **dict(params, tol=0.0, max_iter=iters)), X_tr,
                               y_tr, X_te, y_te, args.repeat)
                reach = f"{iters:>5} {secs:>8.3f} s {ref / secs:>8.2f}x"
            else:
                reach = f"{'-':>5} {'not reached':>10} {'-':>9}"
            print(f"{case:<24} {'newton-cg':<9} {dt:<8} {reach} {newton.loss_:>11.3e} {newton.n_iter_:>5}",
                  flush=True)
    print("\nthe same hyper-parameters as above, solver as shown, newton-cg with tol=0 (stopped by max_iter or its "
          "line search only); iters, time: to reach lbfgs's final training loss (the mean log-loss plus the penalty; "
          f"newton-cg: a fit of that many iterations), best of {args.repeat}; vs lbfgs: lbfgs's fit time over "
          "newton-cg's; final loss: after 'after' iterations")


def _table(cases, SkEstimator, Estimator, metric, dtypes, args):
    """One table: per case, scikit-learn's row then mlpgrad's per dtype (iterations, fit time, the test score
    ``metric`` names, speed-up); returns the digits fits' (label, estimator) for --plot."""
    header = (f"{'case':<24} {'estimator':<33} {'solver':<6} {'dtype':<8} {'iters':>5} {'fit time':>10} "
              f"{metric:>9} {'speed-up':>9}")
    print(header)
    print("-" * len(header))
    curves = []
    for case, (X_tr, X_te, y_tr, y_te), params in cases:
        ref = None
        if not args.no_sklearn:
            sk = SkEstimator(activation="logistic", **params)
            ref, score = _fit(sk, X_tr, y_tr, X_te, y_te, args.repeat)
            name = f"sklearn {SkEstimator.__name__}(logistic)"
            print(f"{case:<24} {name:<33} {params['solver']:<6} {'float64':<8} {sk.n_iter_:>5} {ref:>8.3f} s "
                  f"{score:>9.4f} {'1.0x':>9}", flush=True)
            if case == "digits":
                curves.append(("scikit-learn (float64)", sk))
        for dt in dtypes:
            est = Estimator(dtype=dt, n_threads=args.threads, **params)
            secs, score = _fit(est, X_tr, y_tr, X_te, y_te, args.repeat)
            speed = f"{ref / secs:.1f}x" if ref else "-"
            name = f"mlpgrad {Estimator.__name__}"
            print(f"{case:<24} {name:<33} {params['solver']:<6} {dt:<8} {est.n_iter_:>5} {secs:>8.3f} s "
                  f"{score:>9.4f} {speed:>9}", flush=True)
            if case == "digits":
                curves.append((f"mlpgrad ({dt})", est))
    return curves


def run_command(args: argparse.Namespace) -> int:
    """``python -m mlpgrad demo``: ``args`` from :func:`add_arguments`."""
    try:
        from sklearn.neural_network import MLPClassifier as SkMLP
    except ImportError:
        print('the demo needs scikit-learn: pip install ".[sklearn]"')
        return 1
    from .estimator import MLPClassifier

    bad = [sv for sv in args.large_solvers.split(",") if sv not in ("adam", "sgd", "lbfgs")]
    if bad:
        print(f"--large-solvers: expected adam, sgd or lbfgs separated by commas, got {args.large_solvers!r}")
        return 2

    dtypes = ["float64", "float32"] if args.dtype == "both" else [args.dtype]
    datasets = list(_datasets(args))
    curves = _table(_cases(datasets, args), SkMLP, MLPClassifier, "test acc", dtypes, args)
    if not args.no_regression:
        from sklearn.neural_network import MLPRegressor as SkReg

        from .estimator import MLPRegressor
        print()
        _table(_cases(_regression_datasets(args), args), SkReg, MLPRegressor, "test R^2", dtypes, args)
    print(f"\nhyper-parameters (both estimators of a row pair): hidden_layer_sizes=(100,), the solver shown, "
          f"random_state=0, max_iter={args.max_iter} (digits" + ("" if args.no_regression else ", the regressions")
          + ")" + (f" / {args.large_max_iter} (synthetic)" if args.large else "")
          + f", early_stopping={args.early_stopping} (never with lbfgs), the other parameters at scikit-learn's "
          f"defaults; scikit-learn gets the float64 data, mlpgrad computes in the dtype shown; speed-up: "
          f"scikit-learn's fit time over mlpgrad's; fit time: best of {args.repeat}")
    if args.newton_cg:
        _newton_table(datasets, dtypes, args, MLPClassifier)
    if args.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from ._plot import plot_loss_curve
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for (label, est), width in zip(curves, [4.0, 2.0, 1.0]):  # the curves coincide: widths tell them apart
            plot_loss_curve(est, ax=ax, label=label, linewidth=width, alpha=0.6 if width > 3 else 1.0)
        ax.set_title("digits: loss curves")
        ax.set_yscale("log")
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"wrote {args.plot}")
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``python -m mlpgrad demo``."""
    p.add_argument("--solver", choices=["adam", "sgd", "lbfgs"], default="adam",
                   help="solver of both on digits and the regression cases (default adam)")
    p.add_argument("--max-iter", type=int, default=200,
                   help="max_iter on digits and the regression cases (default 200, scikit-learn's)")
    p.add_argument("--dtype", choices=["float64", "float32", "both"], default="both",
                   help="mlpgrad's dtype (default: both rows); scikit-learn runs on the float64 data")
    p.add_argument("--early-stopping", action="store_true", help="early_stopping=True (validation curves)")
    p.add_argument("--large", action="store_true", help="also the synthetic make_classification case")
    p.add_argument("--large-samples", type=int, default=200_000, help="rows of the synthetic case (default 200000)")
    p.add_argument("--large-max-iter", type=int, default=10, help="max_iter of the synthetic case (default 10)")
    p.add_argument("--large-solvers", default="adam,lbfgs",
                   help="solvers run on the synthetic case, comma-separated (default adam,lbfgs)")
    p.add_argument("--newton-cg", action="store_true",
                   help="also newton-cg against lbfgs: iterations and time to reach lbfgs's final training loss")
    p.add_argument("--threads", type=int, default=None, help="mlpgrad's n_threads (default: OpenMP's setting)")
    p.add_argument("--repeat", type=int, default=1, help="fit each estimator N times, report the fastest (default 1)")
    p.add_argument("--no-sklearn", action="store_true", help="skip scikit-learn's estimator")
    p.add_argument("--no-regression", action="store_true", help="skip the regression table (diabetes, friedman1)")
    p.add_argument("--plot", metavar="FILE.png", help="write the digits loss curves (matplotlib)")
