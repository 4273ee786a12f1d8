"""With a norm bound the decoder computes the norm before the finiteness pass; the outcomes are the same."""

from __future__ import annotations

import numpy as np
import pytest

from fedchain.errors import CodecError
from fedchain.fl import Schema, decode_update
from fedchain.fl.codec import UpdateMeta, encode_update, l2_norm
from fedchain.types import Address, Digest, RoundId


def _blob(arrays: dict[str, np.ndarray]) -> bytes:
    meta = UpdateMeta(RoundId(1), Digest(bytes(32)), Address("0xABaBaBaBABabABabAbAbABAbABabababaBaBABaB"), 10, {})
    return encode_update(arrays, meta)


def _arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {"b": rng.standard_normal(5).astype(np.float32), "w": rng.standard_normal((3, 4)).astype(np.float32)}


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_non_finite_value_is_refused_as_non_finite_even_with_a_norm_bound(value: float) -> None:
    arrays = _arrays()
    blob = bytearray(_blob(arrays))
    good = decode_update(bytes(blob), schema=Schema.of(arrays), max_norm=1e9)
    # the same blob with one value replaced in place (the encoder refuses non-finite values)
    data = np.frombuffer(blob, dtype="<f4", count=17, offset=len(blob) - 17 * 4)
    data[6] = value
    with pytest.raises(CodecError, match="'w'") as info:
        decode_update(bytes(blob), schema=Schema.of(arrays), max_norm=1e9)
    assert info.value.reason == "non-finite"
    assert good.norm == l2_norm(arrays)


def test_the_norm_is_returned_with_a_bound_and_checked_against_it() -> None:
    arrays = _arrays()
    norm = l2_norm(arrays)
    assert decode_update(_blob(arrays), schema=Schema.of(arrays), max_norm=norm).norm == norm
    with pytest.raises(CodecError) as info:
        decode_update(_blob(arrays), schema=Schema.of(arrays), max_norm=float(np.nextafter(norm, 0)))
    assert info.value.reason == "norm"
    assert decode_update(_blob(arrays), schema=Schema.of(arrays)).norm is None
