"""DP-SGD on scikit-learn's digits with mlpgrad.clipped_grad, next to the same network trained without privacy.

    python docs/examples/dp_sgd.py            # 15 epochs of each, a second or two
    python docs/examples/dp_sgd.py --quick    # 400 training images, 5 short epochs: what CI runs

DP-SGD (Abadi et al., 2016), one step:
    1. Poisson sampling: every training sample joins the batch independently with probability q, so the batch size
       varies around its expected value q N (the privacy accounting assumes exactly this sampler);
    2. g = sum over the batch of min(1, C / ||g_i||) g_i: every sample's gradient clipped to norm C, in one pass
       (mlpgrad.clipped_grad, reduction "sum");
    3. g += N(0, (sigma C)^2) independently on every parameter; g /= q N (the expected batch size);
    4. a momentum SGD step on the flat parameters theta (mlpgrad.pack order).
The non-private run uses shuffled batches of size q N, mlpgrad.loss_and_grad (reduction "mean") and the same step.
epsilon, for the given delta, comes from the dp-accounting package (an RDP accountant for the Poisson-subsampled
Gaussian mechanism composed over every step) when it is installed: pip install dp-accounting (or ".[dp]").
Needs scikit-learn (the "sklearn" or "test" extra).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import mlpgrad


def load_data(n_train, dtype):
    """Digits scaled to [0, 1], a stratified 75/25 split; the first n_train training rows when n_train is given."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X_tr, X_te, y_tr, y_te = train_test_split((X / 16.0).astype(dtype), y, test_size=0.25, random_state=0,
                                              stratify=y)
    if n_train is not None:
        X_tr, y_tr = X_tr[:n_train], y_tr[:n_train]
    return X_tr, y_tr, X_te, y_te


def accuracy(theta, sizes, X, y):
    weights, biases = mlpgrad.unpack(theta, sizes)
    return float(np.mean(mlpgrad.forward(weights, biases, X, head="softmax").argmax(axis=1) == y))


def sgd(theta, grad_of_batch, batches, lr, momentum, velocity):
    """Momentum SGD in place on theta: v = momentum v + g(batch); theta -= lr v, for every batch."""
    for idx in batches:
        velocity *= momentum
        velocity += grad_of_batch(idx)
        theta -= lr * velocity


def train(args, sizes, X, y, X_test, y_test, private):
    """Returns (test accuracy, seconds per epoch, number of steps). theta is a flat vector; weights and biases are
    views of it (mlpgrad.unpack), so the in-place step updates what the gradient functions read."""
    rng = np.random.default_rng(args.seed)
    net = mlpgrad.MLP(sizes, head="softmax", dtype=X.dtype, seed=args.seed)  # W ~ N(0, 1/d_in), b = 0: both runs
    theta = mlpgrad.pack(net.weights, net.biases)
    weights, biases = mlpgrad.unpack(theta, sizes)
    velocity = np.zeros_like(theta)
    n = len(y)
    q = args.batch_size / n
    steps_per_epoch = int(round(1 / q))
    C, sigma = args.max_norm, args.sigma

    def private_grad(idx):
        _, g, _ = mlpgrad.clipped_grad(weights, biases, X[idx], y[idx], head="softmax", max_norm=C,
                                       reduction="sum", n_threads=args.threads)
        flat = mlpgrad.pack(g.weights, g.biases)
        flat += rng.normal(0.0, sigma * C, size=flat.size).astype(flat.dtype)
        flat /= q * n
        return flat

    def plain_grad(idx):
        _, g = mlpgrad.loss_and_grad(weights, biases, X[idx], y[idx], head="softmax", reduction="mean",
                                     n_threads=args.threads)
        return mlpgrad.pack(g.weights, g.biases)

    def poisson_batches():
        return [np.flatnonzero(rng.random(n) < q) for _ in range(steps_per_epoch)]

    def shuffled_batches():
        perm = rng.permutation(n)
        return [perm[i * args.batch_size:(i + 1) * args.batch_size] for i in range(steps_per_epoch)]

    seconds = []
    for _ in range(args.epochs):
        t0 = time.perf_counter()
        if private:
            sgd(theta, private_grad, poisson_batches(), args.lr, args.momentum, velocity)
        else:
            sgd(theta, plain_grad, shuffled_batches(), args.lr, args.momentum, velocity)
        seconds.append(time.perf_counter() - t0)
    return accuracy(theta, sizes, X_test, y_test), float(np.median(seconds)), args.epochs * steps_per_epoch


