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

That extraction is the fallback. :func:`sum_of_squares` first computes the same float by a
certified split that costs about a third of it (per block of values: the widening copy, two
passes rounding to a grid, one for the remainders, and four dot products; where the install
built them, the compiled loop of :mod:`fedchain.fl._kernels` does a block in two passes over
it, about twice as fast) and falls back only when the split cannot decide the rounding.

**The certified split.** Take a block of ``n <= 2**16`` float32 values, as float64 ``v_i``
(exact), ``s = sum v_i**2`` the real sum, and ``u = 2**-53``. A float64 sum of ``m``
non-negative exact terms, in any order, with or without fused multiply-adds, is within
``gamma_(m-1) * s`` of ``s`` (``gamma_k = k*u / (1 - k*u)``; Higham, "Accuracy and Stability
of Numerical Algorithms", 2002, section 4.2), and every product of two float32 values is exact
in float64.

1. ``S' = fl(sum v_i**2)`` (a dot product; only a scale). It is ``nan`` if some value is NaN,
   else ``inf`` if some value is infinite (a finite float32 squares to at most ``2**256``),
   else ``0`` only if every value is 0 (a non-zero square is a normal float64, and a rounded
   sum of non-negative terms is at least its largest term). Those cases are decided here.
2. With ``S' < 2**e`` take the grid ``g = 2**(ceil(e/2) - 21)``, so ``S' < 2**42 * g**2``,
   and split every value: ``h_i = fl(fl(v_i + c) - c)`` with ``c = 1.5 * 2**52 * g`` and
   ``r_i = fl(v_i - h_i)``. Since ``|v_i| <= sqrt(s) < 2**22 * g``, ``v_i + c`` lies in
   ``(2**52 g, 2**53 g)`` where float64 spacing is ``g``: ``h_i`` is ``v_i`` rounded to a
   nearest multiple of ``g`` and both subtractions are exact. So ``|r_i| <= g / 2``, ``h_i = k_i g``
   with ``|k_i| < 2**22``, and ``h_i != 0`` only if ``|v_i| >= g / 2``, in which case ``v_i``
   (a float32 of at least that magnitude) and ``h_i`` are multiples of ``2**-24 * g``, so is ``r_i``,
   and ``|r_i| / (2**-24 g) <= 2**23``. Then ``s = A + 2B + T`` exactly, with
   ``A = sum h_i**2``, ``B = sum h_i r_i``, ``T = sum r_i**2``.
3. ``A`` is computed as ``A'`` and the block is accepted only if ``A' <= 2**43 * g**2``
   (it always is: ``A`` is within a hair of ``s``). Then ``A <= A' / (1 - gamma) < 2**43.01 g**2``;
   every term ``k_i**2 g**2`` is exact, and every partial sum, in any order, is a multiple of
   ``g**2`` not above ``A < 2**53 g**2``: representable, so every addition was exact and ``A' = A``.
4. ``B``: every term ``h_i r_i`` is an exact multiple of ``2**-24 g**2`` (``|k_i| * 2**23 < 2**45``
   units), and every partial sum is at most ``sum |h_i r_i| <= sqrt(A T)`` (Cauchy-Schwarz) ``<=
   sqrt(2**43.01 * n/4) g**2 < 2**29 g**2 = 2**53`` units: representable, so ``B`` is exact.
5. ``T`` is computed as ``T'`` with ``|T' - T| <= gamma_(n-1) T <= gamma / (1 - gamma) T' <= n * 2**-52 * T'``.

So ``s`` lies in ``[A + 2B + T' - E, A + 2B + T' + E]`` with ``E = n * 2**-52 * T'``; the
blocks' bounds add up exactly in Python ints. Rounding to nearest is monotone: if both ends of
the interval round to the same float64, that is ``fl(s)``. Otherwise the interval holds a
rounding boundary and the extraction computes the sum: for a dense update ``T`` is about
``2**-29 s``, so ``E`` is about ``2**-65 s`` and that happens about once in a few thousand sums;
for a handful of values whose exact sum lies on a midpoint between two float64 numbers it
happens every time (any ``E > 0`` straddles it). The result is the same float either way, on
every machine, and the NaN and infinity rules are the extraction's.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable

import numpy as np

from fedchain.fl._kernels import Kernels, address, kernels

logger = logging.getLogger(__name__)

#: Elements per chunk: two float64 buffers of 128 KiB (within any L2); the level's bound ``L`` grows
#: by one bit per doubling, so larger chunks gain little and leave the cache.
_CHUNK = 1 << 14
#: ``L``: ``2**L`` is at least twice the chunk's length.
_LEVEL = _CHUNK.bit_length() + 1


def extracted_sum_of_squares(arrays: Iterable[np.ndarray]) -> float:
    """``sum(x * x)`` over every element of the float32 ``arrays``, rounded once, by error-free extraction alone.

    The fallback of :func:`sum_of_squares` (same result, several times its time).

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


#: Values per block of the certified split (``n`` in the module docstring: at most ``2**16``).
_BLOCK = 1 << 16
#: Values per dot product: below OpenBLAS's threshold for splitting a dot among threads (10000),
#: so no dot product wakes threads.
_ROW = 1 << 13
_vecdot = getattr(np, "vecdot", None)  # numpy >= 2.0


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    """``sum(a * b)`` of 2-D float64 blocks: a dot product per row, in whatever order numpy and BLAS choose, then
    the rows' in order (one summation tree, as the module docstring's bounds allow)."""
    rows = _vecdot(a, b) if _vecdot is not None else np.einsum("ij,ij->i", a, b)
    return float(sum(rows.tolist()))


def _exact_int(x: float) -> tuple[int, int]:
    """``(m, e)`` with ``x == m * 2**e`` exactly."""
    mantissa, exponent = math.frexp(x)
    return int(math.ldexp(mantissa, 53)), exponent - 53


def _rounded(terms: list[tuple[int, int]]) -> tuple[int, int]:
    """The exact sum of ``m * 2**e`` over ``terms``, as ``(integer, exponent)``."""
    if not terms:
        return 0, 0
    lowest = min(e for _, e in terms)
    return sum(m << (e - lowest) for m, e in terms), lowest


def _to_float(value: int, exponent: int) -> float:
    """``value * 2**exponent`` rounded once to float64 (its result is a normal number or zero)."""
    if value == 0:
        return 0.0
    return math.ldexp(float(value), exponent)  # float(int) rounds to nearest; the scaling is exact


def sum_of_squares(arrays: Iterable[np.ndarray]) -> float:
    """``sum(x * x)`` over every element of the float32 ``arrays``, rounded once to float64.

    The certified split of the module docstring, falling back to
    :func:`extracted_sum_of_squares` when it cannot decide the rounding: the same float either way.
    An infinite value gives ``inf``, a NaN gives ``nan`` (as ``math.fsum`` would).

    Raises
    ------
    ValueError
        If an array is not float32.
    """
    arrays = list(arrays)
    for arr in arrays:
        if arr.dtype != np.float32:
            raise ValueError(f"expected float32 values, got {arr.dtype}")
    total = sum(int(a.size) for a in arrays)
    if total == 0:
        return 0.0
    exact: list[tuple[int, int]] = []  # A + 2B of every block
    approx: list[tuple[int, int]] = []  # T' of every block
    compiled = kernels()
    try:
        if compiled is not None:
            special = _split_compiled(compiled, arrays, exact, approx)
        else:
            special = _split_numpy(arrays, total, exact, approx)
    except _Undecided:
        return extracted_sum_of_squares(arrays)
    if special is not None:
        return special
    value, low = _rounded(exact + approx)
    slack, slack_low = _rounded(approx)  # E = n * 2**-52 * T', n <= _BLOCK
    shift = slack_low - 52 + (_BLOCK.bit_length() - 1) - low
    if shift < 0:
        value, low, shift = value << -shift, low + shift, 0
    slack <<= shift
    lower, upper = _to_float(value - slack, low), _to_float(value + slack, low)
    if lower == upper:
        return lower
    logger.debug("sum of squares: the certified split left the rounding open; extracting")
    return extracted_sum_of_squares(arrays)


def _grid(estimate: float) -> float:
    """The grid ``g`` of a block whose estimate ``S'`` is finite and positive (step 2 of the module docstring)."""
    e = math.frexp(estimate)[1]
    return math.ldexp(1.0, -((-e) // 2) - 21)


def _record(
    g: float, a: float, b: float, t: float, exact: list[tuple[int, int]], approx: list[tuple[int, int]]
) -> None:
    """Check a block's ``A'`` (step 3) and append its exact ``A + 2B`` to ``exact`` and ``T'`` to ``approx``."""
    if not a <= math.ldexp(g * g, 43):
        raise _Undecided
    for x in (a, 2.0 * b):
        if x != 0.0:
            exact.append(_exact_int(x))
    if t != 0.0:
        approx.append(_exact_int(t))


def _special(previous: float | None, estimate: float) -> float:
    """The result once a block's estimate is ``inf`` or ``nan``: ``nan`` wins."""
    return estimate if previous is None or math.isnan(estimate) else previous


def _split_numpy(
    arrays: list[np.ndarray], total: int, exact: list[tuple[int, int]], approx: list[tuple[int, int]]
) -> float | None:
    """The certified split with numpy calls, blocks taken across the arrays: each block's ``A + 2B`` appended to
    ``exact`` and its ``T'`` to ``approx``; returns ``inf`` or ``nan`` if a block's estimate was one."""
    block = min(_BLOCK, -(-total // _ROW) * _ROW)
    v = np.empty(block, dtype=np.float64)
    h = np.empty(block, dtype=np.float64)
    special: float | None = None

    def split(filled: int) -> None:
        nonlocal special
        rows = -(-filled // _ROW)
        v[filled : rows * _ROW] = 0.0  # zeros add nothing to A, B or T
        vv, hh = v[: rows * _ROW].reshape(rows, _ROW), h[: rows * _ROW].reshape(rows, _ROW)
        estimate = _dot(vv, vv)
        if not math.isfinite(estimate):  # inf, or nan
            special = _special(special, estimate)
            return
        if estimate == 0.0:
            return
        g = _grid(estimate)
        c = 1.5 * math.ldexp(g, 52)
        np.add(vv, c, out=hh)
        np.subtract(hh, c, out=hh)  # h: v rounded to a multiple of g
        np.subtract(vv, hh, out=vv)  # r = v - h, exact
        _record(g, _dot(hh, hh), _dot(hh, vv), _dot(vv, vv), exact, approx)

    filled = 0
    for arr in arrays:
        flat = arr.reshape(-1)
        lo = 0
        while lo < flat.size:
            take = min(block - filled, flat.size - lo)
            v[filled : filled + take] = flat[lo : lo + take]  # exact widening
            filled += take
            lo += take
            if filled == block:
                split(filled)
                filled = 0
    if filled:
        split(filled)
    return special


def _split_compiled(
    compiled: Kernels, arrays: list[np.ndarray], exact: list[tuple[int, int]], approx: list[tuple[int, int]]
) -> float | None:
    """:func:`_split_numpy` with the compiled block loop (:mod:`fedchain.fl._kernels`), blocks taken within each
    array (any partition into blocks of at most ``2**16`` values gives the same exact sum), all of an array's
    blocks in one call."""
    special: float | None = None
    for arr in arrays:
        flat = np.require(arr.reshape(-1), requirements=["C", "A"])  # whole elements at their addresses
        blocks = -(-flat.size // _BLOCK)
        if blocks == 0:
            continue
        out = np.zeros((blocks, 5), dtype=np.float64)
        compiled.blocks_sums(address(flat), flat.size, _BLOCK, address(out))
        del flat  # kept alive until the loop has read it
        for estimate, g, a, b, t in out.tolist():
            if not math.isfinite(estimate):
                special = _special(special, estimate)
            elif estimate != 0.0:
                if g != _grid(estimate):  # the loop's grid is the docstring's, computed the same way
                    raise _Undecided
                _record(g, a, b, t, exact, approx)
    return special


class _Undecided(Exception):
    """The certified split's grid check failed (never expected): the extraction decides."""


__all__ = ["extracted_sum_of_squares", "sum_of_squares"]
