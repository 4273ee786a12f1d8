"""The compiled loops (fedchain/fl/_loops.c) give the numpy loops' very bits, and honour numpy's errstate.

Each test runs the public functions twice, once with the compiled loops and once with them
turned off (the numpy loops, which the other tests of tests/fl check against independent
renderings of the formulas), and compares the results byte for byte.
"""

from __future__ import annotations

import ctypes
import math
import os
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest

from fedchain.errors import AggregationError
from fedchain.fl import UpdateItem, _kernels, fedavg_stream
from fedchain.fl._aggregate import fedavg_matches
from fedchain.fl._exact import extracted_sum_of_squares, sum_of_squares

T = TypeVar("T")
F32 = np.finfo(np.float32)
SPECIAL = np.array(
    [0.0, -0.0, 1e-45, -1e-45, 3e-39, F32.tiny, 1e-30, -1.0, 0.1, 3.0, 1e30, -1e38, F32.max, -F32.max],
    dtype=np.float32,
)


@pytest.fixture
def compiled() -> _kernels.Kernels:
    if os.environ.get(_kernels.KERNELS_ENV, "").strip().lower() == "numpy":
        pytest.skip(f"{_kernels.KERNELS_ENV}=numpy turns the compiled loops off")
    loops = _kernels.kernels()
    assert loops is not None, "the install did not build fedchain/fl/_loops.c (is a C compiler installed?)"
    return loops


def _both(fn: Callable[[], T]) -> tuple[T, T]:
    """``fn()`` with the compiled loops (the ``compiled`` fixture checks they are there), then with the numpy loops."""
    with_loops = fn()
    saved = _kernels._loaded[:]
    _kernels._loaded[:] = [None]
    try:
        without = fn()
    finally:
        _kernels._loaded[:] = saved
    return with_loops, without


def _bits(result: dict[str, np.ndarray]) -> dict[str, bytes]:
    return {name: a.tobytes() for name, a in result.items()}


def _values(rng: np.random.Generator, shape: tuple[int, ...], special: bool) -> np.ndarray:
    scale = np.float32(10.0) ** rng.integers(-40, 38, size=shape).astype(np.float32)
    values = np.asarray(rng.standard_normal(shape) * scale, dtype=np.float32).reshape(shape)
    if special and values.size:
        picks = rng.random(shape) < 0.2
        values[picks] = rng.choice(SPECIAL, size=int(picks.sum()))
    return values


def _round(seed: int, k: int, special: bool) -> tuple[dict[str, np.ndarray], list[UpdateItem], int]:
    rng = np.random.default_rng(seed)
    shapes = {"bias": (7,), "empty": (0,), "scalar": (), "weight": (300, 170), "tail": (4099,)}
    base = {n: _values(rng, s, special) for n, s in shapes.items()}
    updates: list[UpdateItem] = []
    for i in range(k):
        n_k = int(rng.integers(1, 1000))
        updates.append((f"0x{i:040x}", n_k, {n: _values(rng, s, special) for n, s in shapes.items()}))
    return base, updates, sum(n for _, n, _ in updates)


@pytest.mark.usefixtures("compiled")
@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("streamed", [False, True], ids=["in-memory", "streamed"])
@pytest.mark.parametrize(
    ("seed", "k", "special"), [(0, 1, False), (1, 3, False), (2, 5, True), (3, 12, True), (4, 0, False)]
)
def test_fedavg_gives_the_numpy_loops_bits(seed: int, k: int, special: bool, streamed: bool, threads: int) -> None:
    base, updates, total = _round(seed, k, special)
    eta = 0.7 if seed % 2 else 1.0

    def run() -> dict[str, bytes]:
        items: list[UpdateItem] | Iterator[UpdateItem] = iter(updates) if streamed else list(updates)
        with np.errstate(all="ignore"):
            return _bits(fedavg_stream(dict(base), items, total_samples=total, server_lr=eta, threads=threads))

    with_loops, without = _both(run)
    assert with_loops == without