def epsilon(q, sigma, steps, delta):
    """(epsilon, accountant name), or (None, why not) when dp-accounting is not installed."""
    try:
        import dp_accounting
    except ImportError:
        return None, "dp-accounting not installed (pip install dp-accounting)"
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps)
    # RDP orders from 1.75 up: the package's default fractional orders near 1 fail to converge at this example's
    # larger sampling rates (a warning per order, and the order dropped); they never give the minimum here.
    orders = [1.75 + 0.25 * i for i in range(33)] + list(range(11, 64)) + [128, 256, 512]
    accountant = dp_accounting.rdp.RdpAccountant(orders)
    accountant.compose(event)
    return accountant.get_epsilon(delta), "RDP accountant, dp-accounting"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="400 training images, expected batch 32, 5 epochs of 12 steps (for CI)")
    p.add_argument("--epochs", type=int, default=None, help="epochs of each run (default 15, 5 with --quick)")
    p.add_argument("--hidden", type=int, default=64, help="width of the sigmoid hidden layer (default 64)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="expected batch size q N (default 64, 32 with --quick)")
    p.add_argument("--max-norm", type=float, default=0.5, help="clipping norm C (default 0.5)")
    p.add_argument("--sigma", type=float, default=1.0, help="noise multiplier: noise std sigma C (default 1.0)")
    p.add_argument("--lr", type=float, default=0.5, help="learning rate of both runs (default 0.5)")
    p.add_argument("--momentum", type=float, default=0.9, help="momentum of both runs (default 0.9)")
    p.add_argument("--delta", type=float, default=1e-5, help="delta of the (epsilon, delta) guarantee (default 1e-5)")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--threads", type=int, default=None, help="mlpgrad's n_threads (default: OpenMP's setting)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.epochs is None:
        args.epochs = 5 if args.quick else 15
    if args.batch_size is None:
        args.batch_size = 32 if args.quick else 64

    X, y, X_test, y_test = load_data(400 if args.quick else None, np.dtype(args.dtype))
    sizes = [X.shape[1], args.hidden, 10]
    n = len(y)
    q = args.batch_size / n
    print(f"digits: {n} training / {len(y_test)} test images, network {sizes} (sigmoid hidden, softmax), "
          f"{args.dtype}; {args.epochs} epochs of {int(round(1 / q))} steps, lr {args.lr}, momentum {args.momentum}")
    print(f"DP-SGD: Poisson sampling q = {q:.4f} (expected batch {args.batch_size}), clip C = {args.max_norm}, "
          f"noise multiplier sigma = {args.sigma}\n")

    rows = []
    for name, private in (("non-private SGD", False), ("DP-SGD", True)):
        acc, secs, steps = train(args, sizes, X, y, X_test, y_test, private)
        if private:
            eps, how = epsilon(q, args.sigma, steps, args.delta)
            guarantee = f"epsilon = {eps:.2f} at delta = {args.delta:g} ({how})" if eps is not None else how
        else:
            guarantee = "none"
        rows.append((name, acc, secs, guarantee))

    header = f"{'training':<16} {'test accuracy':>13} {'s / epoch':>10}   privacy"
    print(header)
    print("-" * len(header))
    for name, acc, secs, guarantee in rows:
        print(f"{name:<16} {acc:>13.4f} {secs:>10.4f}   {guarantee}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
