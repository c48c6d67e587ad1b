"""Which training images most help or hurt a test prediction: gradient dot products with mlpgrad.grad_gram.

    python docs/examples/data_attribution.py                    # writes attribution.png in the temp directory
    python docs/examples/data_attribution.py --out fig.png
    python docs/examples/data_attribution.py --quick            # fewer L-BFGS iterations: what CI runs

A 64-32-10 network (sigmoid hidden layer, softmax) is fitted to scikit-learn's digits with L-BFGS on
mlpgrad.Objective. Then, for a few test images t, the score of every training image j is g_t . g_j, the dot product of
the two images' loss gradients at the fitted parameters (TracIn at the final checkpoint, Pruthi et al., 2020, up to
the learning rate): a small gradient step on image j changes the loss of t by about -lr g_t . g_j. The largest scores
are proponents (training on them lowers t's loss), the smallest, negative ones are opponents (they raise it).
mlpgrad.grad_gram returns every score in one call, (n_test, n_train), without forming any per-sample gradient.
Needs scikit-learn and scipy; the figure needs matplotlib (all three in the "sklearn" and "test" extras).
"""

from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np

import mlpgrad


def load_data():
    """Digits scaled to [0, 1], a stratified 75/25 split (the same as docs/examples/dp_sgd.py)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    return train_test_split(X / 16.0, y, test_size=0.25, random_state=0, stratify=y)


def fit(sizes, X, y, max_iter, seed):
    """(weights, biases) minimizing the mean cross-entropy plus a small L2 penalty, by L-BFGS from MLP's init."""
    import scipy.optimize

    net = mlpgrad.MLP(sizes, head="softmax", dtype=np.float64, seed=seed)
    obj = mlpgrad.Objective(sizes, X, y, head="softmax", reduction="mean", alpha=1e-4)
    res = scipy.optimize.minimize(obj.loss_and_grad, mlpgrad.pack(net.weights, net.biases), jac=True,
                                  method="L-BFGS-B", options={"maxiter": max_iter})
    return mlpgrad.unpack(res.x, sizes)


def pick_test_images(probs, y_test, n):
    """n test indices: the first n - n // 2 images and the n // 2 with the largest loss (the most wrong ones)."""
    loss = -np.log(probs[np.arange(len(y_test)), y_test])
    hardest = [i for i in np.argsort(loss)[::-1] if i >= n - n // 2][:n // 2]
    return np.array(list(range(n - n // 2)) + hardest)


def draw(path, X_test, y_test, pred, chosen, X_train, y_train, scores, top, k):
    """One row per test image: the image, then its k proponents, then its k opponents, each titled label / score."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 1 + 2 * k
    fig, axes = plt.subplots(len(chosen), cols, figsize=(1.0 * cols, 1.25 * len(chosen) + 0.3), squeeze=False)
    for r, t in enumerate(chosen):
        row = axes[r]
        row[0].imshow(X_test[t].reshape(8, 8), cmap="gray_r")
        row[0].set_title(f"test {t}\ny={y_test[t]} pred={pred[t]}", fontsize=7, color="C3" if pred[t] != y_test[t]
                         else "black")
        for c, j in enumerate(list(top[r][:k]) + list(top[r][::-1][:k])):
            ax = row[1 + c]
            ax.imshow(X_train[j].reshape(8, 8), cmap="gray_r")
            ax.set_title(f"y={y_train[j]} {scores[r, j]:+.2g}", fontsize=7, color="C0" if c < k else "C1")
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    for c, text, color in ((1, "proponents: largest g_t . g_j", "C0"), (1 + k, "opponents: smallest g_t . g_j", "C1")):
        left, top_edge = axes[0][c].get_position().x0, axes[0][c].get_position().y1
        fig.text(left, top_edge + 0.045, text, fontsize=8, color=color)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="30 L-BFGS iterations instead of 300 (for CI)")
    p.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "attribution.png"),
                   help="the figure's path (default: attribution.png in the temp directory)")
    p.add_argument("--n-test", type=int, default=4, help="test images shown (default 4)")
    p.add_argument("--k", type=int, default=4, help="proponents and opponents shown per test image (default 4)")
    p.add_argument("--hidden", type=int, default=32, help="width of the sigmoid hidden layer (default 32)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    X_train, X_test, y_train, y_test = load_data()
    sizes = [X_train.shape[1], args.hidden, 10]
    weights, biases = fit(sizes, X_train, y_train, 30 if args.quick else 300, args.seed)
    probs = mlpgrad.forward(weights, biases, X_test, head="softmax")
    pred = probs.argmax(axis=1)
    print(f"digits: {len(y_train)} training / {len(y_test)} test images, network {sizes} fitted by L-BFGS: "
          f"test accuracy {np.mean(pred == y_test):.4f}")

    chosen = pick_test_images(probs, y_test, args.n_test)
    scores = mlpgrad.grad_gram(weights, biases, X_test[chosen], y_test[chosen], X_train, y_train, head="softmax")
    top = np.argsort(scores, axis=1)[:, ::-1]  # row r: training indices, the largest score first

    print(f"\nscore(t, j) = g_t . g_j at the fitted parameters; {args.k} proponents (largest) and opponents (smallest)")
    for r, t in enumerate(chosen):
        pros, cons = top[r][:args.k], top[r][::-1][:args.k]
        same = np.mean(y_train[top[r][:20]] == y_test[t])
        print(f"test {t:>3}: label {y_test[t]}, predicted {pred[t]}; "
              f"label {y_test[t]} among the top 20 proponents: {same:.2f}")
        print("   proponents  " + "  ".join(f"#{j} y={y_train[j]} {scores[r, j]:+.3g}" for j in pros))
        print("   opponents   " + "  ".join(f"#{j} y={y_train[j]} {scores[r, j]:+.3g}" for j in cons))

    try:
        draw(args.out, X_test, y_test, pred, chosen, X_train, y_train, scores, top, args.k)
    except ImportError:
        print("\nmatplotlib is not installed: no figure (pip install matplotlib)")
        return 1
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