@pytest.mark.usefixtures("compiled")
@pytest.mark.parametrize("streamed", [False, True], ids=["in-memory", "streamed"])
def test_fedavg_reads_strided_read_only_and_unaligned_tensors(streamed: bool) -> None:
    rng = np.random.default_rng(7)
    wide = rng.standard_normal((64, 96)).astype(np.float32)
    # strided, read-only, and not aligned (float32 values one byte into a buffer)
    unaligned = np.frombuffer(b"\0" + rng.standard_normal(500).astype(np.float32).tobytes(), dtype=np.float32, offset=1)
    assert not unaligned.flags.aligned
    base = {"w": wide[:, ::3], "v": unaligned}
    updates: list[UpdateItem] = [
        (f"0x{i:040x}", 3 + i, {"w": rng.standard_normal((32, 64)).astype(np.float32).T[::-1], "v": base["v"][::-1]})
        for i in range(3)
    ]

    def run() -> dict[str, bytes]:
        items = iter(updates) if streamed else updates
        return _bits(fedavg_stream(dict(base), items, total_samples=12, threads=2))

    with_loops, without = _both(run)
    assert with_loops == without


@pytest.mark.usefixtures("compiled")
@pytest.mark.parametrize(
    "arrays",
    [
        [np.random.default_rng(0).standard_normal(1 << 20).astype(np.float32) * np.float32(0.01)],
        [np.random.default_rng(1).standard_normal(70001).astype(np.float32)[::3], np.float32([1e30, 1e-30, 3.0])],
        [np.frombuffer(b"\0" + np.float32(np.arange(7000) * 0.37).tobytes(), dtype=np.float32, offset=1)],
        [(np.random.default_rng(2).standard_normal(100001) * 1e-40).astype(np.float32)],  # subnormal
        [np.full(100, F32.max, dtype=np.float32)],
        [np.float32([1.0, 2.0**-12])],  # an exact sum on a midpoint between two float64 numbers
        [np.float32([np.inf, 1.0])],
        [np.float32([np.nan, np.inf])],
        [np.float32([np.inf]), np.float32([np.nan])],
        [np.zeros(5, dtype=np.float32), np.zeros(0, dtype=np.float32)],
        [SPECIAL],
    ],
    ids=[
        "dense",
        "strided",
        "unaligned",
        "subnormal",
        "max",
        "midpoint",
        "inf",
        "nan",
        "inf-then-nan",
        "zeros",
        "special",
    ],
)
def test_the_sum_of_squares_is_the_numpy_loops_float(arrays: list[np.ndarray]) -> None:
    with_loops, without = _both(lambda: sum_of_squares(arrays))
    reference = extracted_sum_of_squares(arrays)
    if math.isnan(reference):
        assert math.isnan(with_loops) and math.isnan(without)
    else:
        assert with_loops == without == reference


@pytest.mark.usefixtures("compiled")
@pytest.mark.parametrize("streamed", [False, True], ids=["in-memory", "streamed"])
def test_an_overflow_is_raised_warned_or_ignored_as_numpy_errstate_says(streamed: bool) -> None:
    base = {"w": np.full(64, F32.max, dtype=np.float32)}
    updates: list[UpdateItem] = [(f"0x{i:040x}", 1, {"w": np.full(64, F32.max, dtype=np.float32)}) for i in range(2)]

    def run(mode: str) -> np.ndarray:
        with np.errstate(over=mode):  # type: ignore[arg-type]
            return fedavg_stream(base, iter(updates) if streamed else updates, total_samples=2, threads=2)["w"]

    with pytest.raises(FloatingPointError, match="overflow"):
        run("raise")
    with pytest.warns(RuntimeWarning, match="overflow"):
        run("warn")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isinf(run("ignore")).all()


