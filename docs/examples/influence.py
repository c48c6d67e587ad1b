"""Influence functions on digits: how removing one training image changes a test image's loss, predicted from the
Gauss-Newton matrix and checked by retraining.

    python docs/examples/influence.py            # a 64-32-10 network, 30 leave-one-out retrainings
    python docs/examples/influence.py --quick    # 400 training images, a 64-16-10 network, 10 retrainings: CI

The network (sigmoid hidden layer, softmax) is fitted to scikit-learn's digits by L-BFGS on mlpgrad.Objective, to a
tight tolerance: theta minimizes L(theta) = sum_i l_i(theta) + alpha / 2 ||W||^2 (reduction "sum": removing image j
removes exactly the term l_j). To first order (Cook and Weisberg, 1982; Koh and Liang, 2017) the minimum without
image j is one Newton step away, theta_(-j) - theta = H^-1 g_j (g_j = grad l_j at theta, H the Hessian of L), so the
test image's loss changes by

    actual(j) = l_test(theta_(-j)) - l_test(theta)  ~  predicted(j) = g_test . H^-1 g_j = s . g_j,   s = H^-1 g_test.

s is solved once, by conjugate gradients (scipy.sparse.linalg.cg) on Objective.ggn_operator(theta) plus a damping
lambda I. The operator is G + alpha I_W: the Gauss-Newton matrix of the data term (positive semi-definite, unlike H
in a non-convex network, where CG needs a positive definite matrix; G equals H where the residuals p - y vanish, so
near a good fit) plus the penalty's Hessian, alpha on the weights and 0 on the biases. The damping lambda (default
1e-3, on every parameter) makes the matrix positive definite along the directions G and the penalty leave flat
(biases of saturated units, the softmax's shift invariance of the output biases), bounding the CG's condition number;
it is small against G's scale (sum_i of per-sample curvatures, O(N)), so it hardly changes s along the directions
the data determine. Then every training image's predicted change is one call, Objective.grad_dot(theta, s) (N,):
g_j . s for every j without forming a per-sample gradient.

The test image is, by default, the misclassified one of smallest loss: near the decision boundary, where single
training images move its loss the most. The check: for the training images with the largest |predicted change|
(where the first-order effect stands well above the optimizer's noise), retrain without the image, warm-started from
theta with the same L-BFGS and tolerances, and print the Pearson and Spearman correlations of the predicted and the
actual changes. A control retrains on all the images from theta: its change of the test loss is the noise floor.
The predicted changes are often smaller than the actual ones (seen: 0.21 against 0.36 for the largest in --quick):
the step is taken with the curvature of all the images, the removed one included, and it is first order in a change
that is not small for the most influential images; the ranking, which the correlations measure, is what it gets
right.
Needs scikit-learn and scipy (both in the "sklearn" and "test" extras).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import mlpgrad
from dp_sgd import load_data  # the same digits split as docs/examples/dp_sgd.py

# L-BFGS's tolerances, the same for the fit, the control and every leave-one-out retraining: the largest gradient
# entry, and the relative decrease of L in one iteration (about float64's epsilon: stop on the gradient, not on f)
GTOL, FTOL = 1e-8, 1e-15


# Threads per evaluation (--threads): an evaluation here is about 0.1 ms of work, less than what the threads of a
# parallel region can lose waiting for each other on a busy machine (--quick's gradient, seen on 2 cores shared with
# other work: 0.07-0.18 ms with one thread, 0.5-14 ms with two).
THREADS = 1


def objective(sizes, X, y, alpha, threads=THREADS):
    return mlpgrad.Objective(sizes, X, y, head="softmax", reduction="sum", alpha=alpha, n_threads=threads)


def fit(obj, theta0, max_iter):
    """(theta, iterations): L-BFGS-B from theta0 to GTOL, or max_iter iterations."""
    import scipy.optimize

    res = scipy.optimize.minimize(obj.loss_and_grad, theta0, jac=True, method="L-BFGS-B",
                                  options={"maxiter": max_iter, "gtol": GTOL, "ftol": FTOL, "maxcor": 20})
    return res.x, res.nit


def influence_direction(obj, theta, g_test, damping):
    """(s, CG iterations, relative residual): s = (G + alpha I_W + damping I)^-1 g_test by conjugate gradients."""
    from scipy.sparse.linalg import LinearOperator, cg

    G = obj.ggn_operator(theta)
    A = LinearOperator(G.shape, matvec=lambda v: G.matvec(v) + damping * v, dtype=G.dtype)
    iterations = []
    s, info = cg(A, g_test, rtol=1e-10, maxiter=10 * len(g_test), callback=iterations.append)
    if info != 0:
        raise RuntimeError(f"CG did not converge (info={info}): raise --damping")
    residual = np.linalg.norm(A.matvec(s) - g_test) / np.linalg.norm(g_test)
    return s, len(iterations), residual


def losses_and_predictions(sizes, theta, X, y):
    """Per-image losses (N,) of (X, y) at theta and the predicted classes (N,)."""
    weights, biases = mlpgrad.unpack(theta, sizes)
    probs = mlpgrad.forward(weights, biases, X, head="softmax")
    return -np.log(probs[np.arange(len(y)), y]), probs.argmax(axis=1)


def choose_test_image(losses, pred, y):
    """The misclassified image with the smallest loss (near the decision boundary, where retraining moves it the
    most), or the largest-loss image if none is misclassified."""
    wrong = np.flatnonzero(pred != y)
    return int(wrong[np.argmin(losses[wrong])]) if len(wrong) else int(np.argmax(losses))


def leave_one_out(obj, X, y, theta, j, test_loss, max_iter):
    """(change of the test loss, iterations): retrain obj's objective without training image j of (X, y),
    warm-started from theta."""
    keep = np.arange(len(y)) != j
    theta_j, nit = fit(objective(obj.layer_sizes, X[keep], y[keep], obj.alpha, obj.n_threads), theta, max_iter)
    return test_loss(theta_j) - test_loss(theta), nit


def correlations(predicted, actual):
    from scipy.stats import pearsonr, spearmanr

    return float(pearsonr(predicted, actual)[0]), float(spearmanr(predicted, actual)[0])


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="400 training images, 16 hidden units, 10 retrainings (for CI)")
    p.add_argument("--hidden", type=int, help="width of the sigmoid hidden layer (default 32, 16 with --quick)")
    p.add_argument("--n-loo", type=int, help="leave-one-out retrainings (default 30, 10 with --quick)")
    p.add_argument("--alpha", type=float, default=1.0, help="L2 penalty on the weights (default 1)")
    p.add_argument("--damping", type=float, default=1e-3, help="lambda added to the Gauss-Newton matrix (default 1e-3)")
    p.add_argument("--test-index", type=int, help="the test image (default: the misclassified one of smallest loss)")
    p.add_argument("--max-iter", type=int, default=20000, help="L-BFGS iterations at most, per fit (default 20000)")
    p.add_argument("--threads", type=int, default=THREADS, help=f"threads per evaluation (default {THREADS})")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.hidden = args.hidden or (16 if args.quick else 32)
    args.n_loo = args.n_loo or (10 if args.quick else 30)
    return args


def predict_changes(obj, theta, test_obj, damping):
    """Every training image's predicted change of test_obj's loss: s by CG, then one grad_dot (prints both)."""
    t0 = time.perf_counter()
    s, iters, residual = influence_direction(obj, theta, test_obj.loss_and_grad(theta)[1], damping)
    t1 = time.perf_counter()
    predicted = obj.grad_dot(theta, s)
    t2 = time.perf_counter()
    print(f"s = (G + alpha I_W + lambda I)^-1 g_test, lambda = {damping}: CG {iters} iterations, "
          f"relative residual {residual:.1e}, {t1 - t0:.2f} s")
    print(f"predicted change of the test loss for all {len(predicted)} training images: one grad_dot, "
          f"{1e3 * (t2 - t1):.1f} ms")
    return predicted


def check_by_retraining(obj, X, y, theta, test_loss, predicted, n_loo, max_iter):
    """Leave-one-out retraining for the n_loo images of largest |predicted change|: prints a row each and the
    correlations."""
    control, nit = fit(obj, theta, max_iter)
    print(f"control: retraining on all the images from theta: {nit} iterations, test loss change "
          f"{test_loss(control) - test_loss(theta):+.1e}")
    chosen = np.argsort(np.abs(predicted))[::-1][:n_loo]
    actual = np.empty(n_loo)
    print(f"\nleave-one-out for the {n_loo} training images of largest |predicted change|:")
    print(f"{'train':>6} {'label':>5} {'predicted':>11} {'actual':>11} {'L-BFGS its':>10}")
    t0 = time.perf_counter()
    for r, j in enumerate(chosen):
        actual[r], nit = leave_one_out(obj, X, y, theta, j, test_loss, max_iter)
        print(f"{j:>6} {y[j]:>5} {predicted[j]:>+11.3e} {actual[r]:>+11.3e} {nit:>10}")
    pearson, spearman = correlations(predicted[chosen], actual)
    print(f"({time.perf_counter() - t0:.1f} s of retraining)")
    print(f"\npredicted vs actual change of the test loss, {n_loo} training images: "
          f"pearson {pearson:.4f}, spearman {spearman:.4f}")


def main(argv=None) -> int:
    args = parse_args(argv)
    X, y, X_test, y_test = load_data(400 if args.quick else None, np.float64)
    sizes = [X.shape[1], args.hidden, 10]
    obj = objective(sizes, X, y, args.alpha, args.threads)
    net = mlpgrad.MLP(sizes, head="softmax", dtype=np.float64, seed=args.seed)
    t0 = time.perf_counter()
    theta, nit = fit(obj, mlpgrad.pack(net.weights, net.biases), args.max_iter)
    losses, pred = losses_and_predictions(sizes, theta, X_test, y_test)
    print(f"digits: {len(y)} training / {len(y_test)} test images, network {sizes}, alpha = {args.alpha}: "
          f"L-BFGS {nit} iterations in {time.perf_counter() - t0:.1f} s, |grad L| = "
          f"{np.linalg.norm(obj.loss_and_grad(theta)[1]):.1e}, test accuracy {np.mean(pred == y_test):.4f}")

    t = choose_test_image(losses, pred, y_test) if args.test_index is None else args.test_index
    print(f"test image {t}: label {y_test[t]}, predicted {pred[t]}, loss {losses[t]:.4f}")
    test_obj = objective(sizes, X_test[t:t + 1], y_test[t:t + 1], 0.0, args.threads)
    predicted = predict_changes(obj, theta, test_obj, args.damping)
    check_by_retraining(obj, X, y, theta, test_obj.loss, predicted, args.n_loo, args.max_iter)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
