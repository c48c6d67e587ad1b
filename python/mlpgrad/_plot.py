"""``mlpgrad.plot_loss_curve``: training and validation curves of a fitted ``mlpgrad.MLPClassifier`` or
``MLPRegressor`` (or of scikit-learn's, which have the same attributes) with matplotlib (an optional dependency)."""

from __future__ import annotations

from typing import Any, Optional

__all__ = ["plot_loss_curve"]


def plot_loss_curve(est: Any, ax: Any = None, *, label: Optional[str] = None, **plot_kwargs: Any) -> Any:
    """Draw ``est.loss_curve_`` (training loss per epoch) and, when recorded (``early_stopping=True``), the
    validation loss (``validation_loss_curve_``) and the validation score (``validation_scores_``, on a second y
    axis: the accuracy of a classifier, the R^2 of a regressor).

    Parameters
    ----------
    est : MLPClassifier or MLPRegressor
        A fitted ``mlpgrad.MLPClassifier`` or ``mlpgrad.MLPRegressor``, or scikit-learn's.
    ax : matplotlib Axes or None, default=None
        Where to draw (None: a new figure); calling again on the same Axes adds curves, to compare estimators.
    label : str or None, default=None
        The legend's prefix (None: the estimator's package, "mlpgrad" or "sklearn").
    **plot_kwargs
        Go to matplotlib's ``plot`` (linewidth, color...).

    Returns
    -------
    matplotlib.axes.Axes
        The Axes drawn on.

    Raises
    ------
    ImportError
        matplotlib is not installed.
    ValueError
        The estimator has no ``loss_curve_`` (not fitted, or fitted by lbfgs in a scikit-learn without it).

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np, mlpgrad
    >>> X, y = np.array([[0.0], [1.0], [2.0], [3.0]]), np.array([0, 0, 1, 1])
    >>> clf = mlpgrad.MLPClassifier(hidden_layer_sizes=(4,), solver="lbfgs", random_state=0).fit(X, y)
    >>> ax = mlpgrad.plot_loss_curve(clf)
    >>> ax.get_xlabel()
    'iteration'
    """
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("plot_loss_curve needs matplotlib: pip install matplotlib") from exc
    curve = getattr(est, "loss_curve_", None)
    if curve is None:
        raise ValueError("the estimator has no loss_curve_: fit it first")
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    name = label or type(est).__module__.split(".")[0]
    epochs = range(1, len(curve) + 1)
    (line,) = ax.plot(epochs, curve, label=f"{name}: training loss", **plot_kwargs)
    val_loss = getattr(est, "validation_loss_curve_", None)
    if val_loss:
        ax.plot(range(1, len(val_loss) + 1), val_loss, **{**plot_kwargs, "linestyle": "--", "color": line.get_color()},
                label=f"{name}: validation loss")
    scores = getattr(est, "validation_scores_", None)
    if scores:
        from sklearn.base import is_regressor
        metric = "validation R^2" if is_regressor(est) else "validation accuracy"
        ax2 = getattr(ax, "_mlpgrad_score_axis", None)
        if ax2 is None:
            ax2 = ax.twinx()
            ax2.set_ylabel(metric)
            ax._mlpgrad_score_axis = ax2
        ax2.plot(range(1, len(scores) + 1), scores, **{**plot_kwargs, "linestyle": ":", "color": line.get_color()},
                 label=f"{name}: {metric}")
    ax.set_xlabel("epoch" if getattr(est, "solver", "adam") in ("adam", "sgd") else "iteration")  # full-batch: iterations
    ax.set_ylabel("loss")
    ax.legend(loc="upper right")
    return ax
