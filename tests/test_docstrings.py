"""Reference documentation (issue 15, part 6): every public function, class and method has a numpydoc docstring
with the sections help() and IDEs show (Parameters naming every parameter, Returns, Raises, Examples), and its
Examples run as written.

Public: ``mlpgrad.__all__`` and the lazily loaded ``MLPClassifier``, ``MLPRegressor`` and ``plot_loss_curve``; the
public methods and properties of the classes (those defined in mlpgrad, not inherited from scikit-learn or
``tuple``); the public names of ``mlpgrad.dask`` when dask is installed. ``mlpgrad.reference`` keeps its short docstrings: it is
the specification, read beside docs/derivation.md, and its functions take the arguments of the native functions
of the same names, whose docstrings document them (a second copy of each would drift)."""

from __future__ import annotations

import doctest
import inspect
import re
import warnings

import pytest

import mlpgrad


def _public_objects():
    """(qualified name, object) of every documented public name."""
    modules = [("mlpgrad", mlpgrad, [n for n in mlpgrad.__all__ if n not in ("reference", "__version__")])]
    try:
        import sklearn  # noqa: F401  (the estimators and plot_loss_curve need the "sklearn" extra)
        modules[0][2].extend(["MLPClassifier", "MLPRegressor", "plot_loss_curve"])
    except ImportError:
        pass
    try:
        import mlpgrad.dask as mdask
        modules.append(("mlpgrad.dask", mdask, list(mdask.__all__)))
    except ImportError:
        pass
    out = []
    for prefix, module, names in modules:
        for name in names:
            obj = getattr(module, name)
            out.append((f"{prefix}.{name}", obj))
            if inspect.isclass(obj):
                out.extend((f"{prefix}.{name}.{m}", member) for m, member in _own_members(obj))
    return out


def _own_members(cls):
    """The public methods and properties a class has from mlpgrad's code (its own or an mlpgrad base's)."""
    seen = {}
    for klass in reversed(cls.__mro__):
        if not klass.__module__.startswith("mlpgrad"):
            continue
        for name, member in vars(klass).items():
            if not name.startswith("_") and (inspect.isfunction(member) or isinstance(member, property)):
                seen[name] = member
    if issubclass(cls, tuple):  # a NamedTuple: its fields are documented as the class's Attributes
        seen = {n: m for n, m in seen.items() if n not in getattr(cls, "_fields", ())}
    return sorted(seen.items())


PUBLIC = _public_objects()


def _sections(doc: str) -> dict:
    """numpydoc section title -> its lines."""
    sections, current = {}, None
    lines = doc.splitlines()
    for i, line in enumerate(lines):
        if i + 1 < len(lines) and re.fullmatch(r"-{3,}", lines[i + 1].strip()) and line.strip():
            current = line.strip()
            sections[current] = []
        elif current is not None and not re.fullmatch(r"-{3,}", line.strip()):
            sections[current].append(line)
    return sections


def _documented_parameters(lines) -> set:
    """The names in a Parameters section: its unindented lines, ``a, b : type`` or ``a, b``."""
    names = set()
    for line in lines:
        if line and not line[0].isspace():
            names.update(n.strip().lstrip("*") for n in line.split(" : ")[0].split(","))
    return names


def _signature_parameters(obj) -> set:
    target = obj.__init__ if inspect.isclass(obj) else obj
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return set()
    return {n for n in params if n != "self"}


@pytest.mark.parametrize("name, obj", PUBLIC, ids=[n for n, _ in PUBLIC])
def test_numpydoc_sections(name, obj):
    doc = inspect.getdoc(obj)
    assert doc and doc.splitlines()[0].strip(), f"{name} has no docstring"
    if isinstance(obj, property):
        return  # a property: its summary line (numpydoc's form)
    sections = _sections(doc)
    is_class = inspect.isclass(obj)
    required = ["Examples"]
    if is_class and issubclass(obj, tuple):
        required.append("Attributes")
    else:
        required.append("Raises")
        if not is_class:
            required.append("Returns")
        if _signature_parameters(obj):
            required.append("Parameters")
    missing = [s for s in required if s not in sections]
    assert not missing, f"{name}: no {missing} section"
    if "Parameters" in sections:
        documented = _documented_parameters(sections["Parameters"])
        undocumented = _signature_parameters(obj) - documented
        assert not undocumented, f"{name}: parameters {sorted(undocumented)} not in its Parameters section"
        unknown = documented - _signature_parameters(obj)
        assert not unknown, f"{name}: {sorted(unknown)} documented but not parameters"


def _examples(obj):
    target = obj.fget if isinstance(obj, property) else obj
    return doctest.DocTestParser().get_doctest(inspect.getdoc(target) or "", {}, getattr(target, "__qualname__", ""),
                                               None, 0)


@pytest.mark.parametrize("name, obj", PUBLIC, ids=[n for n, _ in PUBLIC])
def test_examples_run(name, obj):
    test = _examples(obj)
    if not test.examples:
        pytest.skip("no examples (a property)")
    if "matplotlib" in test.docstring:
        pytest.importorskip("matplotlib")
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning of the small fits is not what these show
        runner.run(test, out=lambda text: pytest.fail(f"{name}'s example:\n{text}", pytrace=False))
    assert runner.failures == 0
