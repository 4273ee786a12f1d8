"""FedAvg's chunked execution: threads take the chunks as they come, and the bits are Python's own float arithmetic."""

from __future__ import annotations

import itertools
import threading
import zlib

import numpy as np
import pytest

from fedchain.fl import UpdateItem, _aggregate, fedavg_stream

F32 = np.finfo(np.float32)
#: Subnormals, signed zeros, the extremes, infinities and values whose products round.
EDGES = np.array(
    [0.0, -0.0, 1e-45, -1e-45, 3e-39, F32.tiny, -1.0, 0.1, 1.0 / 3.0, 3e38, -F32.max, np.inf, -np.inf],
    dtype=np.float32,
)


def _reference(base: dict[str, np.ndarray], updates: list[UpdateItem], total: int, eta: float) -> dict[str, np.ndarray]:
    """The module docstring's formula element by element in Python floats (IEEE binary64, no fused operations)."""
    ordered = sorted(updates, key=lambda u: u[0].lower())
    weights = [(eta * float(n_k)) / float(total) for _, n_k, _ in ordered]
    out = {}
    for name, theta in base.items():
        flat = theta.reshape(-1).tolist()  # float32 -> Python float: exact
        deltas = [delta[name].reshape(-1).tolist() for _, _, delta in ordered]
        result = []
        for e, acc in enumerate(flat):
            for c_k, delta in zip(weights, deltas, strict=True):
                acc = acc + delta[e] * c_k
            result.append(acc)
        # Python float -> float32 rounds to nearest even (overflowing to infinity)
        out[name] = np.array(result, dtype=np.float32).reshape(theta.shape)
    return out


def _values(rng: np.random.Generator, size: int) -> np.ndarray:
    values = rng.standard_normal(size) * 10.0 ** rng.uniform(-40, 38, size=size)
    edges = rng.random(size) < 0.2
    values[edges] = rng.choice(EDGES, size=int(edges.sum()))
    return values.astype(np.float32)


def _round(seed: int, k: int, sizes: dict[str, int]) -> tuple[dict[str, np.ndarray], list[UpdateItem], int]:
    rng = np.random.default_rng(seed)
    base = {name: _values(rng, size) for name, size in sizes.items()}
    counts = [int(c) for c in rng.integers(1, 1 << 20, size=k)]
    updates: list[UpdateItem] = [
        (f"0x{int(rng.integers(1 << 62)):040x}", counts[i], {name: _values(rng, size) for name, size in sizes.items()})
        for i in range(k)
    ]
    return base, updates, sum(counts)


def _assert_same_bits(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert sorted(got) == sorted(want)
    for name, value in want.items():
        nan = np.isnan(value)  # which NaN a NaN is is not specified
        assert np.array_equal(np.isnan(got[name]), nan), name
        assert got[name][~nan].tobytes() == value[~nan].tobytes(), name


@pytest.mark.parametrize("k", [1, 2, 5])
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("chunk", [7, 64, 1000])
@pytest.mark.parametrize("stream", [False, True], ids=["sequence", "stream"])
def test_the_aggregate_has_the_bits_of_python_float_arithmetic_element_by_element(
    k: int, threads: int, chunk: int, stream: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_aggregate, "_CHUNK", chunk)
    monkeypatch.setattr(_aggregate, "_STREAM_CHUNK", chunk)
    monkeypatch.setattr(_aggregate, "_MIN_PER_THREAD", 16)
    # odd sizes, sizes on and beside chunk boundaries, one element
    sizes = {"a": 1, "b": chunk, "c": chunk + 1, "d": 3 * chunk - 1, "e": 1999}
    base, updates, total = _round(zlib.crc32(f"{k} {threads} {chunk} {stream}".encode()), k, sizes)
    eta = 0.73
    with np.errstate(all="ignore"):  # infinities, NaN, results beyond float32's range
        want = _reference(base, updates, total, eta)
        given = iter(sorted(updates, key=lambda u: u[0].lower())) if stream else updates[::-1]
        got = fedavg_stream(base, given, total_samples=total, server_lr=eta, threads=threads)
    _assert_same_bits(got, want)


@pytest.mark.parametrize(
    ("sizes", "chunk"), [([], 4), ([0], 4), ([1], 4), ([5, 0, 17], 4), ([100, 3, 1000, 1], 64), ([1 << 16], 1 << 12)]
)
def test_the_chunks_cover_every_element_once_and_none_is_longer_than_the_chunk(sizes: list[int], chunk: int) -> None:
    chunks = _aggregate._chunked(sizes, chunk)
    assert all(0 <= start < stop <= sizes[index] and stop - start <= chunk for index, start, stop in chunks)
    for index, size in enumerate(sizes):
        ranges = sorted((start, stop) for i, start, stop in chunks if i == index)
        assert sum(stop - start for start, stop in ranges) == size
        assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))


def test_threads_drawing_chunks_at_once_get_each_chunk_exactly_once() -> None:
    chunks = _aggregate._chunked([100_000, 7, 50_001], 3)
    shared = _aggregate._Chunks(chunks)
    taken: list[list[tuple[int, int, int]]] = [[] for _ in range(4)]
    workers = [threading.Thread(target=taken[j].extend, args=(shared,)) for j in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert sorted(itertools.chain.from_iterable(taken)) == sorted(chunks)
    assert list(shared) == []


def test_a_thread_that_comes_late_finds_every_chunk_done_by_the_first() -> None:
    """A starved thread holds up nobody: the first thread takes every chunk left, the late one none."""
    sizes = {"w": 5000, "b": 3}
    base, updates, total = _round(5, 3, sizes)
    with np.errstate(all="ignore"):
        want = _reference(base, updates, total, 1.0)
    names = sorted(sizes)
    thetas = [base[name].reshape(-1) for name in names]
    checked = [
        (np.float64(float(n_k) / float(total)), [delta[name].reshape(-1) for name in names])
        for _, n_k, delta in sorted(updates, key=lambda u: u[0].lower())
    ]
    outs = [np.full(sizes[name], np.nan, dtype=np.float32) for name in names]
    shared = _aggregate._Chunks(_aggregate._chunked([theta.size for theta in thetas], 1000))
    with np.errstate(all="ignore"):
        _aggregate._sum_chunks(thetas, checked, outs, shared, 1000)  # the first thread
        done = [out.copy() for out in outs]
        _aggregate._sum_chunks(thetas, checked, outs, shared, 1000)  # the late one
    _assert_same_bits(dict(zip(names, done, strict=True)), want)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(done, outs, strict=True))


@pytest.mark.parametrize(("total", "parts"), [(1, 1), (10, 1), (10, 4), (1 << 20, 2), (1 << 30, 4)])
def test_two_float64_chunks_per_thread_take_at_most_twice_the_float32_model(total: int, parts: int) -> None:
    chunk = _aggregate._chunk_size(total, parts, _aggregate._CHUNK)
    assert 1 <= chunk <= _aggregate._CHUNK
    # in elements: 2 * parts float64 chunks are the bytes of 4 * parts * chunk float32, i.e. of 2 models,
    # but for each chunk's rounding up by less than one element
    assert 2 * parts * chunk < total + 2 * parts
