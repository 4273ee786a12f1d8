"""The exactly rounded sum of squares behind the update norm bound."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from fedchain.fl._exact import sum_of_squares


def _exact(*arrays: np.ndarray) -> float:
    return float(sum((Fraction(float(v)) ** 2 for a in arrays for v in a.ravel()), Fraction(0)))


@pytest.mark.parametrize("seed", range(5))
def test_it_equals_the_exact_sum_rounded_once(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = (rng.standard_normal(3000) * 10.0 ** rng.integers(-20, 20, 3000)).astype(np.float32)
    b = rng.standard_normal((7, 11)).astype(np.float32)
    assert sum_of_squares([a, b]) == _exact(a, b) == math.fsum(float(v) ** 2 for v in np.concatenate([a, b.ravel()]))


def test_extreme_and_special_values() -> None:
    tiny = np.array([1e-45, -1e-45, 0.0, -0.0], dtype=np.float32)  # subnormal float32
    huge = np.array([3.4e38, -3.4e38], dtype=np.float32)
    assert sum_of_squares([tiny]) == _exact(tiny)
    assert sum_of_squares([huge, tiny]) == _exact(huge, tiny)
    assert sum_of_squares([np.zeros(5, dtype=np.float32)]) == 0.0
    assert sum_of_squares([np.zeros(0, dtype=np.float32)]) == 0.0
    assert sum_of_squares([]) == 0.0


def test_order_does_not_matter() -> None:
    values = (np.random.default_rng(3).standard_normal(50_000) * 1e3).astype(np.float32)
    shuffled = values[np.random.default_rng(4).permutation(values.size)]
    assert sum_of_squares([values]) == sum_of_squares([shuffled]) == sum_of_squares([shuffled[:100], shuffled[100:]])


def test_only_float32_is_accepted() -> None:
    with pytest.raises(ValueError, match="float32"):
        sum_of_squares([np.zeros(3)])
