"""The README's usage example runs as written and agrees with the reference."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_usage_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "README has no python example"
    namespace = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)
    assert abs(namespace["loss"] - namespace["ref_loss"]) <= 1e-5 * abs(namespace["ref_loss"])
    assert namespace["grads"].input.shape == (4096, 784)
