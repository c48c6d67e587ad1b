"""Type information (issue 15, part 6): the package ships ``py.typed`` and the stub ``_core.pyi`` of its extension
module, the stub matches the built module, and ``mypy --strict`` accepts a user's script on the public API
(tests/typecheck/user_script.py; skipped without mypy)."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import mlpgrad
from mlpgrad import _core

PACKAGE = Path(mlpgrad.__file__).parent
STUB = PACKAGE / "_core.pyi"


def test_package_ships_its_type_information():
    """Installed beside the code (so the wheel has them): PEP 561's marker and the extension's stub."""
    assert (PACKAGE / "py.typed").is_file()
    assert STUB.is_file()


# -- the stub against the module -----------------------------------------------------------------------------------

# pybind11's spelling of a parameter's or result's type -> the outermost name the stub must use (None: any)
_PYBIND_TYPES = {"object": None, "typing.SupportsInt | typing.SupportsIndex": "int",
                 "typing.SupportsFloat | typing.SupportsIndex": "float", "numpy.ndarray": "NDArray"}


def _pybind_head(text: str):
    text = text.strip()
    if text in _PYBIND_TYPES:
        return _PYBIND_TYPES[text]
    return text.split("[", 1)[0].rsplit(".", 1)[-1]  # collections.abc.Sequence[...] -> Sequence


def _split_top(text: str):
    """text split at the commas outside brackets."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if text[start:].strip():
        parts.append(text[start:])
    return [p.strip() for p in parts]


def _pybind_signature(obj):
    """[(name, type head)], result head: from the first line of pybind11's docstring, without self."""
    line = (obj.__doc__ or "").strip().splitlines()[0]
    m = re.fullmatch(r"\w+\((.*)\) -> (.+)", line)
    assert m, f"no pybind11 signature in {line!r}"
    params = []
    for p in _split_top(m.group(1)):
        if p == "/" or p.startswith("self"):
            continue
        name, _, typ = p.partition(": ")
        params.append((name, _pybind_head(typ)))
    return params, _pybind_head(m.group(2))


class _Stub:
    """The parsed stub: its type aliases resolved to their outermost names."""

    def __init__(self, path: Path):
        self.tree = ast.parse(path.read_text())
        self.aliases: dict = {}
        self.aliases = {node.targets[0].id: self.head(node.value) for node in self.tree.body
                        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)}

    def head(self, node):
        """The outermost name of an annotation: NDArray[...] -> NDArray, A | None -> A's, an alias -> its own."""
        if isinstance(node, ast.BinOp):  # a union: its first member
            return self.head(node.left)
        if isinstance(node, ast.Subscript):
            return self.head(node.value)
        if isinstance(node, ast.Attribute):
            return node.attr
        if isinstance(node, ast.Constant):
            return str(node.value) if node.value is not None else "None"
        name = node.id
        return self.aliases.get(name, name)

    def public(self, body):
        return {node.name: node for node in body
                if isinstance(node, (ast.ClassDef, ast.FunctionDef)) and not node.name.startswith("_")}

    def check_function(self, fn: ast.FunctionDef, obj, where: str):
        params, result = _pybind_signature(obj)
        args = fn.args
        stub = [(a, True) for a in args.posonlyargs] + [(a, False) for a in args.args]
        stub = [(a, posonly) for a, posonly in stub if a.arg != "self"]
        assert len(stub) == len(params), f"{where}: {len(stub)} parameters in the stub, {len(params)} in the module"
        for (arg, posonly), (name, head) in zip(stub, params):
            if re.fullmatch(r"arg\d+", name):  # unnamed in the binding: positional-only
                assert posonly, f"{where}: parameter {arg.arg} must be positional-only (before '/')"
            else:
                assert arg.arg == name and not posonly, f"{where}: parameter {arg.arg!r} is {name!r} in the module"
            if head is not None:
                assert self.head(arg.annotation) == head, f"{where}({arg.arg}): {head} in the module"
        if result is not None:
            assert self.head(fn.returns) == result, f"{where}: returns {result} in the module"


def test_stub_matches_the_extension_module():
    """Every public name of _core is in the stub and vice versa; functions and constructors have the module's
    parameters (count, names where pybind11 has them, outermost types) and result; enums the same members; classes
    the same properties and attributes. On a failure, update python/mlpgrad/_core.pyi with the binding."""
    stub = _Stub(STUB)
    names = stub.public(stub.tree.body)
    module_names = {n for n in dir(_core) if not n.startswith("_")}
    assert set(names) == module_names, (f"in the module only: {sorted(module_names - set(names))}; "
                                        f"in the stub only: {sorted(set(names) - module_names)}")
    for name, node in names.items():
        obj = getattr(_core, name)
        if isinstance(node, ast.FunctionDef):
            stub.check_function(node, obj, name)
            continue
        members = {n.target.id for n in node.body if isinstance(n, ast.AnnAssign)}
        methods = {n.name: n for n in node.body if isinstance(n, ast.FunctionDef)}
        if hasattr(obj, "__members__"):  # an enum
            assert members == set(obj.__members__), f"{name}: members {sorted(obj.__members__)} in the module"
            continue
        stub.check_function(methods["__init__"], obj.__init__, f"{name}.__init__")
        module_attrs = {n for n in vars(obj) if not n.startswith("_")}
        stub_attrs = members | {n for n in methods if not n.startswith("_")}
        assert stub_attrs == module_attrs, f"{name}: attributes {sorted(module_attrs)} in the module"


# -- mypy --strict on a user's script ----------------------------------------------------------------------------

USER_SCRIPT = Path(__file__).parent / "typecheck" / "user_script.py"


@pytest.mark.slow
def test_mypy_strict_accepts_a_users_script(tmp_path):
    """``mypy --strict`` on tests/typecheck/user_script.py (every public function, the Objective, MLP,
    MLPClassifier and MLPRegressor, with annotated results) and on the stub: the public API is annotated, the stub is valid. mypy
    finds mlpgrad as the interpreter imports it (installed, or on PYTHONPATH); about 10 s without a cache."""
    pytest.importorskip("mypy")
    env = dict(os.environ, MYPY_FORCE_COLOR="0")
    # the stub checked from a copy: named on the command line where it is installed, it would make site-packages
    # a source root of mypy's, whose other modules then "shadow library modules" (seen in CI's venv)
    stub = tmp_path / "stub" / "_core.pyi"
    stub.parent.mkdir()
    shutil.copyfile(STUB, stub)
    result = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / "cache"),
                             "--no-error-summary", str(USER_SCRIPT), str(stub)],
                            capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_users_script_runs():
    """The script mypy checks is a working program."""
    pytest.importorskip("sklearn")
    import runpy
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its lbfgs fit stops at max_iter=50: a ConvergenceWarning
        runpy.run_path(str(USER_SCRIPT), run_name="__main__")
