"""FedAvg's execution (chunks, threads, in-memory or streamed input) changes no bit of its result.

Every result is compared byte for byte with an independent, straightforward rendering of the
frozen formula: whole-array float64 copies, one ``multiply`` and one ``add`` per update.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import itertools
import platform
import threading
import tracemalloc
import weakref
import zlib
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedchain.errors import AggregationError
from fedchain.fl import UpdateItem, _aggregate, fedavg_stream

F32 = np.finfo(np.float32)
#: float32 values that stress the arithmetic: signed zeros, subnormals, the extremes, specials.
SPECIAL = np.array(
    [
        0.0,
        -0.0,
        1e-45,
        -1e-45,
        3e-39,
        -1.1754942e-38,
        F32.tiny,
        1e-30,
        -1.0,
        1.0,
        0.1,
        3.0,
        1e30,
        -1e38,
        F32.max,
        -F32.max,
        np.inf,
        -np.inf,
        np.nan,
    ],
    dtype=np.float32,
)
#: Tensor shapes: a scalar, empty ones, one element, odd sizes, and sizes of many chunks.
SHAPES = {"a": (), "b": (0,), "c": (3, 0), "d": (1,), "e": (13,), "f": (37, 29), "g": (2500,)}


def _frozen(base: dict[str, np.ndarray], updates: list[UpdateItem], total: int, eta: float) -> dict[str, np.ndarray]:
    """The module docstring's formula, whole arrays at a time."""
    ordered = sorted(updates, key=lambda u: u[0].lower())
    out = {}
    for name, theta in base.items():
        acc = theta.astype(np.float64)
        tmp = np.empty_like(acc)
        for _, n_k, delta in ordered:
            np.copyto(tmp, delta[name])
            np.multiply(tmp, np.float64((eta * float(n_k)) / float(total)), out=tmp)
            np.add(acc, tmp, out=acc)
        out[name] = acc.astype(np.float32)
    return out


def _values(rng: np.random.Generator, shape: tuple[int, ...], kind: str) -> np.ndarray:
    if kind == "special":
        values = rng.choice(SPECIAL, size=shape)
    elif kind == "finite":
        values = rng.choice(SPECIAL[np.isfinite(SPECIAL)], size=shape)
    else:
        values = rng.standard_normal(shape) * 10.0 ** rng.uniform(-6, 6, size=shape)
    return np.array(values, dtype=np.float32)  # an array even for shape ()


def _model(rng: np.random.Generator, kind: str) -> dict[str, np.ndarray]:
    model = {name: _values(rng, shape, kind) for name, shape in SHAPES.items()}
    model["t"] = _values(rng, (23, 41), kind).T  # not contiguous
    model["u"] = _values(rng, (2, 300), kind)[:, ::3]  # strided
    return model


def _round(seed: int, k: int, kind: str) -> tuple[dict[str, np.ndarray], list[UpdateItem], int]:
    rng = np.random.default_rng(seed)
    base = _model(rng, kind)
    counts = [int(c) for c in rng.integers(1, 10_000, size=k)]
    updates: list[UpdateItem] = [
        (f"0x{int(rng.integers(1 << 62)):040x}", counts[i], _model(rng, kind)) for i in range(k)
    ]
    return base, updates, sum(counts)


