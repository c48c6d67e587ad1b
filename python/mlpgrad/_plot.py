"""``mlpgrad.plot_loss_curve``: training and validation curves of a fitted ``mlpgrad.MLPClassifier`` (or of
scikit-learn's MLPClassifier, which has the same attributes) with matplotlib (an optional dependency)."""

from __future__ import annotations

__all__ = ["plot_loss_curve"]


def plot_loss_curve(est, ax=None, *, label=None, **plot_kwargs):
    """Draw ``est.loss_curve_`` (training loss per epoch) and, when recorded (``early_stopping=True``), the
    validation loss (``validation_loss_curve_``) and the validation accuracy (``validation_scores_``, on a
    second y axis). ``plot_kwargs`` go to matplotlib's ``plot`` (linewidth, color...). Returns the Axes."""
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
        ax2 = getattr(ax, "_mlpgrad_score_axis", None)
        if ax2 is None:
            ax2 = ax.twinx()
            ax2.set_ylabel("validation accuracy")
            ax._mlpgrad_score_axis = ax2
        ax2.plot(range(1, len(scores) + 1), scores, **{**plot_kwargs, "linestyle": ":", "color": line.get_color()},
                 label=f"{name}: validation accuracy")
    ax.set_xlabel("epoch" if getattr(est, "solver", "adam") in ("adam", "sgd") else "iteration")  # full-batch: iterations
    ax.set_ylabel("loss")
    ax.legend(loc="upper right")
    return ax