@pytest.mark.usefixtures("compiled")
def test_an_underflow_is_raised_only_when_errstate_asks() -> None:
    base = {"w": np.zeros(8, dtype=np.float32)}
    updates: list[UpdateItem] = [("a", 1, {"w": np.full(8, 1e-30, dtype=np.float32)})]
    with np.errstate(under="raise"), pytest.raises(FloatingPointError, match="underflow"):
        fedavg_stream(base, updates, total_samples=1, server_lr=1e-12, threads=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = fedavg_stream(base, updates, total_samples=1, server_lr=1e-12, threads=1)["w"]
    assert (out == np.float32(1e-42)).all()


def test_the_environment_can_turn_the_compiled_loops_off() -> None:
    code = "from fedchain.fl import _kernels; print(_kernels.kernels() is None)"
    env = {**os.environ, _kernels.KERNELS_ENV: "numpy"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
    env.pop(_kernels.KERNELS_ENV)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("seed", range(4))
def test_a_blocks_split_sums_are_the_exact_ones(compiled: _kernels.Kernels, seed: int) -> None:
    # A' and B' are exact sums (any order) of the split h = (v + c) - c, r = v - h: a compiler
    # that simplified the split or fused its products would change them.
    rng = np.random.default_rng(seed)
    x = np.asarray(rng.standard_normal(5003) * 10.0 ** rng.integers(-3, 3), dtype=np.float32)
    out = np.zeros(5, dtype=np.float64)
    compiled.blocks_sums(_kernels.address(x), x.size, 1 << 16, _kernels.address(out))  # one block
    estimate, g, a, b, t = out.tolist()
    v = x.astype(np.float64)
    assert estimate == pytest.approx(float(np.dot(v, v)), rel=1e-12)
    c = 1.5 * math.ldexp(g, 52)
    h = (v + c) - c
    r = v - h
    assert 0 < np.abs(r).max() <= g / 2  # the split is not the identity
    assert a == float(sum(map(Fraction, (h * h).tolist())))
    assert b == float(sum(map(Fraction, (h * r).tolist())))
    assert t == pytest.approx(math.fsum((r * r).tolist()), rel=1e-12)


def test_a_library_of_another_version_is_refused_and_the_numpy_loops_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # a real shared library that lacks this version's loops (what a stale editable build would be)
    source = tmp_path / "old.c"
    source.write_text("int fc_fedavg_chunk(void) { return 0; }\n", encoding="utf-8")
    library = tmp_path / "old.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(library), str(source)], check=True)
    monkeypatch.setattr(_kernels, "_library", lambda: library)
    monkeypatch.delenv(_kernels.KERNELS_ENV, raising=False)
    with caplog.at_level("WARNING", logger="fedchain.fl._kernels"):
        assert _kernels._load() is None
    assert "not this version's" in caplog.text


def test_the_block_sums_in_vectors_are_the_plain_loops_bits(compiled: _kernels.Kernels, tmp_path: Path) -> None:
    """The block sums are written twice in _loops.c (vector extensions, and plain loops for other compilers)."""
    source = Path(_kernels.__file__).with_name("_loops.c")
    library = tmp_path / "plain.so"
    flags = ["-O3", "-ffp-contract=off", "-fno-fast-math", "-DFC_PLAIN_LOOPS", "-shared", "-fPIC"]
    subprocess.run(["gcc", *flags, "-o", str(library), str(source), "-lm"], check=True)
    plain = ctypes.CDLL(str(library)).fc_block_sums
    plain.argtypes, plain.restype = (ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p), None
    rng = np.random.default_rng(17)
    for n in (1, 7, 8, 9, 1000, 4099, 1 << 16):
        for values in (
            rng.standard_normal(n).astype(np.float32),
            _values(rng, (n,), special=False),
            np.concatenate([SPECIAL, rng.standard_normal(n).astype(np.float32)])[:n],
        ):
            ours, theirs = np.zeros(5), np.zeros(5)
            compiled.blocks_sums(_kernels.address(values), n, 1 << 16, _kernels.address(ours))  # one block
            plain(_kernels.address(values), n, _kernels.address(theirs))
            assert ours.tobytes() == theirs.tobytes(), n


def _changed(arrays: dict[str, np.ndarray], name: str, index: int, value: object) -> dict[str, np.ndarray]:
    out = {n: a.copy() for n, a in arrays.items()}
    out[name].reshape(-1)[index] = value
    return out


@pytest.mark.usefixtures("compiled")
@pytest.mark.parametrize(("seed", "k"), [(0, 1), (1, 3), (4, 0), (5, 4)])
def test_fedavg_matches_says_exactly_whether_the_aggregate_has_these_bits(seed: int, k: int) -> None:
    base, updates, total = _round(seed, k, special=False)
    eta = 0.7 if seed % 2 else 1.0
    result = fedavg_stream(dict(base), updates, total_samples=total, server_lr=eta)
    cases: list[tuple[dict[str, np.ndarray], bool]] = [(result, True)]
    for name, index in (("bias", 0), ("scalar", 0), ("weight", 0), ("weight", 25_000), ("tail", 4098)):
        value = result[name].reshape(-1)[index]
        cases.append((_changed(result, name, index, np.nextafter(value, np.float32(np.inf))), False))  # one ulp
    cases.append((_changed(result, "tail", 7, 0.0), False))
    cases.append(({**result, "bias": result["bias"].astype(np.float64)}, False))  # not float32
    cases.append(({n: a for n, a in result.items() if n != "bias"}, False))  # a tensor missing
    cases.append(({**result, "bias": result["bias"][:-1]}, False))  # another shape
    for expected, answer in cases:

        def run(expected: dict[str, np.ndarray] = expected) -> bool:
            return fedavg_matches(dict(base), updates, total_samples=total, expected=expected, server_lr=eta)

        assert _both(run) == (answer, answer)


@pytest.mark.usefixtures("compiled")
def test_fedavg_matches_a_negative_zero_only_with_a_negative_zero() -> None:
    base = {"w": np.float32([0.0, 1.0, -0.0])}
    updates: list[UpdateItem] = [("0x" + "11" * 20, 1, {"w": np.float32([-0.0, 0.0, -0.0])})]
    result = fedavg_stream(dict(base), updates, total_samples=1)
    flipped = {"w": result["w"].copy()}
    flipped["w"][0] = -flipped["w"][0]
    for expected, answer in ((result, True), (flipped, False)):
        assert _both(lambda e=expected: fedavg_matches(base, updates, total_samples=1, expected=e)) == (answer, answer)


@pytest.mark.usefixtures("compiled")
def test_fedavg_matches_no_aggregate_that_is_not_finite_even_with_its_very_bits() -> None:
    # an aggregate that overflows float32 cannot be encoded: nothing matches it, not even inf
    base = {"w": np.float32([F32.max, 1.0, 2.0])}
    updates: list[UpdateItem] = [("0x" + "11" * 20, 1, {"w": np.float32([F32.max, 0.0, 0.0])})]
    with np.errstate(over="ignore"):
        result = fedavg_stream(dict(base), updates, total_samples=1)
        assert np.isinf(result["w"][0])
        assert _both(lambda: fedavg_matches(base, updates, total_samples=1, expected=result)) == (False, False)


@pytest.mark.usefixtures("compiled")
@pytest.mark.parametrize(
    ("updates", "total"),
    [
        ([("0x" + "11" * 20, 3, {"w": np.zeros(3, np.float32)})], 4),  # the counts do not add up
        ([("0x" + "11" * 20, 3, {"v": np.zeros(3, np.float32)})], 3),  # other tensors
        ([("0x" + "11" * 20, 3, {"w": np.zeros(4, np.float32)})], 3),  # another shape
        ([("0x" + "11" * 20, 0, {"w": np.zeros(3, np.float32)})], 0),  # no samples
        ([("0x" + "11" * 20, 1, {"w": np.zeros(3, np.float32)})] * 2, 2),  # a participant twice
    ],
)
def test_fedavg_matches_refuses_what_fedavg_refuses_with_the_same_words(updates: list[UpdateItem], total: int) -> None:
    base = {"w": np.ones(3, np.float32)}
    with pytest.raises(AggregationError) as refused:
        fedavg_stream(dict(base), updates, total_samples=total)
    for run in _both(lambda: _raised(lambda: fedavg_matches(base, updates, total_samples=total, expected=base))):
        assert run == str(refused.value)


def _raised(fn: Callable[[], object]) -> str:
    try:
        fn()
    except AggregationError as err:
        return str(err)
    raise AssertionError("no AggregationError")


@pytest.mark.usefixtures("compiled")
def test_fedavg_matches_honours_errstate_as_fedavg_does() -> None:
    base = {"w": np.float32([F32.max, 1.0])}
    updates: list[UpdateItem] = [("0x" + "11" * 20, 1, {"w": np.float32([F32.max, 0.0])})]
    for run in _both(lambda: _overflow(lambda: fedavg_matches(base, updates, total_samples=1, expected=base))):
        assert run
    assert _overflow(lambda: fedavg_stream(dict(base), updates, total_samples=1))


def _overflow(fn: Callable[[], object]) -> bool:
    with np.errstate(over="raise"):
        try:
            fn()
        except FloatingPointError:
            return True
    return False
