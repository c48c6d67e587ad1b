"""Build and run-time information, and the SIMD level choice (``MLPGRAD_SIMD``)."""

from __future__ import annotations

import os
from importlib import metadata

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


def build_info() -> dict:
    """Version, compiler, OpenMP (on/off, default threads) and the SIMD level in use."""
    info = _native.build_info()
    try:
        version = metadata.version("mlpgrad")
    except metadata.PackageNotFoundError:  # running from a source tree
        version = "unknown"
    return {"version": version, **info}


_apply_simd_env()
