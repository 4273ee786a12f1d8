"""A sum of squares computed from a blob's bytes alone gives the decoder the norm it would compute itself."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedchain.errors import CodecError
from fedchain.fl import Schema, decode_update
from fedchain.fl.codec import SumOfSquares, UpdateMeta, encode_update, l2_norm, sum_of_squares_after_header
from fedchain.types import Address, Digest, RoundId


def _blob(arrays: dict[str, np.ndarray]) -> bytes:
    meta = UpdateMeta(RoundId(1), Digest(bytes(32)), Address("0xABaBaBaBABabABabAbAbABAbABabababaBaBABaB"), 10, {})
    return encode_update(arrays, meta)


def _arrays(seed: int = 7) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "b": rng.standard_normal(5).astype(np.float32),
        "w": (rng.standard_normal((300, 400)) * 1e-3).astype(np.float32),
    }


@pytest.mark.parametrize("seed", range(5))
def test_the_sum_after_the_header_gives_exactly_the_decoders_norm_with_or_without_a_bound(seed: int) -> None:
    arrays = _arrays(seed)
    blob = _blob(arrays)
    squares = sum_of_squares_after_header(blob)
    assert squares is not None
    assert squares.start == 8 + int.from_bytes(blob[:8], "little")
    norm = l2_norm(arrays)
    assert math.sqrt(squares.value) == norm
    schema = Schema.of(arrays)
    assert decode_update(blob, schema=schema, squares=squares).norm == norm  # set even without a bound
    assert decode_update(blob, schema=schema, max_norm=norm, squares=squares).norm == norm
    with pytest.raises(CodecError) as info:
        decode_update(blob, schema=schema, max_norm=float(np.nextafter(norm, 0)), squares=squares)
    assert info.value.reason == "norm"


def test_a_sum_that_does_not_cover_exactly_the_tensors_is_ignored() -> None:
    arrays = _arrays()
    blob = _blob(arrays)
    squares = sum_of_squares_after_header(blob)
    assert squares is not None
    schema, norm = Schema.of(arrays), l2_norm(arrays)
    for wrong in (SumOfSquares(squares.start + 4, 1.0), SumOfSquares(squares.start - 8, 1.0)):
        assert decode_update(blob, schema=schema, squares=wrong).norm is None
        assert decode_update(blob, schema=schema, max_norm=1e9, squares=wrong).norm == norm


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_non_finite_value_is_refused_as_non_finite_with_the_sum_given(value: float) -> None:
    arrays = _arrays()
    blob = bytearray(_blob(arrays))
    np.frombuffer(blob, dtype="<f4", count=1, offset=len(blob) - 4)[0] = value
    squares = sum_of_squares_after_header(blob)
    assert squares is not None and not math.isfinite(squares.value)
    for bound in (None, 1e9):
        with pytest.raises(CodecError, match="'w'") as info:
            decode_update(bytes(blob), schema=Schema.of(arrays), max_norm=bound, squares=squares)
        assert info.value.reason == "non-finite"


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        b"\x08\x00\x00",  # shorter than the length prefix
        (1 << 20).to_bytes(8, "little") + b"x" * 64,  # a header longer than any the codec accepts
        (8).to_bytes(8, "little") + b"{}      " + b"\x00" * 6,  # not a whole number of float32 values
        (64).to_bytes(8, "little") + b"{}",  # a header longer than the blob
    ],
)
def test_bytes_with_no_float32_run_after_a_header_give_no_sum(blob: bytes) -> None:
    assert sum_of_squares_after_header(blob) is None
