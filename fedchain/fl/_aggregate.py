"""FedAvg as a pure function with fixed arithmetic, so an auditor recomputes it bit for bit.

The exact computation, per tensor and per element (``fl64``/``fl32``: round to nearest
even in IEEE binary64/binary32)::

    n      = total_samples                       (sum of the included n_k, from the ledger)
    acc    = fl64(theta)                         (exact: every float32 is a float64)
    for k in updates, in ascending order of participant.lower():
        c_k  = fl64(fl64(eta * n_k) / n)          (Python float arithmetic)
        acc  = fl64(acc + fl64(fl64(delta_k) * c_k))
    theta' = fl32(acc)

i.e. ``theta' = theta + eta * sum_k (n_k / n) * delta_k``. For addresses (``0x`` + 40 hex
digits) the order is the addresses' numeric order, the order in which
:class:`~fedchain.records.RoundHistory` lists updates. With no updates the result is
``theta`` itself. Which NaN a NaN element is (its sign and payload) is not specified:
IEEE 754 leaves open which operand's NaN an operation returns, numpy's loops differ there,
and a NaN aggregate is not finite, so the codec never encodes it.

How it is executed changes no bit of the result:

- Every step is elementwise: one numpy call over a range of elements (an exact cast of the
  float32 delta into a float64 chunk, ``multiply`` of that chunk by ``np.float64(c_k)``, and
  ``add`` into the accumulator, which starts as theta cast exactly to float64 and ends cast
  to float32, rounding to nearest even), each correctly rounded; never a fused multiply-add,
  never BLAS, never a reduction, neither over participants nor over elements. Where the
  install built them, the compiled loops of :mod:`fedchain.fl._kernels` do the very same
  operations per element in one pass over each chunk (several times faster; the same bits,
  tested against these numpy calls). An element's
  result depends only on that element of ``theta`` and of each ``delta_k`` and on the
  ``c_k``, taken in participant order, so neither the SIMD width nor the chunk size can
  change it. (The casts are explicit: numpy's mixed-type loops, which cast float32 operands
  through their own buffers, make the same exact casts more slowly.)
- The elements are processed in chunks, which a few threads (default :func:`default_threads`)
  take one at a time as each becomes free (so a thread that the machine starves holds up
  nobody). In memory a chunk goes through the whole sequence of steps above on the thread
  that took it; streamed, each update is one pass over the chunks, and the next pass starts
  once every thread has finished this one, so each element still goes through the steps in
  order, and the thread count cannot change a bit. The threads are started by each call, so
  they inherit the caller's floating-point environment (rounding mode, flush-to-zero) as the
  calling thread's own arithmetic would, and each runs in a copy of the caller's context
  (numpy's ``errstate``).
- An in-memory sequence of updates is summed a chunk at a time: all the updates into one
  float64 chunk, which is then rounded into the result, so no float64 copy of the model
  is made. An iterator is consumed one update at a time, holding no update while the next
  one is produced. Its memory is the float64 accumulator (twice the model's size), a
  float64 chunk per thread (together at most the model's size) and, at the end, one
  tensor's float32 result beside the accumulator: at most three times the model's size.
- Costs, per element and update: the cast reads the float32 delta from memory (the one pass
  that must), and the multiply and the add work on chunks sized to stay in the core's L2
  (:func:`_chunk_for`); streamed, the add also reads and writes the float64 accumulator (with the
  compiled loops in one pass and no scratch, in larger chunks: :data:`_STREAM_CHUNK_COMPILED`).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import math
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor, wait
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from fedchain.errors import AggregationError
from fedchain.fl._kernels import Kernels, address, check_float_status, clear_float_status, for_arithmetic

logger = logging.getLogger(__name__)

#: One update as aggregation consumes it: (participant, n_k, delta arrays, float32 numpy).
UpdateItem = tuple[str, int, Mapping[str, np.ndarray]]

#: The L2 cache assumed where sysfs does not tell (1 MiB per core: common to recent x86 and arm64 servers).
_DEFAULT_L2 = 1 << 20
#: Chunk sizes are kept within these bounds (elements), whatever the cache says.
_MIN_CHUNK, _MAX_CHUNK = 1 << 12, 1 << 18


def _l2_per_core() -> int:
    """Bytes of L2 (or the unified level-2 cache) one core of CPU 0 has to itself, from sysfs."""
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        entries = sorted(e for e in os.listdir(base) if e.startswith("index"))
        for entry in entries:
            with open(f"{base}/{entry}/level") as f:
                level = f.read().strip()
            with open(f"{base}/{entry}/type") as f:
                kind = f.read().strip()
            if level != "2" or kind == "Instruction":
                continue
            with open(f"{base}/{entry}/size") as f:
                text = f.read().strip()
            size = int(text.rstrip("KMG")) * {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
            with open(f"{base}/{entry}/shared_cpu_list") as f:
                shared = _count_cpus(f.read().strip())
            return max(1, size // max(1, shared))
    except (OSError, ValueError):
        pass
    return _DEFAULT_L2


def _count_cpus(cpu_list: str) -> int:
    """How many CPUs a sysfs list such as ``0-3,8`` names."""
    count = 0
    for part in cpu_list.split(","):
        lo, _, hi = part.partition("-")
        count += int(hi or lo) - int(lo) + 1
    return count


def _chunk_for(l2: int) -> int:
    """Elements per chunk for an L2 of ``l2`` bytes: a power of two whose float64 chunks fit in a quarter of it.

    A chunk's float64 accumulator and product (16 bytes per element) then stay in the core's
    L2 beside the float32 operands streamed through it (and the lines the prefetcher brings
    ahead of them). Measured on a 2-core Xeon (2 MiB of L2 each; P=1M, K=10 and K=100, CPU
    time of interleaved runs): chunks twice this size (a float64 pair in half the L2) took
    1.07-1.11x this size's time in memory and 1.03-1.04x streamed, four times this size
    1.07-1.2x, half this size 1.03-1.15x; much smaller chunks pay numpy's per-call cost
    (and the GIL) too often.
    """
    return max(_MIN_CHUNK, min(_MAX_CHUNK, 1 << max(0, (l2 // 64).bit_length() - 1)))


#: Elements per chunk, in memory and streamed, from this machine's L2 (2**15 for 2 MiB, 2**14 for 1 MiB).
#: Streamed, only the product is a chunk (the accumulator is the model's); the same size keeps it
#: in L2 and keeps the threads' chunks together far below the model's size (512 KiB for 2 threads).
_CHUNK = _chunk_for(_l2_per_core())
_STREAM_CHUNK = _CHUNK
#: Elements per chunk streamed with the compiled loops. Their add is one pass that reads the update and
#: reads and writes the model-sized accumulator, with no scratch to keep in a cache, so the chunk only
#: sets how often a thread takes a chunk and calls into C (a lock and a ctypes call, several
#: microseconds): 2**17 elements move 2.5 MB, a quarter of a millisecond even at 10 GB/s. Measured on a
#: 2-core EPYC (512 KiB of L2, P=1M, one run of 7 interleaved repeats each): 2**13 (the L2's chunk)
#: 0.41 of the float32 floor at K=100, 2**15 0.54, 2**16 to 2**18 0.71-0.74.
_STREAM_CHUNK_COMPILED = 1 << 17
#: Fewest elements worth a thread of their own (starting one costs about 0.1 ms).
_MIN_PER_THREAD = 1 << 16
#: More threads gain little: the work is mostly bound by memory bandwidth.
_MAX_THREADS = 4

#: Which elements each thread handles: ``(tensor index, start, stop)`` ranges of the flattened tensors.
_Plan = list[list[tuple[int, int, int]]]


def participant_order(participant: str) -> str:
    """The sort key of a participant: its lower-cased name (numeric order for addresses)."""
    return participant.lower()


def _others_running(loadavg: str | None = None) -> int:
    """How many tasks besides the caller are running or waiting for a CPU right now (Linux), 0 if unknown.

    ``loadavg`` is the text of ``/proc/loadavg`` (read if not given), e.g. ``0.52 0.58 0.59 3/1005 4321``:
    3 tasks runnable, the caller reading it among them.
    """
    try:
        if loadavg is None:
            with open("/proc/loadavg") as f:
                loadavg = f.read()
        running = int(loadavg.split()[3].partition("/")[0])
    except (OSError, ValueError, IndexError):
        return 0
    return max(0, running - 1)


def default_threads() -> int:
    """The threads :func:`fedavg_stream` uses by default: the usable CPUs that nothing else keeps busy, 1 to 4.

    A thread on a CPU that another task keeps busy only time-shares it, and loses more than
    it gains: the threads take turns at Python's GIL between numpy calls, and one descheduled
    while holding it stalls the others. Measured on a 2-core Xeon (P=1M, K=10 and K=100) with
    another process running, 2 threads took 1.05-1.25x the time of 1 thread. The system's
    runnable tasks are assumed spread evenly over its CPUs (a process confined to some of them
    counts its share).
    """
    online = os.cpu_count() or 1
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = online
    return _free_cpus(cpus, online, _others_running())


def _free_cpus(cpus: int, online: int, others: int) -> int:
    """Threads for ``cpus`` usable CPUs of ``online`` when ``others`` tasks are runnable: 1 to 4."""
    busy = -(-others * cpus // max(online, cpus))  # their share of the usable CPUs, rounded up
    return max(1, min(_MAX_THREADS, cpus - busy))


def _as_float32(name: str, value: object, participant: str | None) -> np.ndarray:
    who = f"update from {participant}: " if participant is not None else "base model: "
    if not isinstance(value, np.ndarray):
        kind = f"{type(value).__module__}.{type(value).__name__}"
        raise AggregationError(f"{who}tensor {name!r} is a {kind}: expected a numpy float32 array")
    if value.dtype != np.float32:
        raise AggregationError(f"{who}tensor {name!r} has dtype {value.dtype}: expected a numpy float32 array")
    return value


def _ordered(updates: Iterable[UpdateItem]) -> Iterator[UpdateItem]:
    """Yield updates in ascending participant order.

    A sequence (already in memory) is sorted here; a one-shot iterator is streamed and
    must already be in order, since sorting it would hold every update at once.
    """
    if isinstance(updates, Sequence):
        items: Iterable[UpdateItem] = sorted(updates, key=lambda u: participant_order(u[0]))
    else:
        items = updates
    previous: str | None = None
    for item in items:
        participant = item[0]
        if not isinstance(participant, str) or not participant:
            raise AggregationError(f"participant must be a non-empty string, got {participant!r}")
        key = participant_order(participant)
        if previous is not None and key <= previous:
            problem = "appears twice" if key == previous else "is out of order (a stream must be sorted by participant)"
            raise AggregationError(f"update from {participant} {problem}")
        previous = key
        yield item
        del item  # hold no update while the next one is produced


def _checked(
    participant: str,
    n_k: object,
    delta: Mapping[str, np.ndarray],
    names: list[str],
    shapes: list[tuple[int, ...]],
    total_samples: int,
    eta: float,
) -> tuple[np.float64, list[np.ndarray]]:
    """``c_k`` and the update's tensors, flattened in name order, once every check has passed."""
    if not isinstance(n_k, int) or isinstance(n_k, bool) or n_k < 1:
        raise AggregationError(f"update from {participant}: sample count must be a positive int, got {n_k!r}")
    if set(delta) != set(names):
        raise AggregationError(f"update from {participant} has tensors {sorted(delta)}, the model has {names}")
    if total_samples == 0:
        raise AggregationError("total_samples is 0 but there are updates")
    flats = []
    for name, shape in zip(names, shapes, strict=True):
        d = _as_float32(name, delta[name], participant)
        if d.shape != shape:
            raise AggregationError(f"update from {participant}: tensor {name!r} has shape {d.shape}, expected {shape}")
        flats.append(d.reshape(-1))  # a view, unless the tensor is not contiguous
    # np.float64, not a Python float: with a float32 operand NEP 50 would compute in float32
    return np.float64((eta * float(n_k)) / float(total_samples)), flats


