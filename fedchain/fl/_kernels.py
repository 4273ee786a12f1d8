"""The compiled loops (a small C library, ``_loops.c``) for the two hot computations whose results are frozen.

FedAvg's per-element arithmetic (:mod:`fedchain.fl._aggregate`) and the certified split of an
exact sum of squares (:mod:`fedchain.fl._exact`) each do several operations per element; as
numpy calls, each operation is one pass over memory (or over a chunk in the L2 cache). The C
loops do the very same operations, in the same order per element, in one pass over data that
stays in the L1 cache, so they change no bit of any result and run several times faster (the
figures are in docs/ARCHITECTURE.md, "How the audit spends its time").

What keeps the arithmetic identical is said in ``_loops.c`` itself: compiled with
``-ffp-contract=off`` and without ``-ffast-math`` (every product and sum correctly rounded,
never a fused multiply-add, in the order written, in the calling thread's rounding mode); the
only reductions are the block sums the certified split's proof allows in any order, written as
fixed partial sums. The tests run every loop against its numpy form (tests/fl/test_kernels.py).

The library is built when fedchain is installed (an optional extension in pyproject.toml: an
install without a C compiler goes on without it) and loaded with :mod:`ctypes`, which releases
the GIL for each call, so the aggregation's threads run side by side. The loops read the
caller's arrays through their addresses; the callers keep the arrays alive for the call and pass
only C-contiguous float32 or float64 arrays. Without the library, or with ``FEDCHAIN_KERNELS=numpy``
in the environment, the numpy loops run: the same bits, slower.

The loops also honour numpy's ``errstate``: they raise the same IEEE exception flags as numpy's
loops (the same operations), and :func:`check_float_status` handles them as numpy would.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import platform
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedchain._native import KERNELS_ENV, built_library, turned_off

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Kernels:
    """The compiled loops; every array argument is an address (an int), see ``_loops.c``."""

    fedavg_chunk: Any
    """``(theta, deltas, coeffs, k, out, lo, hi)``: ``out[i] = fl32(fl64(theta[i]) + fl64(fl64(d_0[i]) * c_0) + ...)``
    for ``lo <= i < hi``, ``deltas`` the address of ``k`` float32 pointers (int64) and ``coeffs`` of their
    ``c_k`` (float64), in participant order."""
    fedavg_differs: Any
    """``(theta, deltas, coeffs, k, expected, lo, hi)``: the first ``i`` in ``[lo, hi)`` at which ``fedavg_chunk``'s
    ``out[i]`` would not be finite or not have ``expected[i]``'s bits, ``hi`` if there is none (nothing is written)."""
    add_scaled: Any
    """``(acc, delta, c, lo, hi, theta)``: ``acc[i] = fl64(acc[i] + fl64(fl64(delta[i]) * c))`` for ``lo <= i < hi``,
    after ``acc[i] = fl64(theta[i])`` when ``theta`` is not ``None``."""
    widen: Any
    """``(source, target, lo, hi)``: float32 to float64, exact."""
    narrow: Any
    """``(source, target, lo, hi)``: float64 to float32, to nearest even."""
    blocks_sums: Any
    """``(values, n, block, out)``: for each block of ``block <= 2**16`` of the ``n`` float32 values (the last one
    may be shorter), at ``out[5 j:5 j + 5]`` for block ``j``: the estimate ``S'``, and when it is finite and not zero
    the grid ``g`` and ``A'``, ``B'``, ``T'`` of :mod:`fedchain.fl._exact`'s certified split; one call for them all."""


_lock = threading.Lock()
_loaded: list[Kernels | None] = []


def kernels() -> Kernels | None:
    """The compiled loops, loaded on first use; ``None`` when they are turned off or not built."""
    if _loaded:
        return _loaded[0]
    with _lock:
        if not _loaded:
            _loaded.append(_load())
    return _loaded[0]


def for_arithmetic() -> Kernels | None:
    """:func:`kernels`, when the caller's numpy ``errstate`` can be honoured (see :func:`check_float_status`)."""
    compiled = kernels()
    if compiled is None or _float_status() is not None or all(v == "ignore" for v in np.geterr().values()):
        return compiled
    return None  # no way to read the floating-point flags here: numpy's loops report them


class _FloatStatus:
    """The calling thread's IEEE exception flags, through the C library's ``feclearexcept``/``fetestexcept``."""

    def __init__(self, libm: ctypes.CDLL, bits: dict[str, int]) -> None:
        self._clear, self._test = libm.feclearexcept, libm.fetestexcept
        self._bits = bits
        self._all = sum(bits.values())

    def clear(self) -> None:
        self._clear(self._all)

    def raised(self) -> list[str]:
        flags = int(self._test(self._all))
        return [name for name, bit in self._bits.items() if flags & bit]


