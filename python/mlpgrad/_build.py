"""Build and run-time information, and the SIMD level choice (``MLPGRAD_SIMD``)."""

from __future__ import annotations

import os
from importlib import metadata
from typing import Any, Dict

from . import _native

_SIMD_LEVELS = ("generic", "avx2", "avx512")


def _apply_simd_env() -> None:
    """``MLPGRAD_SIMD=generic|avx2|avx512`` forces a lower level (a higher one than the CPU has is clamped)."""
    value = os.environ.get("MLPGRAD_SIMD", "").strip().lower()
    if not value:
        return
    if value not in _SIMD_LEVELS:
        raise ImportError(f"MLPGRAD_SIMD must be one of {_SIMD_LEVELS}, got {value!r}")
    _native.set_simd(value)


def build_info() -> Dict[str, Any]:
    """Version, compiler, OpenMP (on/off, default threads) and the SIMD level in use.

    Returns
    -------
    dict
        "version", "compiler", "openmp" (bool), "max_threads", "simd" (the level in use), "simd_best" and
        "simd_available" (the levels this CPU runs; ``MLPGRAD_SIMD`` forces a lower one at import).

    Raises
    ------
    ImportError
        Only at import: ``MLPGRAD_SIMD`` set to an unknown level.

    Examples
    --------
    >>> import mlpgrad
    >>> mlpgrad.build_info()["simd"] in mlpgrad.build_info()["simd_available"]
    True
    """
    info = _native.build_info()
    try:
        version = metadata.version("mlpgrad")
    except metadata.PackageNotFoundError:  # running from a source tree
        version = "unknown"
    return {"version": version, **info}


_apply_simd_env()