def _assert_same_bits(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert list(got) == sorted(want)
    for name, value in want.items():
        assert type(got[name]) is np.ndarray and got[name].dtype == np.float32 and got[name].flags.c_contiguous
        assert got[name].shape == value.shape, name
        # every bit, except which NaN a NaN is: IEEE 754 leaves open which operand's NaN an
        # operation returns, and numpy's loops differ there (SIMD body and tail); a NaN
        # aggregate is not finite, so the codec never encodes it
        nan = np.isnan(value)
        assert np.array_equal(np.isnan(got[name]), nan), name
        assert got[name][~nan].tobytes() == np.ascontiguousarray(value)[~nan].tobytes(), name


@pytest.fixture(params=[3, 64, 1000, _aggregate._CHUNK], ids=lambda c: f"chunk={c}")
def chunk(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """Chunks of this many elements, and a thread for as few as 16 elements (instead of tens of thousands)."""
    monkeypatch.setattr(_aggregate, "_CHUNK", request.param)
    monkeypatch.setattr(_aggregate, "_STREAM_CHUNK", request.param)
    monkeypatch.setattr(_aggregate, "_MIN_PER_THREAD", 16)
    return int(request.param)


@pytest.mark.parametrize("threads", [1, 2, 3, 4])
@pytest.mark.parametrize("stream", [False, True], ids=["sequence", "stream"])
@pytest.mark.parametrize(("kind", "eta"), [("random", 1.0), ("random", 0.37), ("finite", 1.0), ("special", 2.5)])
@pytest.mark.usefixtures("chunk")
def test_every_execution_gives_the_bits_of_the_frozen_formula(
    threads: int, stream: bool, kind: str, eta: float
) -> None:
    base, updates, total = _round(zlib.crc32(f"{threads} {stream} {kind} {eta}".encode()), 5, kind)
    with np.errstate(all="ignore"):  # infinities and NaN, and results beyond float32's range
        want = _frozen(base, updates, total, eta)
        shuffled = updates[::-1]
        given_updates = iter(sorted(updates, key=lambda u: u[0].lower())) if stream else shuffled
        got = fedavg_stream(base, given_updates, total_samples=total, server_lr=eta, threads=threads)
    _assert_same_bits(got, want)


@settings(max_examples=150, deadline=None)
@given(
    data=st.data(),
    k=st.integers(0, 4),
    eta=st.floats(1e-3, 1e3),
    threads=st.integers(1, 4),
    chunk=st.integers(1, 40),
    stream=st.booleans(),
)
def test_any_values_give_the_bits_of_the_frozen_formula(
    data: st.DataObject, k: int, eta: float, threads: int, chunk: int, stream: bool
) -> None:
    shapes = data.draw(
        st.lists(hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=40), min_size=1, max_size=3)
    )
    values = hnp.from_dtype(np.dtype(np.float32))  # every float32: subnormals, -0.0, infinities, NaN

    def model() -> dict[str, np.ndarray]:
        return {f"p{i}": data.draw(hnp.arrays(np.float32, shape, elements=values)) for i, shape in enumerate(shapes)}

    base = model()
    counts = data.draw(st.lists(st.integers(1, 1 << 40), min_size=k, max_size=k))
    updates: list[UpdateItem] = [(f"0x{i:040x}", n, model()) for i, n in enumerate(counts)]
    total = sum(counts)
    previous = (_aggregate._CHUNK, _aggregate._STREAM_CHUNK, _aggregate._MIN_PER_THREAD)
    _aggregate._CHUNK, _aggregate._STREAM_CHUNK, _aggregate._MIN_PER_THREAD = chunk, chunk, 16
    try:
        with np.errstate(all="ignore"):
            want = _frozen(base, updates, total, eta)
            got = fedavg_stream(
                base, iter(updates) if stream else updates[::-1], total_samples=total, server_lr=eta, threads=threads
            )
    finally:
        _aggregate._CHUNK, _aggregate._STREAM_CHUNK, _aggregate._MIN_PER_THREAD = previous
    _assert_same_bits(got, want)


@pytest.mark.parametrize("threads", [1, 4])
def test_a_large_model_gives_the_bits_of_the_frozen_formula_with_the_default_tuning(threads: int) -> None:
    rng = np.random.default_rng(7)
    shapes = {"big": (700_001,), "mid": (300, 999), "small": (5,)}
    base = {n: _values(rng, s, "random") for n, s in shapes.items()}
    updates: list[UpdateItem] = [
        (f"0x{i:040x}", 10 + i, {n: _values(rng, s, "random") for n, s in shapes.items()}) for i in range(3)
    ]
    want = _frozen(base, updates, 33, 1.0)
    _assert_same_bits(fedavg_stream(base, updates, total_samples=33, threads=threads), want)
    _assert_same_bits(fedavg_stream(base, iter(updates), total_samples=33, threads=threads), want)


@pytest.mark.parametrize("stream", [False, True], ids=["sequence", "stream"])
@pytest.mark.usefixtures("chunk")
def test_numpy_errstate_applies_in_every_thread(stream: bool) -> None:
    base = {"w": np.full(64, F32.max, dtype=np.float32)}
    updates: list[UpdateItem] = [(f"0x{i:040x}", 1, {"w": np.full(64, F32.max, dtype=np.float32)}) for i in range(2)]
    with np.errstate(over="raise"), pytest.raises(FloatingPointError, match="overflow"):
        fedavg_stream(base, iter(updates) if stream else updates, total_samples=2, threads=4)
    with np.errstate(over="ignore"):  # and no warning, which pytest would turn into an error
        got = fedavg_stream(base, iter(updates) if stream else updates, total_samples=2, threads=4)
    assert np.isinf(got["w"]).all()


def _libm() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return None
    name = ctypes.util.find_library("m")
    return ctypes.CDLL(name) if name else None


@pytest.mark.skipif(_libm() is None, reason="sets the rounding mode through glibc's fesetround on x86-64")
@pytest.mark.parametrize("stream", [False, True], ids=["sequence", "stream"])
@pytest.mark.usefixtures("chunk")
def test_the_threads_round_as_the_caller_does(stream: bool) -> None:
    """Threads inherit the caller's rounding mode when they start, so each call starts its own."""
    libm = _libm()
    assert libm is not None
    base, updates, total = _round(3, 4, "random")
    updates.sort(key=lambda u: u[0].lower())
    with np.errstate(all="ignore"):
        nearest = fedavg_stream(base, updates, total_samples=total, threads=1)
        warm = fedavg_stream(base, updates, total_samples=total, threads=4)  # threads of an earlier call exist no more
        fe_upward = 0x800
        assert libm.fesetround(fe_upward) == 0
        try:
            serial = fedavg_stream(base, iter(updates) if stream else updates, total_samples=total, threads=1)
            parallel = fedavg_stream(base, iter(updates) if stream else updates, total_samples=total, threads=4)
        finally:
            libm.fesetround(0)
    assert all(nearest[n].tobytes() == warm[n].tobytes() for n in base)
    assert any(serial[n].tobytes() != nearest[n].tobytes() for n in base)  # the mode did change the result
    _assert_same_bits(parallel, serial)


@pytest.mark.usefixtures("chunk")
def test_a_stream_is_consumed_one_update_at_a_time_by_several_threads() -> None:
    alive: list[weakref.ref[np.ndarray]] = []
    workers: set[str] = set()

    def stream() -> Iterator[UpdateItem]:
        for i in range(30):
            # reference counting alone must free it: no gc.collect()
            assert sum(r() is not None for r in alive) == 0, "a previous update is still held"
            w = np.full(500, float(i), dtype=np.float32)
            alive.append(weakref.ref(w))  # alive as long as any tensor or array made from it
            delta = {"w": w, "b": np.full(3, -float(i), dtype=np.float32)}
            del w
            workers.update(t.name for t in threading.enumerate())
            yield f"0x{i:040x}", 1, delta
            del delta

    fedavg_stream(
        {"w": np.zeros(500, dtype=np.float32), "b": np.zeros(3, dtype=np.float32)},
        stream(),
        total_samples=30,
        threads=4,
    )
    assert sum(name.startswith("fedavg") for name in workers) == 3


def test_the_streamed_aggregate_needs_the_float64_accumulator_and_little_more() -> None:
    shape = (1024, 1024)  # 4 MiB of float32
    model_bytes = 4 << 20

    def stream(n: int) -> Iterator[UpdateItem]:
        for i in range(n):
            yield f"0x{i:040x}", 1, {"w": np.full(shape, 0.001 * i, dtype=np.float32)}

    base = {"w": np.zeros(shape, dtype=np.float32)}
    gc.collect()
    tracemalloc.start()
    try:
        fedavg_stream(base, stream(5), total_samples=5, threads=2)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # the float64 accumulator (2 models), the threads' float64 chunks (at most 1 model) and the
    # update being produced (1 model); at the end the result (1 model) beside the accumulator
    # + numpy's casting buffers: 8192 float64 per cast operand and thread, whatever the model's size
    assert peak <= 4 * model_bytes + (256 << 10)


def test_the_in_memory_aggregate_needs_no_float64_model() -> None:
    shape = (1024, 1024)
    model_bytes = 4 << 20
    base = {"w": np.zeros(shape, dtype=np.float32)}
    updates: list[UpdateItem] = [(f"0x{i:040x}", 1, {"w": np.full(shape, 0.5, dtype=np.float32)}) for i in range(5)]
    gc.collect()
    tracemalloc.start()
    try:
        fedavg_stream(base, updates, total_samples=5, threads=2)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # the result (1 model) and two float64 chunks per thread (at most 2 models; 8 MiB a thread for large models)
    # + numpy's casting buffers: 8192 float64 per cast operand and thread, whatever the model's size
    assert peak <= 3 * model_bytes + (256 << 10)


@pytest.mark.parametrize("threads", [0, -1, 1.5, True, "2"])
def test_a_thread_count_must_be_a_positive_int(threads: object) -> None:
    with pytest.raises(AggregationError, match="threads"):
        fedavg_stream({"x": np.zeros(1, dtype=np.float32)}, [], total_samples=0, threads=threads)  # type: ignore[arg-type]


def test_the_default_thread_count_is_between_one_and_four() -> None:
    assert 1 <= _aggregate.default_threads() <= 4


@pytest.mark.parametrize("sizes", [[], [0], [1], [5, 0, 17], [100, 3, 1000, 1], [1 << 20]])
@pytest.mark.parametrize("threads", [1, 2, 3, 4])
def test_the_threads_share_the_elements_without_overlap(
    sizes: list[int], threads: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_aggregate, "_MIN_PER_THREAD", 16)
    plan = _aggregate._plan(sizes, threads)
    assert 1 <= len(plan) <= threads
    covered: dict[int, list[tuple[int, int]]] = {}
    for spans in plan:
        for index, start, stop in spans:
            assert 0 <= start < stop <= sizes[index]
            covered.setdefault(index, []).append((start, stop))
    for index, size in enumerate(sizes):
        ranges = sorted(covered.get(index, []))
        assert sum(stop - start for start, stop in ranges) == size
        assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))