def _plan(sizes: Sequence[int], threads: int) -> _Plan:
    """Split the concatenated elements of tensors of ``sizes`` into contiguous, nearly equal parts.

    The robust rules' fixed split among threads (:mod:`fedchain.fl._robust_exec`); FedAvg itself
    hands its chunks out to whichever thread is free (:class:`_Chunks`), with as many threads.
    """
    total = sum(sizes)
    parts = _threads_for(total, threads)
    # part j covers the concatenated elements [bounds[j], bounds[j + 1]), cut at multiples of
    # 16 elements (64 bytes of float32) so that no two threads write to the same cache line
    bounds = [0, *(total * j // parts // 16 * 16 for j in range(1, parts)), total]
    plan: _Plan = [[] for _ in range(parts)]
    offset = 0
    for index, size in enumerate(sizes):
        for j in range(parts):
            start, stop = max(bounds[j], offset), min(bounds[j + 1], offset + size)
            if start < stop:
                plan[j].append((index, start - offset, stop - offset))
        offset += size
    return plan


class _Chunks:
    """The chunks of one pass over the model, handed out one at a time to whichever thread asks first.

    Handing them out as the threads ask, rather than splitting the model in fixed shares, keeps
    a thread that a busy machine starves (or starts late) from holding up the others.
    """

    def __init__(self, chunks: Sequence[tuple[int, int, int]]) -> None:
        self._chunks = iter(chunks)
        self._lock = threading.Lock()

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        return self

    def __next__(self) -> tuple[int, int, int]:
        with self._lock:
            return next(self._chunks)


def _chunked(sizes: Sequence[int], chunk: int) -> list[tuple[int, int, int]]:
    """The ``(tensor index, start, stop)`` chunks of at most ``chunk`` elements covering tensors of ``sizes``."""
    return [(index, lo, min(lo + chunk, size)) for index, size in enumerate(sizes) for lo in range(0, size, chunk)]


def _threads_for(total: int, threads: int) -> int:
    """How many threads share ``total`` elements: at most ``threads``, each with ``_MIN_PER_THREAD`` at least."""
    return max(1, min(threads, total // _MIN_PER_THREAD))


def _chunk_size(total: int, parts: int, chunk: int) -> int:
    """``chunk``, or less for a small model: the float64 chunks of ``parts`` threads, two each, fit in 2 models.

    Two chunks per thread of at most ``total / (2 * parts)`` elements are ``total`` float64
    elements in all (twice the float32 model), and every thread has at least two chunks to take.
    """
    return max(1, min(chunk, -(-total // (2 * parts))))


def _run(pool: Executor | None, tasks: Sequence[Callable[[], None]]) -> None:
    """Run ``tasks``: the first on the calling thread, the others on ``pool`` at the same time."""
    # each in a copy of the caller's context, so that numpy's errstate applies in every thread
    futures = [pool.submit(contextvars.copy_context().run, task) for task in tasks[1:]] if pool is not None else []
    try:
        for task in tasks if pool is None else tasks[:1]:
            task()
    finally:
        wait(futures)  # never return while a thread still works on the caller's arrays
    for future in futures:
        future.result()


def _cast(
    sources: Sequence[np.ndarray],
    targets: Sequence[np.ndarray] | Mapping[int, np.ndarray],
    chunks: Iterable[tuple[int, int, int]],
) -> None:
    """``targets[i][start:stop] = sources[i][start:stop]``: a cast, exact or rounding to nearest even."""
    for index, start, stop in chunks:
        np.copyto(targets[index][start:stop], sources[index][start:stop])


def _add_scaled(
    acc: Sequence[np.ndarray],
    current: list[tuple[np.float64, list[np.ndarray], _Chunks]],
    tmp: np.ndarray,
    thetas: Sequence[np.ndarray] | None,
) -> None:
    """``acc = fl64(acc + fl64(fl64(delta) * c_k))`` over the chunks it takes, for the update in ``current``.

    With ``thetas``, each chunk of the accumulator is first set to ``fl64(theta)`` (exact), so
    the add finds it in cache.
    """
    c_k, flats, chunks = current[0]
    for index, lo, hi in chunks:
        a, t = acc[index][lo:hi], tmp[: hi - lo]
        if thetas is not None:
            np.copyto(a, thetas[index][lo:hi])  # exact
        np.copyto(t, flats[index][lo:hi])  # fl64(delta): exact
        np.multiply(t, c_k, out=t)  # fl64(fl64(delta) * c_k)
        np.add(a, t, out=a)


def _sum_chunks(
    thetas: Sequence[np.ndarray],
    updates: Sequence[tuple[np.float64, list[np.ndarray]]],
    outs: Sequence[np.ndarray],
    chunks: _Chunks,
    chunk: int,
) -> None:
    """The whole formula over the chunks it takes: every update into one float64 chunk, then rounded out."""
    acc, tmp = np.empty(chunk, dtype=np.float64), np.empty(chunk, dtype=np.float64)
    for index, lo, hi in chunks:
        a, t = acc[: hi - lo], tmp[: hi - lo]
        np.copyto(a, thetas[index][lo:hi])  # fl64(theta): exact
        for c_k, flats in updates:
            # explicit casts into float64 chunks: numpy's mixed-type loops (float32 operands cast
            # through its buffers) do the same exact casts, more slowly
            np.copyto(t, flats[index][lo:hi])  # fl64(delta): exact
            np.multiply(t, c_k, out=t)  # fl64(fl64(delta) * c_k)
            np.add(a, t, out=a)
        np.copyto(outs[index][lo:hi], a)  # fl32: nearest even


def _flat_addresses(arrays: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[int]]:
    """C-contiguous, aligned versions of 1-D float arrays (themselves when they are: the compiled loops read
    whole elements at their addresses) and those addresses."""
    flats = [np.require(a, requirements=["C", "A"]) for a in arrays]
    return flats, [address(a) for a in flats]


def _sum_chunks_compiled(
    compiled: Kernels,
    thetas: Sequence[int],
    deltas: Sequence[int],
    coeffs: int,
    k: int,
    outs: Sequence[int],
    chunks: _Chunks,
) -> None:
    """:func:`_sum_chunks` with the compiled loop: the same operations per element, in one pass over each chunk.

    Everything is an address: ``thetas`` and ``outs`` the tensors', ``deltas[i]`` that of an int64
    array of the addresses of tensor ``i`` of the ``k`` updates, in participant order, and
    ``coeffs`` that of their ``c_k`` (float64).
    """
    clear_float_status()
    for index, lo, hi in chunks:
        compiled.fedavg_chunk(thetas[index], deltas[index], coeffs, k, outs[index], lo, hi)
    check_float_status("fedavg")


def _add_scaled_compiled(
    compiled: Kernels,
    acc: Sequence[int],
    current: list[tuple[np.float64, Any, _Chunks]],
    thetas: Sequence[int] | None,
) -> None:
    """:func:`_add_scaled` with the compiled loop, on the arrays' addresses."""
    c_k, flats, chunks = current[0]
    clear_float_status()
    for index, lo, hi in chunks:
        compiled.add_scaled(acc[index], flats[index], float(c_k), lo, hi, thetas[index] if thetas is not None else None)
    check_float_status("fedavg")


def _cast_compiled(
    loop: Callable[[int, int, int, int], None],
    sources: Sequence[int],
    targets: Mapping[int, int],
    chunks: Iterable[tuple[int, int, int]],
) -> None:
    """:func:`_cast` with a compiled loop (``widen``: float32 to float64, ``narrow``: back), on addresses."""
    clear_float_status()
    for index, start, stop in chunks:
        loop(sources[index], targets[index], start, stop)
    check_float_status("cast")


def _checked_all(
    updates: Sequence[UpdateItem], names: list[str], shapes: list[tuple[int, ...]], total_samples: int, eta: float
) -> list[tuple[np.float64, list[np.ndarray]]]:
    """Every update's ``c_k`` and flattened tensors, in participant order, once every check has passed."""
    checked = []
    seen = 0
    for participant, n_k, delta in _ordered(updates):
        checked.append(_checked(participant, n_k, delta, names, shapes, total_samples, eta))
        seen += n_k
    if seen != total_samples:
        raise AggregationError(f"updates declare {seen} samples in all, the ledger says {total_samples}")
    return checked


@dataclass(frozen=True)
class _Operands:
    """What the compiled FedAvg loops read, as addresses, and the arrays behind them (alive while this is)."""

    thetas: list[int]
    """Each tensor of the base."""
    deltas: list[int]
    """For each tensor, an int64 array of the addresses of that tensor of the ``k`` updates, in participant order."""
    coeffs: int
    """The updates' ``c_k`` (float64), in the same order."""
    k: int
    kept: tuple[object, ...]

    @classmethod
    def of(cls, thetas: Sequence[np.ndarray], checked: Sequence[tuple[np.float64, list[np.ndarray]]]) -> _Operands:
        theta_arrays, theta_addresses = _flat_addresses(thetas)
        updates = [_flat_addresses(flats) for _, flats in checked]
        deltas = [np.array([a[i] for _, a in updates], dtype=np.int64) for i in range(len(thetas))]
        coeffs = np.array([c_k for c_k, _ in checked], dtype=np.float64)
        return cls(
            theta_addresses,
            [address(d) for d in deltas],
            address(coeffs),
            len(checked),
            (theta_arrays, updates, deltas, coeffs),
        )


def _in_memory(
    pool: Executor | None,
    parts: int,
    thetas: list[np.ndarray],
    shapes: list[tuple[int, ...]],
    updates: Sequence[UpdateItem],
    names: list[str],
    total_samples: int,
    eta: float,
) -> list[np.ndarray]:
    """Check every update, then add them all into one chunk after another (no float64 model)."""
    checked = _checked_all(updates, names, shapes, total_samples, eta)
    outs = [np.empty(shape, dtype=np.float32) for shape in shapes]
    flat_outs = [out.reshape(-1) for out in outs]
    sizes = [theta.size for theta in thetas]
    chunk = _chunk_size(sum(sizes), parts, _CHUNK)
    chunks = _Chunks(_chunked(sizes, chunk))
    compiled = for_arithmetic()
    if compiled is None:
        _run(pool, [partial(_sum_chunks, thetas, checked, flat_outs, chunks, chunk) for _ in range(parts)])
    else:
        operands = _Operands.of(thetas, checked)
        task = partial(
            _sum_chunks_compiled,
            compiled,
            operands.thetas,
            operands.deltas,
            operands.coeffs,
            operands.k,
            [address(out) for out in flat_outs],
            chunks,
        )
        _run(pool, [task] * parts)
        del operands  # alive until the loops are done
    logger.debug("aggregated %d updates held in memory", len(checked))
    return outs


def _streamed(
    pool: Executor | None,
    parts: int,
    thetas: list[np.ndarray],
    shapes: list[tuple[int, ...]],
    updates: Iterable[UpdateItem],
    names: list[str],
    total_samples: int,
    eta: float,
    *,
    release_base: bool = False,
) -> list[np.ndarray]:
    """Add the updates into a float64 accumulator one at a time, holding none while the next is produced.

    With ``release_base`` the accumulator is set to theta before the first update is asked for
    and ``thetas`` is emptied, so the base (if nobody else holds it) is freed before any update
    is in memory.
    """
    sizes = [theta.size for theta in thetas]
    compiled = for_arithmetic()
    chunk = _chunk_size(sum(sizes), parts, _STREAM_CHUNK if compiled is None else _STREAM_CHUNK_COMPILED)
    chunks = _chunked(sizes, chunk)
    acc = [np.empty(size, dtype=np.float64) for size in sizes]
    acc_at = [address(a) for a in acc]
    if compiled is not None:  # the compiled loops read contiguous copies of strided tensors, by address
        thetas[:], theta_at = _flat_addresses(thetas)

    def to_acc() -> None:  # acc = fl64(theta), exact
        if compiled is None:
            _run(pool, [partial(_cast, thetas, acc, _Chunks(chunks)) for _ in range(parts)])
        else:
            task = partial(_cast_compiled, compiled.widen, theta_at, dict(enumerate(acc_at)), _Chunks(chunks))
            _run(pool, [task] * parts)

    if release_base:
        to_acc()
        thetas.clear()
    # The update being added: the threads find it here, and it is emptied once they are done,
    # since a thread may hold on to its finished task (and the task's arguments) for a while.
    current: list[tuple[np.float64, Any, _Chunks]] = []
    if compiled is None:
        scratch = [np.empty(chunk, dtype=np.float64) for _ in range(parts)]
        add_first = [partial(_add_scaled, acc, current, tmp, thetas) for tmp in scratch]
        add = [partial(_add_scaled, acc, current, tmp, None) for tmp in scratch]
        del scratch
    else:
        add_first = [partial(_add_scaled_compiled, compiled, acc_at, current, theta_at)] * parts
        add = [partial(_add_scaled_compiled, compiled, acc_at, current, None)] * parts
    seen = 0
    started = release_base  # whether the accumulator already holds theta
    for participant, n_k, delta in _ordered(updates):
        c_k, flats = _checked(participant, n_k, delta, names, shapes, total_samples, eta)
        # the compiled loops take the tensors' addresses (of contiguous, aligned copies if need be)
        kept, operands = (flats, flats) if compiled is None else _flat_addresses(flats)
        current.append((c_k, operands, _Chunks(chunks)))
        del delta, flats  # let the caller's generator free it before decoding the next one
        _run(pool, add if started else add_first)
        started = True
        current.clear()
        del kept, operands
        seen += n_k
        logger.debug("aggregated update from %s (n_k=%d)", participant, n_k)
    if seen != total_samples:
        raise AggregationError(f"updates declare {seen} samples in all, the ledger says {total_samples}")
    if not started:  # no update: the accumulator is just theta
        to_acc()
    del add, add_first
    outs = []
    for index, shape in enumerate(shapes):  # one tensor's float32 result beside the accumulator at a time
        out = np.empty(shape, dtype=np.float32)
        mine = _Chunks([c for c in chunks if c[0] == index])
        if compiled is None:
            _run(pool, [partial(_cast, acc, {index: out.reshape(-1)}, mine) for _ in range(parts)])
        else:
            _run(pool, [partial(_cast_compiled, compiled.narrow, acc_at, {index: address(out)}, mine)] * parts)
        acc[index] = np.empty(0)  # free this tensor's accumulator
        outs.append(out)
    return outs


def fedavg_stream(
    base: Mapping[str, np.ndarray],
    updates: Iterable[UpdateItem],
    *,
    total_samples: int,
    server_lr: float = 1.0,
    threads: int | None = None,
    release_base: bool = False,
) -> dict[str, np.ndarray]:
    """Aggregate updates with FedAvg, exactly as the module docstring specifies.

    Memory is O(model): an iterator is consumed one update at a time, so pass a generator
    that decodes each blob when asked for it (it must then yield in participant order).

    Parameters
    ----------
    base:
        The round's base parameters ``theta`` (numpy float32 arrays, any memory layout).
    updates:
        ``(participant, n_k, delta)`` triples; a sequence is sorted here, an iterator
        must come sorted by :func:`participant_order`.
    total_samples:
        ``n``, the sum of the ``n_k`` as the ledger records them (checked).
    server_lr:
        The server learning rate ``eta``.
    threads:
        How many threads share the elements (default :func:`default_threads`; 1 does
        everything on the calling thread). It changes the speed, never a bit.
    release_base:
        ``base`` is a dict the caller gives up: it is emptied once read, and with an iterator
        of updates the accumulator takes theta before the first update is asked for, so the
        base's memory can be freed before any update is held (what a coordinator streaming
        many updates wants). It changes the memory, never a bit.

    Returns
    -------
    dict[str, np.ndarray]
        The new parameters, sorted by name: C-contiguous float32 arrays of their own.

    Raises
    ------
    AggregationError
        If a value is not a numpy float32 array (a ``torch.Tensor`` is refused, not
        converted), an update's tensors differ from the base in names or shapes, a
        participant repeats or is out of order, a sample count is not a positive int,
        or the counts do not add up to ``total_samples``.
    """
    _check_arguments(server_lr, total_samples)
    if threads is None:
        threads = default_threads()
    elif not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise AggregationError(f"threads must be a positive int, got {threads!r}")
    if release_base and not isinstance(base, dict):
        raise AggregationError(f"release_base needs the base as a dict to empty, got a {type(base).__name__}")
    names = sorted(base)
    bases = [_as_float32(name, base[name], None) for name in names]
    if release_base:
        base.clear()  # type: ignore[attr-defined]
    shapes = [b.shape for b in bases]
    thetas = [b.reshape(-1) for b in bases]  # views, unless a tensor is not contiguous
    del bases
    parts = _threads_for(sum(theta.size for theta in thetas), threads)
    # Threads started here, by the caller, inherit its floating-point environment.
    with ThreadPoolExecutor(parts - 1, thread_name_prefix="fedavg") if parts > 1 else contextlib.nullcontext() as pool:
        if isinstance(updates, Sequence):
            outs = _in_memory(pool, parts, thetas, shapes, updates, names, total_samples, float(server_lr))
        else:
            outs = _streamed(
                pool, parts, thetas, shapes, updates, names, total_samples, float(server_lr), release_base=release_base
            )
    return dict(zip(names, outs, strict=True))


def _check_arguments(server_lr: object, total_samples: object) -> None:
    if not (isinstance(server_lr, (int, float)) and math.isfinite(server_lr)):
        raise AggregationError(f"server learning rate must be a finite number, got {server_lr!r}")
    if not isinstance(total_samples, int) or isinstance(total_samples, bool) or total_samples < 0:
        raise AggregationError(f"total_samples must be a non-negative int, got {total_samples!r}")


def fedavg_matches(
    base: Mapping[str, np.ndarray],
    updates: Sequence[UpdateItem],
    *,
    total_samples: int,
    expected: Mapping[str, np.ndarray],
    server_lr: float = 1.0,
) -> bool:
    """Whether :func:`fedavg_stream` of these arguments returns ``expected``: the same names and shapes, and every
    element finite and of the very same bits.

    What a verifier holding a stored aggregate asks. Where the install built them, the compiled
    loops decide it in one pass over the elements, comparing each result with ``expected``
    instead of storing it (nothing is written; the first chunk that differs ends the pass); else
    the aggregate is computed and compared. On the calling thread, and with the same operations
    per element as :func:`fedavg_stream` (so with the same floating-point flags).

    Raises
    ------
    AggregationError
        Whenever :func:`fedavg_stream` would (the same checks, made first).
    """
    _check_arguments(server_lr, total_samples)
    compiled = for_arithmetic()
    if compiled is None:
        return _same_and_finite(
            fedavg_stream(base, updates, total_samples=total_samples, server_lr=server_lr), expected
        )
    names = sorted(base)
    thetas = [_as_float32(name, base[name], None).reshape(-1) for name in names]
    shapes = [base[name].shape for name in names]
    checked = _checked_all(updates, names, shapes, total_samples, float(server_lr))
    if sorted(expected) != names:
        return False
    wanted = []
    for name, shape in zip(names, shapes, strict=True):
        e = expected[name]
        if not isinstance(e, np.ndarray) or e.dtype != np.float32 or e.shape != shape:
            return False
        wanted.append(e.reshape(-1))
    operands = _Operands.of(thetas, checked)
    wanted_kept, wanted_addresses = _flat_addresses(wanted)
    clear_float_status()
    same = all(
        compiled.fedavg_differs(
            operands.thetas[i], operands.deltas[i], operands.coeffs, operands.k, wanted_addresses[i], 0, theta.size
        )
        == theta.size
        for i, theta in enumerate(thetas)
    )
    check_float_status("fedavg")
    del operands, wanted_kept  # alive until the loops are done
    return same


def _same_and_finite(result: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray]) -> bool:
    """Whether ``expected`` has ``result``'s names, float32 arrays of its shapes and bits, all finite."""
    if sorted(result) != sorted(expected):
        return False
    for name, got in result.items():
        e = expected[name]
        if not isinstance(e, np.ndarray) or e.dtype != np.float32 or e.shape != got.shape:
            return False
        if not np.array_equal(e.view(np.uint32), got.view(np.uint32)):  # bits: -0.0 is not 0.0
            return False
        if not np.isfinite(got).all():
            return False
    return True


__all__ = ["UpdateItem", "default_threads", "fedavg_matches", "fedavg_stream", "participant_order"]
