"""Execution plumbing of the robust rules: element plans, threads, and Krum's exact Gram matrix.

Nothing here changes a bit of a result with the thread count or the chunk size: every
element is computed by one thread through a fixed sequence of correctly rounded numpy
calls, and the only cross-element quantities (Krum's Gram matrix, the exponent range)
are integers or maxima/minima, whose combination is exact in any order.

The Gram matrix ``G[i, j] = sum_e x_i[e] * x_j[e]`` of K float32 vectors is computed
exactly (as Python ints scaled by a power of two), with float64 matrix products:

- Every finite float32 ``x`` in the round is an integer multiple of ``2**q`` and below
  ``2**E`` in magnitude, where ``2**q`` is the ulp of the smallest nonzero magnitude and
  ``2**E`` bounds the largest (both found exactly from the bits). So ``x / 2**q`` is an
  integer of ``R = E - q`` bits.
- Each value is split exactly into ``S = ceil(R / B)`` slices, ``x = sum_s x_s * 2**(E - (s+1)B)``,
  with integer ``|x_s| <= 2**B`` (round to nearest by ``rint`` of a power-of-two scaling, then
  subtract: every step exact, the remainder keeps at most 25 significant bits).
- Per chunk of ``C`` elements the slices of the K updates are stacked into an ``(S*K, C)``
  float64 matrix ``Y`` of integers and ``Y @ Y.T`` is taken by BLAS. Every product is an
  integer of at most ``2B`` bits and every partial sum of ``C`` of them is below
  ``C * 2**(2B) = 2**52 < 2**53``: every operation BLAS performs (in whatever order,
  blocking, thread count or with fused multiply-adds) is exact, so the result does not
  depend on BLAS at all. (This assumes a classical ``O(n**3)`` dgemm, as OpenBLAS, MKL,
  BLIS and Accelerate all use; a Strassen-like product would add inputs first.)
- The chunk products are added in int64 (exact: at most ``2**10`` chunks of ``2**52`` before a
  flush into Python ints), and the slices are recombined with shifts in Python ints.

Cost: ``S(S+1)/2`` times the flops of one float64 Gram matrix; ``S`` is 2 or 3 for typical
model deltas (a range of 40 to 60 bits) and at most 14 (the whole float32 range).
Only the blocks ``s <= t`` are multiplied (the others are their transposes): ``S(S+1)/2``
products of ``(K, C) @ (C, K)``.
Memory: ``S**2 * K**2`` int64 and Python ints, and ``2K + S*K`` float64 rows of ``C`` per thread
(``C = 4096``: 16 MiB for K=100, S=3).
"""

from __future__ import annotations

import contextvars
import math
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor, wait
from functools import partial
from typing import TypeVar

import numpy as np

from fedchain.errors import AggregationError
from fedchain.fl._aggregate import _plan as _aggregate_plan
from fedchain.fl._aggregate import default_threads

#: Bits per slice and elements per Gram chunk: 2 * 20 + 12 = 52 < 53, so every partial sum is exact.
_SLICE_BITS = 20
_GRAM_CHUNK = 1 << 12
#: Chunks of int64 accumulation before a flush into Python ints: 2**10 * 2**52 = 2**62 < 2**63.
_FLUSH_EVERY = 1 << 10

T = TypeVar("T")

#: Which elements each thread handles: ``(tensor index, start, stop)`` ranges of the flattened tensors.
Plan = list[list[tuple[int, int, int]]]
Spans = Sequence[tuple[int, int, int]]


#: FedAvg's split of the elements among threads (and its thread default, imported above): one plan.
make_plan = _aggregate_plan


def run_plan(plan: Plan, task: Callable[[Spans], T]) -> list[T]:
    """``task(spans)`` for each part of ``plan``: the first on the calling thread, the others in threads.

    The threads are started here, so they inherit the caller's floating-point environment, and
    each runs in a copy of the caller's context (numpy's ``errstate``).
    """
    if len(plan) == 1:
        return [task(plan[0])]
    with ThreadPoolExecutor(len(plan) - 1, thread_name_prefix="robust") as pool:
        return _run(pool, [partial(task, spans) for spans in plan])


def _run(pool: Executor, tasks: Sequence[Callable[[], T]]) -> list[T]:
    futures = [pool.submit(contextvars.copy_context().run, t) for t in tasks[1:]]
    try:
        first = tasks[0]()
    finally:
        wait(futures)  # never return while a thread still works on the caller's arrays
    return [first, *(f.result() for f in futures)]


# --------------------------------------------------------------------------- exact Gram matrix

_MAGNITUDE = np.uint32(0x7FFFFFFF)
_ONE = np.uint32(1)


