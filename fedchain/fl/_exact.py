"""Exactly rounded sums of squares of float32 values: order-, thread- and machine-independent.

The square of a float32 is exact in float64 (24-bit significands square to at most 48
bits) and never subnormal. The squares are summed exactly a chunk at a time by repeated
error-free extraction (Rump, Ogita and Oishi, "Accurate floating-point summation", 2008):
with ``sigma`` a power of two at least ``2**L`` times the largest magnitude left in the chunk
(``2**L`` at least twice the chunk's length),

    q = (sigma + v) - sigma        v rounded to a multiple of ulp(sigma) / 2: exact
    v = v - q                      the remainder, at most ulp(sigma) / 2: exact

Every ``q`` of a level is a multiple of ``ulp(sigma) / 2`` and together they are below
``sigma / 2``, so every partial sum of them is a float64 and their sum is exact in any order
(numpy's pairwise sum included). Each level takes about ``53 - L`` bits off the remainders;
the levels repeat until they are all zero (three for typical updates). The levels' sums are
then combined in Python's arbitrary-precision ints and rounded to float64 once. The result
equals ``math.fsum`` of the squares, computed with a few vectorized float64 passes per level
instead of one Python float per element.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

#: Elements per chunk: two float64 buffers of 128 KiB (within any L2); the level's bound ``L`` grows
#: by one bit per doubling, so larger chunks gain little and leave the cache.
_CHUNK = 1 << 14
#: ``L``: ``2**L`` is at least twice the chunk's length.
_LEVEL = _CHUNK.bit_length() + 1


def sum_of_squares(arrays: Iterable[np.ndarray]) -> float:
    """``sum(x * x)`` over every element of the float32 ``arrays``, rounded once to float64.

    An infinite value gives ``inf``, a NaN gives ``nan`` (as ``math.fsum`` would).

    Raises
    ------
    ValueError
        If an array is not float32.
    """
    sums: list[float] = []  # each exact: the sum of one level's extracted parts
    special: float | None = None
    v = q = np.empty(0, dtype=np.float64)
    for arr in arrays:
        if arr.dtype != np.float32:
            raise ValueError(f"expected float32 values, got {arr.dtype}")
        flat = arr.reshape(-1)
        for lo in range(0, flat.size, _CHUNK):
            chunk = flat[lo : lo + _CHUNK]
            if v.size != chunk.size:
                v, q = np.empty(chunk.size, dtype=np.float64), np.empty(chunk.size, dtype=np.float64)
            np.multiply(chunk, chunk, out=v, dtype=np.float64)  # exact; zero or a normal float64
            top = float(v.max())
            if not math.isfinite(top):  # inf, or nan (max propagates it)
                special = top if special is None or math.isnan(top) else special
                continue
            while top > 0.0:
                sigma = math.ldexp(1.0, math.frexp(top)[1] + _LEVEL)  # top < sigma / 2**L
                np.add(v, sigma, out=q)
                np.subtract(q, sigma, out=q)  # exact (Sterbenz)
                sums.append(float(q.sum()))  # exact in any order
                np.subtract(v, q, out=v)  # exact remainders, |v| <= ulp(sigma) / 2
                top = max(float(v.max()), -float(v.min()))
    if special is not None:
        return special
    terms = [math.frexp(s) for s in sums if s != 0.0]
    if not terms:
        return 0.0
    ints = [(int(math.ldexp(m, 53)), e - 53) for m, e in terms]  # s == m * 2**e exactly
    lowest = min(e for _, e in ints)
    exact = sum(m << (e - lowest) for m, e in ints)
    if exact == 0:
        return 0.0
    # float(int) rounds once to nearest; scaling by a power of two is exact for normal results
    return math.ldexp(float(exact), lowest)


__all__ = ["sum_of_squares"]