@functools.cache
def _float_status() -> _FloatStatus | None:
    """The flags' reader on a platform whose ``<fenv.h>`` values are known (x86-64 and arm64), else ``None``.

    Found on first use (``find_library`` runs ``ldconfig``), not when fedchain is imported."""
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64"):
        bits = {"divide": 0x04, "over": 0x08, "under": 0x10, "invalid": 0x01}
    elif machine in ("aarch64", "arm64"):
        bits = {"divide": 0x02, "over": 0x04, "under": 0x08, "invalid": 0x01}
    else:
        return None
    name = ctypes.util.find_library("m") or ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        # PyDLL: called holding the GIL (two instructions' work; releasing and taking back the GIL around
        # them can wait for another thread's Python, which is what a busy audit's verifier did)
        return _FloatStatus(ctypes.PyDLL(name), bits)
    except (OSError, AttributeError):
        return None


#: numpy's words for the conditions in its messages.
_CONDITIONS = {"divide": "divide by zero", "over": "overflow", "under": "underflow", "invalid": "invalid value"}


def clear_float_status() -> None:
    """Clear the calling thread's floating-point exception flags before a compiled loop runs."""
    status = _float_status()
    if status is not None:
        status.clear()


def check_float_status(where: str) -> None:
    """Handle the flags the compiled loops raised on this thread since :func:`clear_float_status` as numpy would.

    numpy checks the flags after each of its loops and then ignores, warns, raises, calls or
    logs as its ``errstate`` says; the compiled loops set the same flags (they do the same IEEE
    operations), so this does the same for them, with the caller's ``errstate``.

    Raises
    ------
    FloatingPointError
        When a raised condition's ``errstate`` is ``raise``.
    """
    status = _float_status()
    if status is None:
        return
    raised = status.raised()
    if not raised:
        return
    modes = {name: str(mode) for name, mode in np.geterr().items()}
    for condition in raised:
        mode = modes[condition]
        message = f"{_CONDITIONS[condition]} encountered in {where}"
        if mode == "raise":
            raise FloatingPointError(message)
        if mode == "warn":
            warnings.warn(message, RuntimeWarning, stacklevel=3)
        elif mode in ("call", "log"):
            handler = np.geterrcall()
            if mode == "call" and callable(handler):
                handler(_CONDITIONS[condition], {"divide": 1, "over": 2, "under": 4, "invalid": 8}[condition])
            elif handler is not None and hasattr(handler, "write"):
                handler.write(f"Warning: {message}\n")
        elif mode == "print":
            print(f"Warning: {message}")


def address(array: np.ndarray) -> int:
    """The address of a C-contiguous array's first element (what the loops read through)."""
    return int(array.__array_interface__["data"][0])


def _library() -> Path | None:
    """The built ``_loops`` library beside this module, if the install built it."""
    return built_library(Path(__file__).parent, "_loops")


def _load() -> Kernels | None:
    if turned_off():
        logger.debug("%s=numpy: the numpy loops run", KERNELS_ENV)
        return None
    path = _library()
    if path is None:
        logger.info("the compiled loops were not built with this install; the numpy loops run (same results, slower)")
        return None
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as err:
        logger.warning("cannot load the compiled loops %s (%s); the numpy loops run (same results, slower)", path, err)
        return None
    ptr, i64, f64 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double
    signatures = {
        "fc_fedavg_chunk": (ptr, ptr, ptr, i64, ptr, i64, i64),
        "fc_fedavg_differs": (ptr, ptr, ptr, i64, ptr, i64, i64),
        "fc_add_scaled": (ptr, ptr, f64, i64, i64, ptr),
        "fc_widen": (ptr, ptr, i64, i64),
        "fc_narrow": (ptr, ptr, i64, i64),
        "fc_blocks_sums": (ptr, i64, i64, ptr),
    }
    try:
        for name, argtypes in signatures.items():
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = argtypes, (i64 if name == "fc_fedavg_differs" else None)
    except AttributeError as err:  # a library from another version of _loops.c
        logger.warning(
            "the compiled loops %s are not this version's (%s): reinstall fedchain; the numpy loops run", path, err
        )
        return None
    return Kernels(
        fedavg_chunk=lib.fc_fedavg_chunk,
        fedavg_differs=lib.fc_fedavg_differs,
        add_scaled=lib.fc_add_scaled,
        widen=lib.fc_widen,
        narrow=lib.fc_narrow,
        blocks_sums=lib.fc_blocks_sums,
    )


__all__ = [
    "KERNELS_ENV",
    "Kernels",
    "address",
    "check_float_status",
    "clear_float_status",
    "for_arithmetic",
    "kernels",
]