@pytest.mark.parametrize("stream", [False, True], ids=["sequence", "stream"])
def test_releasing_the_base_empties_it_and_changes_no_bit(stream: bool) -> None:
    base, updates, total = _round(11, 4, "random")
    want = _frozen(base, updates, total, 1.0)
    given_up = dict(base)
    got = fedavg_stream(
        given_up,
        iter(sorted(updates, key=lambda u: u[0])) if stream else updates,
        total_samples=total,
        threads=2,
        release_base=True,
    )
    _assert_same_bits(got, want)
    assert given_up == {}


def test_a_released_base_is_freed_before_the_first_update_is_asked_for() -> None:
    shape = (1024, 1024)
    theta = np.zeros(shape, dtype=np.float32)
    alive = weakref.ref(theta)
    seen: list[bool] = []

    def stream() -> Iterator[UpdateItem]:
        gc.collect()
        seen.append(alive() is None)
        yield "0x" + "1" * 40, 1, {"w": np.full(shape, 0.5, dtype=np.float32)}

    base = {"w": theta}
    del theta
    got = fedavg_stream(base, stream(), total_samples=1, threads=2, release_base=True)
    assert seen == [True]  # the accumulator held theta, and theta itself was gone
    assert float(got["w"][0, 0]) == 0.5


def test_release_base_needs_a_dict_it_may_empty() -> None:
    from types import MappingProxyType

    with pytest.raises(AggregationError, match="release_base needs the base as a dict"):
        fedavg_stream(
            MappingProxyType({"w": np.zeros(3, dtype=np.float32)}), iter(()), total_samples=0, release_base=True
        )  # type: ignore[arg-type]
