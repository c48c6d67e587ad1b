"""The README's usage example runs as written and agrees with the reference."""

import pathlib
import re

import numpy as np
import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_usage_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "README has no python example"
    namespace = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)
    assert abs(namespace["loss"] - namespace["ref_loss"]) <= 1e-5 * abs(namespace["ref_loss"])
    assert namespace["grads"].input.shape == (4096, 784)


@pytest.mark.slow  # 20 L-BFGS iterations of a 784-256-256-10 network on 4096 rows
def test_readme_objective_example_runs():
    """The Objective example (the second python block) continues the usage example and lowers the loss."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert "mlpgrad.Objective" in blocks[1]
    namespace = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)
    exec(compile(blocks[1], str(README), "exec"), namespace)
    obj, res = namespace["obj"], namespace["res"]
    assert res.fun < 0.9 * obj.loss(namespace["theta0"])
    assert namespace["weights"][0].shape == (784, 256)


def test_readme_per_sample_example_runs():
    """The per-sample example (the third python block) continues the usage example: shapes, and the per-sample
    gradients summing to the gradient (its own assert)."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert "mlpgrad.clipped_grad" in blocks[2]
    namespace = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)
    exec(compile(blocks[2], str(README), "exec"), namespace)
    assert namespace["norms"].shape == (4096,) and namespace["scores"].shape == (8, 4096)
    assert namespace["along"].shape == (4096,) and namespace["G"].shape == (16, 269322)
    assert namespace["proponents"].shape == (8, 5)


def test_readme_curvature_example_runs():
    """The curvature example (the fourth python block) continues the usage example: the Gauss-Newton step is a
    descent direction and the GGN diagonal is non-negative."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert "ggn_operator" in blocks[3]
    namespace = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)
    exec(compile(blocks[3], str(README), "exec"), namespace)
    obj, theta, step = namespace["obj"], namespace["theta"], namespace["step"]
    assert namespace["Hv"].shape == (obj.n_params,) and namespace["diag"].shape == (obj.n_params,)
    assert np.all(namespace["diag"] >= 0)
    assert float(np.dot(obj.loss_and_grad(theta)[1], step)) < 0
    assert obj.loss(theta + 0.5 * step) < obj.loss(theta)


def test_readme_sparse_example_runs():
    """The sparse example (its own python block) runs alone: dense gradients of the parameters' shapes, the
    per-sample norms of every row."""
    pytest.importorskip("scipy")
    blocks = [b for b in re.findall(r"```python\n(.*?)```", README.read_text(), re.S) if "scipy.sparse.random" in b]
    assert len(blocks) == 1
    namespace = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)
    assert namespace["grads"].weights[0].shape == (20_000, 100) and namespace["norms"].shape == (2000,)
    assert np.isfinite(namespace["loss"])