def _magnitude_range(flats: Sequence[Sequence[np.ndarray]], spans: Spans) -> tuple[int, int]:
    """The largest magnitude's bits and (smallest nonzero magnitude's bits) - 1, over ``spans``."""
    top, bottom = 0, 0xFFFFFFFF
    for index, start, stop in spans:
        for lo in range(start, stop, 1 << 16):
            hi = min(lo + (1 << 16), stop)
            for update in flats:
                bits = np.bitwise_and(update[index][lo:hi].view(np.uint32), _MAGNITUDE)
                top = max(top, int(bits.max()))
                bits -= _ONE  # 0 wraps to 0xFFFFFFFF: the minimum is then the smallest nonzero's
                bottom = min(bottom, int(bits.min()))
    return top, bottom


def _gram_part(flats: Sequence[Sequence[np.ndarray]], top_e: int, slices: int, spans: Spans) -> np.ndarray:
    """The sliced Gram blocks ``Y_s @ Y_t.T`` (``s <= t``) over ``spans``: an ``(S, S, K, K)`` object array."""
    k = len(flats)
    rem = np.empty((k, _GRAM_CHUNK), dtype=np.float64)
    tmp = np.empty((k, _GRAM_CHUNK), dtype=np.float64)
    y = np.empty((slices, k, _GRAM_CHUNK), dtype=np.float64)
    acc = np.zeros((slices, slices, k, k), dtype=np.int64)
    total = np.zeros((slices, slices, k, k), dtype=object)
    pending = 0
    for index, start, stop in spans:
        for lo in range(start, stop, _GRAM_CHUNK):
            hi = min(lo + _GRAM_CHUNK, stop)
            n = hi - lo
            r, t = rem[:, :n], tmp[:, :n]
            for row, update in enumerate(flats):
                np.copyto(r[row], update[index][lo:hi])  # exact
            for s in range(slices):
                unit_e = top_e - (s + 1) * _SLICE_BITS
                ys = y[s, :, :n]
                np.multiply(r, math.ldexp(1.0, -unit_e), out=ys)  # exact: a power of two, no overflow
                if s < slices - 1:
                    np.rint(ys, out=ys)  # an integer of at most B bits (+1 for the first slice)
                    np.multiply(ys, math.ldexp(1.0, unit_e), out=t)  # exact
                    np.subtract(r, t, out=r)  # exact: the low bits of r
                # the last slice's unit is at most the round's ulp, so r / unit is already an integer
            for s in range(slices):
                for u in range(s, slices):  # Y_u @ Y_s.T is the transpose: computed once
                    acc[s, u] += (y[s, :, :n] @ y[u, :, :n].T).astype(np.int64)  # partial sums below 2**53
            pending += 1
            if pending == _FLUSH_EVERY:
                total += acc.astype(object)
                acc[...] = 0
                pending = 0
    total += acc.astype(object)
    return total


def exact_gram(flats: Sequence[Sequence[np.ndarray]], plan: Plan) -> tuple[np.ndarray, int]:
    """The exact Gram matrix of the updates: a ``(K, K)`` object array of Python ints ``G``, and ``e``.

    ``G[i, j] * 2**e`` is exactly ``sum_e x_i[e] * x_j[e]``.

    Parameters
    ----------
    flats:
        Per update, its flattened float32 tensors (the same sizes for every update).
    plan:
        The element ranges of each thread (:func:`make_plan`).

    Raises
    ------
    AggregationError
        If a value is not finite.
    """
    k = len(flats)
    ranges = run_plan(plan, partial(_magnitude_range, flats))
    top = max(t for t, _ in ranges)
    bottom = min(b for _, b in ranges)
    if top >= 0x7F800000:
        raise AggregationError("an update holds a non-finite value (updates must be screened first)")
    if top == 0:  # every update is zero
        return np.zeros((k, k), dtype=np.int64).astype(object), 0
    # |x| < 2**(field - 126); the ulp of a float32 of exponent field f is 2**(max(f, 1) - 150)
    top_e = (top >> 23) - 126
    ulp_e = max((bottom + 1) >> 23, 1) - 150
    slices = max(1, -(-(top_e - ulp_e) // _SLICE_BITS))
    parts = run_plan(plan, partial(_gram_part, flats, top_e, slices))
    blocks = parts[0]
    for part in parts[1:]:
        blocks = blocks + part  # Python ints: exact in any order
    # G = sum_{s,t} Y_s Y_t^T * 2**(2*top_e - (s+t+2)B), in units of 2**(2*top_e - 2*S*B)
    gram = np.zeros((k, k), dtype=np.int64).astype(object)
    for s in range(slices):
        for u in range(s, slices):
            block = blocks[s, u] if s == u else blocks[s, u] + blocks[s, u].T
            gram = gram + block * (1 << ((2 * slices - 2 - s - u) * _SLICE_BITS))
    return gram, 2 * top_e - 2 * slices * _SLICE_BITS


__all__ = ["Plan", "Spans", "default_threads", "exact_gram", "make_plan", "run_plan"]
