"""Finding the small C libraries the install builds (optional extensions in pyproject.toml).

Two are built: ``fedchain/fl/_loops.c`` (the frozen arithmetic, :mod:`fedchain.fl._kernels`)
and ``fedchain/storage/_leaves.c`` (the embedded store's leaf reads,
:mod:`fedchain.storage._native`). Neither has a Python API: each is a plain shared library
loaded with :mod:`ctypes`, which releases the GIL for every call. An install without a C
compiler goes on without them, and so does fedchain: the Python and numpy code they replace
runs instead, with the same results. ``FEDCHAIN_KERNELS=numpy`` in the environment turns both
off (to compare, or to rule them out).
"""

from __future__ import annotations

import importlib.machinery
import os
from pathlib import Path

#: Environment variable: ``numpy`` turns the compiled libraries off.
KERNELS_ENV = "FEDCHAIN_KERNELS"


def turned_off() -> bool:
    """Whether the environment turns the compiled libraries off."""
    return os.environ.get(KERNELS_ENV, "").strip().lower() == "numpy"


def built_library(directory: Path, stem: str) -> Path | None:
    """The library ``stem`` the install built in ``directory`` (a package's folder), if it did."""
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = directory / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


__all__ = ["KERNELS_ENV", "built_library", "turned_off"]
