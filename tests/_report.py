"""The evidence a run prints after its summary: the largest error each module met against its bound.

A test module registers a section (a title and a function returning the lines to print); tests/conftest.py's
``pytest_terminal_summary`` prints every section with lines, after the run, whether or not output is captured.
A module whose tests did not run (deselected, skipped) records nothing and prints nothing.  Imported as a plain
module, like _bounds and _problems.
"""

from __future__ import annotations

from typing import Callable, Dict, List

SECTIONS: Dict[str, Callable[[], List[str]]] = {}


def section(title: str):
    """Decorator: ``fn() -> lines`` is printed under ``title`` at the end of the run (nothing if no lines)."""
    def register(fn):
        SECTIONS[title] = fn
        return fn
    return register
