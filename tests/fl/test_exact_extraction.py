"""The sum of squares by error-free extraction equals the exact sum rounded once, on hard inputs."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from fedchain.fl import _exact
from fedchain.fl._exact import sum_of_squares


def _exact_sum(a: np.ndarray) -> float:
    return float(sum((Fraction(float(v)) ** 2 for v in a.ravel()), Fraction(0)))


@pytest.mark.parametrize("seed", range(40))
def test_wide_ranges_zeros_and_chunk_boundaries_sum_exactly(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(1, 3 * _exact._CHUNK))
    a = (rng.standard_normal(n) * 10.0 ** rng.integers(-44, 38, n)).astype(np.float32)
    a[rng.integers(0, n, n // 4)] = 0.0
    assert sum_of_squares([a]) == _exact_sum(a) == math.fsum(float(v) ** 2 for v in a)


def test_one_huge_value_among_tiny_ones_needs_many_levels_and_stays_exact() -> None:
    a = np.full(1000, 1e-44, dtype=np.float32)
    a[17] = 3.0e38
    assert sum_of_squares([a]) == _exact_sum(a)


def test_ties_in_the_extraction_do_not_lose_bits() -> None:
    # values whose squares sit exactly halfway between multiples of the first level's grid
    a = np.array([1.0, 2.0**-12 + 2.0**-35, 2.0**-13, 2.0**-40, 1.0 + 2.0**-23], dtype=np.float32)
    assert sum_of_squares([a]) == _exact_sum(a)


def test_infinities_and_nans_give_what_fsum_gives() -> None:
    inf = np.array([1.0, np.inf], dtype=np.float32)
    nan = np.array([np.nan, 1.0], dtype=np.float32)
    assert sum_of_squares([inf]) == math.inf
    assert math.isnan(sum_of_squares([inf, nan]))
