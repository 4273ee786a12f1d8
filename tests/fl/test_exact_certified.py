"""The certified split gives exactly the float the extraction gives, on random, adversarial and special inputs."""

from __future__ import annotations

import functools
import logging
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedchain.errors import CodecError
from fedchain.fl import _exact
from fedchain.fl._exact import extracted_sum_of_squares, sum_of_squares
from fedchain.fl.codec import UpdateMeta, decode_update, encode_update, l2_norm
from fedchain.fl.schema import Schema

UNDECIDED = "left the rounding open"


def _fraction_sum(*arrays: np.ndarray) -> float:
    return float(sum((Fraction(float(v)) ** 2 for a in arrays for v in a.ravel()), Fraction(0)))


finite_float32 = st.floats(width=32, allow_nan=False, allow_infinity=False, allow_subnormal=True)
arrays = hnp.arrays(np.float32, st.integers(0, 300), elements=finite_float32)


@settings(max_examples=150, deadline=None)
@given(st.lists(arrays, max_size=4))
def test_any_finite_float32_values_give_the_exactly_rounded_sum(values: list[np.ndarray]) -> None:
    assert sum_of_squares(values) == extracted_sum_of_squares(values) == _fraction_sum(*values)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    st.integers(1, 3 * _exact._BLOCK),
    st.integers(-44, 20),
    st.integers(0, 17),
    st.floats(0.0, 0.9),
    st.integers(0, 2**32 - 1),
)
def test_long_inputs_across_blocks_with_wide_ranges_and_zeros_agree(
    n: int, low: int, span: int, zeros: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    a = (rng.standard_normal(n) * 10.0 ** rng.integers(low, low + span + 1, n)).clip(-3e38, 3e38).astype(np.float32)
    a[rng.random(n) < zeros] = 0.0
    assert sum_of_squares([a]) == extracted_sum_of_squares([a])


@pytest.mark.parametrize(
    "sizes",
    [
        [_exact._BLOCK - 1],
        [_exact._BLOCK],
        [_exact._BLOCK + 1],
        [_exact._ROW - 1, 1, _exact._ROW + 1],
        [1] * 500,
        [3, 0, _exact._BLOCK, 0, 2 * _exact._BLOCK + 5],
    ],
)
def test_arrays_of_any_sizes_fill_the_blocks_and_agree(sizes: list[int]) -> None:
    rng = np.random.default_rng(len(sizes))
    parts = [(rng.standard_normal(s) * 1e-3).astype(np.float32) for s in sizes]
    assert sum_of_squares(parts) == extracted_sum_of_squares(parts)
    assert sum_of_squares(parts) == sum_of_squares([np.concatenate(parts)])


@functools.cache
def _near_midpoint(side: int, seed: int = 7) -> tuple[np.ndarray, float, float]:
    """Two float32 values whose exact sum of squares is halfway between two float64 numbers ``lo < hi``
    (``side == 0``), or within ``2**-12`` ulp of halfway, above (``side > 0``) or below it (``side < 0``)."""
    rng = np.random.default_rng(seed + side)
    while True:
        a = np.array(
            [
                rng.uniform(1.0, 2.0),
                rng.uniform(1.0, 2.0) * 2.0 ** -float(rng.integers(0, 6) if side == 0 else rng.integers(12, 20)),
            ],
            np.float32,
        )
        exact = sum(Fraction(float(x)) ** 2 for x in a)
        nearest = float(exact)
        for lo, hi in ((math.nextafter(nearest, -math.inf), nearest), (nearest, math.nextafter(nearest, math.inf))):
            middle = (Fraction(lo) + Fraction(hi)) / 2
            off = (exact - middle) / (Fraction(hi) - Fraction(lo))
            if (side == 0 and off == 0) or (side != 0 and 0 < side * off < Fraction(1, 4096)):
                return a, lo, hi


def test_a_sum_exactly_halfway_between_two_floats_rounds_to_even() -> None:
    pair, lo, hi = _near_midpoint(0)
    even = lo if int(math.ldexp(math.frexp(lo)[0], 53)) % 2 == 0 else hi
    assert sum_of_squares([pair]) == even == _fraction_sum(pair)


@pytest.mark.parametrize("side", [-1, 1])
def test_a_sum_a_hair_off_the_midpoint_rounds_to_its_side(side: int) -> None:
    pair, lo, hi = _near_midpoint(side)
    assert sum_of_squares([pair]) == (hi if side > 0 else lo) == _fraction_sum(pair)
    padded = [pair, np.zeros(2 * _exact._BLOCK, dtype=np.float32), pair[::-1].copy()]
    assert sum_of_squares(padded) == extracted_sum_of_squares(padded) == _fraction_sum(*padded)


def test_an_undecided_rounding_is_left_to_the_extraction(caplog: pytest.LogCaptureFixture) -> None:
    # exactly on a midpoint, with residuals below the grid: any error bound on them straddles it
    pair, _, _ = _near_midpoint(0)
    with caplog.at_level(logging.DEBUG, logger="fedchain.fl._exact"):
        result = sum_of_squares([pair])
    assert any(UNDECIDED in r.getMessage() for r in caplog.records)
    assert result == extracted_sum_of_squares([pair]) == _fraction_sum(pair)


def test_typical_updates_are_decided_without_the_extraction(caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(3)
    with caplog.at_level(logging.DEBUG, logger="fedchain.fl._exact"):
        for _ in range(20):
            delta = (rng.standard_normal(200_000) * 1e-3).astype(np.float32)
            assert sum_of_squares([delta]) == extracted_sum_of_squares([delta])
    assert sum(UNDECIDED in r.getMessage() for r in caplog.records) <= 1


def test_extreme_magnitudes_and_subnormals_agree() -> None:
    tiny = np.array([1e-45, -1e-45, 1.4e-44, 0.0, -0.0], dtype=np.float32)
    huge = np.array([3.4e38, -3.4e38, 1e38], dtype=np.float32)
    ones = np.ones(70_000, dtype=np.float32)
    for values in ([tiny], [huge], [huge, tiny], [tiny, ones], [huge, ones, tiny]):
        assert sum_of_squares(values) == extracted_sum_of_squares(values) == _fraction_sum(*values)


def test_infinities_and_nans_in_any_block_give_what_the_extraction_gives() -> None:
    block = _exact._BLOCK
    for first, second in ((np.inf, 1.0), (-np.inf, np.nan), (np.nan, np.inf), (1.0, -np.inf)):
        a = np.ones(2 * block + 3, dtype=np.float32)
        a[5], a[block + 7] = first, second
        fast, slow = sum_of_squares([a]), extracted_sum_of_squares([a])
        assert (math.isnan(fast) and math.isnan(slow)) or fast == slow == math.inf


def test_only_float32_is_accepted_even_after_a_nan() -> None:
    with pytest.raises(ValueError, match="float32"):
        sum_of_squares([np.array([np.nan], dtype=np.float32), np.zeros(3)])


# --------------------------------------------------------------------------- the norm bound's verdict


def _decode(values: np.ndarray, bound: float) -> float | None:
    arrays = {"w": values}
    meta = UpdateMeta(round_id=1, base=bytes(32), sender="0x" + "11" * 20, samples=1)  # type: ignore[arg-type]
    blob = encode_update(arrays, meta)
    return decode_update(blob, schema=Schema.of(arrays), max_norm=bound).norm


@pytest.mark.parametrize("seed", range(6))
def test_an_update_exactly_at_the_bound_passes_and_one_ulp_below_it_is_refused(seed: int) -> None:
    values = (np.random.default_rng(seed).standard_normal(3 * _exact._BLOCK + 11) * 1e-2).astype(np.float32)
    norm = math.sqrt(extracted_sum_of_squares([values]))
    assert l2_norm({"w": values}) == norm
    assert _decode(values, norm) == norm
    assert _decode(values, math.nextafter(norm, math.inf)) == norm
    with pytest.raises(CodecError) as info:
        _decode(values, math.nextafter(norm, 0.0))
    assert info.value.reason == "norm"


@pytest.mark.parametrize("side", [-1, 0, 1])
def test_a_norm_whose_square_sits_at_a_rounding_midpoint_is_judged_as_the_exact_sum_says(side: int) -> None:
    pair, _, _ = _near_midpoint(side)
    norm = math.sqrt(_fraction_sum(pair))
    assert _decode(pair, norm) == norm
    with pytest.raises(CodecError) as info:
        _decode(pair, math.nextafter(norm, 0.0))
    assert info.value.reason == "norm"


def test_without_numpy_2s_vecdot_the_rows_are_summed_by_einsum_to_the_same_float(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = np.random.default_rng(11)
    values = [(rng.standard_normal(n) * 10.0 ** rng.integers(-20, 20, n)).astype(np.float32) for n in (5, 70_000)]
    expected = extracted_sum_of_squares(values)
    monkeypatch.setattr(_exact, "_vecdot", None)  # numpy 1.26 has no vecdot
    assert sum_of_squares(values) == expected
