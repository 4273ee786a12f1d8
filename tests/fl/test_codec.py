"""The canonical blob encoding: one byte string per value, and strict, total decoding."""

from __future__ import annotations

import hashlib
import io
import json
import math
import pickle
import struct
import zipfile
from fractions import Fraction

import numpy as np
import pytest
import safetensors.numpy
import safetensors.torch
import torch
from eth_utils import to_checksum_address
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import Tensor

from fedchain.errors import CodecError
from fedchain.fl import (
    CODEC,
    GENESIS_BASE,
    GENESIS_STRATEGY,
    ExpectedMeta,
    ModelMeta,
    ModelSpec,
    UpdateMeta,
    decode_model,
    decode_update,
    encode_model,
    encode_update,
    init_params,
    l2_norm,
    param_shapes,
)
from fedchain.fl._safetensors import render
from fedchain.types import Address, Digest, RoundId

TINY = ModelSpec(num_buckets=1024, dim=8)
ALICE = Address(to_checksum_address("0x" + "a1" * 20))
BOB = Address(to_checksum_address("0x" + "0b" * 20))

BASE = Digest(hashlib.sha256(b"round 3 base model").digest())
SHAPES = param_shapes(TINY)
META = UpdateMeta(RoundId(3), BASE, ALICE, 120)
PINNED_UPDATE_DIGEST = "6b50bb0ca52a59f1e94285a99254ad2f0313e22d04ded1d4cf0b823bb43c9f64"


def _delta() -> dict[str, Tensor]:
    gen = torch.Generator().manual_seed(5)
    return {name: torch.randn(shape, generator=gen) * 0.01 for name, shape in SHAPES.items()}


def _metadata(**changes: str | None) -> dict[str, str]:
    meta = {
        "base": "0x" + BASE.hex(),
        "codec": CODEC,
        "kind": "update",
        "round": "3",
        "samples": "120",
        "sender": ALICE,
    }
    for key, value in changes.items():
        if value is None:
            del meta[key]
        else:
            meta[key] = value
    return meta


def _craft(arrays: dict[str, np.ndarray] | None = None, **meta_changes: str | None) -> bytes:
    """A blob in canonical layout with arbitrary arrays and metadata (for malformed cases)."""
    if arrays is None:
        arrays = {n: t.numpy() for n, t in _delta().items()}
    return render(arrays, _metadata(**meta_changes))


def _decode(blob: bytes, **kwargs: object) -> object:
    return decode_update(blob, expected_shapes=SHAPES, **kwargs)  # type: ignore[arg-type]


def _reason(blob: bytes, **kwargs: object) -> str:
    with pytest.raises(CodecError) as info:
        _decode(blob, **kwargs)
    return info.value.reason


# --------------------------------------------------------------------------- round trip and canonical form


def test_an_update_round_trips_exactly() -> None:
    delta = _delta()
    decoded = decode_update(encode_update(delta, META), expected_shapes=SHAPES)
    assert decoded.meta == META
    assert list(decoded.delta) == sorted(SHAPES)
    for name in SHAPES:
        assert decoded.delta[name].dtype == torch.float32
        assert torch.equal(decoded.delta[name], delta[name])


def test_a_model_round_trips_with_its_spec() -> None:
    params = init_params(TINY, 1)
    meta = ModelMeta(RoundId(0), GENESIS_BASE, BOB, 0, TINY, GENESIS_STRATEGY)
    decoded = decode_model(encode_model(params, meta))
    assert decoded.meta == meta and decoded.spec == TINY
    assert all(torch.equal(decoded.params[n], params[n]) for n in params)


def test_the_same_values_give_the_same_bytes_whatever_the_insertion_order() -> None:
    delta = _delta()
    backwards = {name: delta[name].clone() for name in reversed(list(delta))}
    assert encode_update(delta, META) == encode_update(backwards, META)


def test_the_encoding_is_pinned_byte_for_byte() -> None:
    """Same tensors and metadata give these bytes on any machine (the hash the ledger records)."""
    delta = {"b": torch.tensor([1.0, -2.5]), "a": torch.arange(6, dtype=torch.float32).reshape(2, 3) / 4}
    blob = encode_update(delta, META)
    header_len = struct.unpack("<Q", blob[:8])[0]
    header = blob[8 : 8 + header_len]
    assert header_len % 8 == 0
    assert header.rstrip(b" ") == (
        b'{"__metadata__":{"base":"0x' + BASE.hex().encode() + b'","codec":"fedchain/f32-v1","kind":"update",'
        b'"round":"3","samples":"120","sender":"' + ALICE.encode() + b'"},'
        b'"a":{"data_offsets":[0,24],"dtype":"F32","shape":[2,3]},"b":{"data_offsets":[24,32],"dtype":"F32","shape":[2]}}'
    )
    assert blob[8 + header_len :] == np.array([0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.0, -2.5], dtype="<f4").tobytes()
    assert hashlib.sha256(blob).hexdigest() == PINNED_UPDATE_DIGEST


def test_blobs_are_ordinary_safetensors_files() -> None:
    delta = _delta()
    loaded = safetensors.torch.load(encode_update(delta, META))
    assert all(torch.equal(loaded[n], delta[n]) for n in delta)


def test_the_safetensors_library_output_is_rejected_as_non_canonical() -> None:
    # its serializer's metadata order is not fixed; we accept exactly one encoding
    arrays = {n: t.numpy() for n, t in _delta().items()}
    blob = safetensors.numpy.save(arrays, metadata=_metadata())
    if blob == _craft(arrays):
        pytest.skip("this safetensors release happens to write the canonical form")
    assert _reason(blob) == "non-canonical"


def test_whitespace_in_the_header_is_non_canonical() -> None:
    blob = _craft()
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8 : 8 + n])
    spaced = json.dumps(header, sort_keys=True).encode()
    spaced += b" " * (-len(spaced) % 8)
    assert _reason(struct.pack("<Q", len(spaced)) + spaced + blob[8 + n :]) == "non-canonical"


# --------------------------------------------------------------------------- not safetensors at all


def test_pickle_bytes_are_not_safetensors() -> None:
    for payload in (pickle.dumps(_delta()), pickle.dumps({"fc.bias": [0.0]}, protocol=2)):
        assert _reason(payload) == "not-safetensors"


def test_a_torch_save_zip_is_not_safetensors() -> None:
    buf = io.BytesIO()
    torch.save(_delta(), buf)
    assert _reason(buf.getvalue()) == "not-safetensors"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("x", "y")
    assert _reason(buf.getvalue()) == "not-safetensors"


def test_random_bytes_are_not_safetensors() -> None:
    rng = np.random.default_rng(0)
    for size in (64, 5000):
        blob = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        assert _reason(blob[:8] + b"\x00" + blob[9:]) == "not-safetensors"


def test_something_other_than_bytes_is_refused() -> None:
    assert _reason("a string") == "not-safetensors"  # type: ignore[arg-type]


# --------------------------------------------------------------------------- size and header limits


def test_a_header_claiming_gigabytes_is_refused_before_reading_it() -> None:
    assert _reason(struct.pack("<Q", 4 << 30) + b'{"__metadata__":{}}') == "header"


def test_a_header_longer_than_the_blob_is_truncated() -> None:
    blob = _craft()
    n = struct.unpack("<Q", blob[:8])[0]
    assert _reason(blob[: 8 + n // 2]) == "truncated"
    assert _reason(b"\x01\x00") == "truncated"


def test_a_blob_over_the_size_limit_is_refused() -> None:
    blob = _craft()
    assert _reason(blob, max_size=len(blob) - 1) == "too-large"
    _decode(blob, max_size=len(blob))


def test_enormous_metadata_is_refused() -> None:
    blob = _craft(extra="x" * 100_000)
    assert _reason(blob) == "too-large"  # larger than any blob of the expected shapes
    assert _reason(blob, max_size=10**9) == "header"  # and its header over the header limit


def test_deeply_nested_json_is_refused_without_crashing() -> None:
    nested = b'{"__metadata__":{},"x":' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    nested += b" " * (-len(nested) % 8)
    assert _reason(struct.pack("<Q", len(nested)) + nested, max_size=10**9) == "header"
    deep = b'{"__metadata__":{},"x":' + b"[" * 5_000 + b"]" * 5_000 + b"}"
    deep += b" " * (-len(deep) % 8)
    assert _reason(struct.pack("<Q", len(deep)) + deep) == "header"


@pytest.mark.parametrize(
    "header",
    [
        b'{"__metadata__":{},"__metadata__":{}}',
        b'{"__metadata__":{"round":3}}',
        b'{"__metadata__":{"a":"b"},"t":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}}',
        b'{"__metadata__":{"a":"b"},"t":{"dtype":"F32","shape":[1],"data_offsets":[0,NaN]}}',
        b'{"__metadata__":{"a":"b"},"t":{"dtype":"F32","shape":[1]}}',
        b'{"__metadata__":{"a":"b"},"t":[1,2,3]}',
        b"[1,2]",
        b'{"__metadata__":"\xff\xfe"}',
    ],
)
def test_malformed_headers_are_refused(header: bytes) -> None:
    header += b" " * (-len(header) % 8)
    assert _reason(struct.pack("<Q", len(header)) + header + bytes(4)) in {"header", "metadata", "not-safetensors"}


# --------------------------------------------------------------------------- tensors


def test_a_truncated_data_section_is_refused() -> None:
    blob = _craft()
    assert _reason(blob[:-7]) == "truncated"


def test_trailing_bytes_are_refused() -> None:
    assert _reason(_craft() + b"\x00" * 4) == "offsets"


def test_overlapping_or_gapped_offsets_are_refused() -> None:
    blob = _craft()
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8 : 8 + n])
    header["fc.bias"]["data_offsets"][0] -= 4
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    assert _reason(struct.pack("<Q", len(text)) + text + blob[8 + n :]) == "offsets"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_values_are_refused_naming_the_tensor(value: float) -> None:
    arrays = {n: t.numpy() for n, t in _delta().items()}
    arrays["fc.weight"][2, 3] = value
    with pytest.raises(CodecError, match="'fc.weight'") as info:
        _decode(_craft(arrays))
    assert info.value.reason == "non-finite"


@pytest.mark.parametrize("position", ["first", "middle", "last"])
def test_a_non_finite_value_is_found_wherever_it_is_in_a_large_blob(
    position: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fedchain.fl import codec

    monkeypatch.setattr(codec, "_FINITE_SLICE", 7)  # many slices, with a ragged last one
    arrays = {n: t.numpy() for n, t in _delta().items()}
    flat = arrays["fc.weight"].reshape(-1)
    flat[{"first": 0, "middle": flat.size // 2, "last": flat.size - 1}[position]] = float("nan")
    with pytest.raises(CodecError, match="'fc.weight'") as info:
        _decode(_craft(arrays))
    assert info.value.reason == "non-finite"


@pytest.mark.parametrize("dtype", [np.float64, np.float16, np.int64, np.int32])
def test_tensors_that_are_not_float32_are_refused(dtype: type) -> None:
    arrays = {n: t.numpy() for n, t in _delta().items()}
    arrays["fc.bias"] = arrays["fc.bias"].astype(dtype)
    with pytest.raises(CodecError, match="'fc.bias'") as info:
        _decode(_craft(arrays))
    assert info.value.reason == "dtype"


def test_a_bfloat16_tensor_is_refused() -> None:
    tensors = {n: t for n, t in _delta().items()}
    tensors["fc.bias"] = tensors["fc.bias"].to(torch.bfloat16)
    assert _reason(safetensors.torch.save(tensors, metadata=_metadata())) == "dtype"


def test_a_float32_header_over_float64_data_is_refused() -> None:
    assert _reason(_craft().replace(b'"F32"', b'"F64"', 1)) == "dtype"


def test_a_wrong_shape_is_refused_naming_the_tensor() -> None:
    arrays = {n: t.numpy() for n, t in _delta().items()}
    arrays["fc.weight"] = arrays["fc.weight"].T.copy()
    with pytest.raises(CodecError, match=r"'fc.weight' has shape \(8, 22\), expected \(22, 8\)") as info:
        _decode(_craft(arrays))
    assert info.value.reason == "shape"


def test_a_missing_tensor_is_refused() -> None:
    arrays = {n: t.numpy() for n, t in _delta().items() if n != "fc.bias"}
    with pytest.raises(CodecError, match="'fc.bias' is missing") as info:
        _decode(_craft(arrays))
    assert info.value.reason == "missing-tensor"


def test_an_extra_tensor_is_refused() -> None:
    arrays = {n: t.numpy() for n, t in _delta().items()}
    arrays["backdoor"] = np.zeros(3, dtype=np.float32)
    with pytest.raises(CodecError, match="'backdoor'") as info:
        _decode(_craft(arrays))
    assert info.value.reason == "unexpected-tensor"


def test_an_update_over_the_norm_bound_is_refused() -> None:
    delta = _delta()
    norm = l2_norm(delta)
    blob = encode_update(delta, META)
    _decode(blob, max_norm=norm)
    with pytest.raises(CodecError, match="exceeds the bound") as info:
        _decode(blob, max_norm=norm * 0.999)
    assert info.value.reason == "norm"


def test_the_norm_is_exactly_rounded() -> None:
    values = np.random.default_rng(1).standard_normal(10_000).astype(np.float32)
    exact = sum(Fraction(float(v)) ** 2 for v in values)
    assert l2_norm({"x": values}) == math.sqrt(float(exact))


# --------------------------------------------------------------------------- metadata


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"codec": "fedchain/f16-v9"}, "codec"),
        ({"codec": None}, "codec"),
        ({"kind": "model"}, "kind"),
        ({"round": None}, "metadata"),
        ({"sender": None}, "metadata"),
        ({"extra": "field"}, "metadata"),
        ({"round": "03"}, "metadata"),
        ({"round": "-1"}, "metadata"),
        ({"samples": "0"}, "metadata"),
        ({"samples": "1e3"}, "metadata"),
        ({"base": "0x" + "AB" * 32}, "metadata"),
        ({"base": "genesis"}, "metadata"),
        ({"sender": ALICE.lower()}, "metadata"),
        ({"sender": "0x1234"}, "metadata"),
    ],
)
def test_malformed_metadata_is_refused(changes: dict[str, str | None], reason: str) -> None:
    assert _reason(_craft(**changes)) == reason


@pytest.mark.parametrize(
    ("expect", "reason"),
    [
        (ExpectedMeta(round_id=4), "round"),
        (ExpectedMeta(base=Digest(bytes(32))), "base"),
        (ExpectedMeta(sender=BOB), "sender"),
        (ExpectedMeta(samples=121), "samples"),
    ],
)
def test_metadata_that_differs_from_the_ledger_is_refused(expect: ExpectedMeta, reason: str) -> None:
    blob = encode_update(_delta(), META)
    with pytest.raises(CodecError, match=f"'{reason}'") as info:
        _decode(blob, expect=expect)
    assert info.value.reason == reason


def test_metadata_equal_to_the_ledger_passes() -> None:
    blob = encode_update(_delta(), META)
    _decode(blob, expect=ExpectedMeta(round_id=3, base=BASE, sender=ALICE.lower(), samples=120))  # type: ignore[arg-type]


def test_a_model_with_another_spec_is_refused() -> None:
    params = init_params(TINY, 1)
    blob = encode_model(params, ModelMeta(RoundId(2), BASE, BOB, 500, TINY, "fedavg:server_lr=1.0"))
    with pytest.raises(CodecError) as info:
        decode_model(blob, spec=ModelSpec(num_buckets=2048, dim=8))
    assert info.value.reason == "spec"
    assert (
        decode_model(blob, spec=TINY, expect=ExpectedMeta(round_id=2, base=BASE, sender=BOB, samples=500)).meta.samples
        == 500
    )


def test_an_update_is_not_a_model_and_a_model_is_not_an_update() -> None:
    params = init_params(TINY, 1)
    model = encode_model(params, ModelMeta(RoundId(0), GENESIS_BASE, BOB, 0, TINY, GENESIS_STRATEGY))
    assert _reason(model) == "kind"
    with pytest.raises(CodecError) as info:
        decode_model(encode_update(_delta(), META))
    assert info.value.reason == "kind"


# --------------------------------------------------------------------------- encoding refuses what decoding would


def test_encoding_refuses_non_float32_and_non_finite_tensors() -> None:
    with pytest.raises(CodecError) as info:
        encode_update({"x": torch.zeros(3, dtype=torch.float64)}, META)
    assert info.value.reason == "dtype"
    with pytest.raises(CodecError) as info:
        encode_update({"x": torch.tensor([0.0, float("nan")])}, META)
    assert info.value.reason == "non-finite"


def test_encoding_refuses_bad_metadata() -> None:
    with pytest.raises(CodecError, match="checksummed"):
        encode_update(_delta(), UpdateMeta(RoundId(3), BASE, ALICE.lower(), 120))  # type: ignore[arg-type]
    with pytest.raises(CodecError, match="samples"):
        encode_update(_delta(), UpdateMeta(RoundId(3), BASE, ALICE, 0))
    with pytest.raises(CodecError, match="shape"):
        encode_model(
            init_params(TINY, 1),
            ModelMeta(RoundId(0), GENESIS_BASE, BOB, 0, ModelSpec(num_buckets=99, dim=8), GENESIS_STRATEGY),
        )


def test_every_single_byte_corruption_outside_the_data_is_refused() -> None:
    blob = encode_update({n: t[:1] if t.dim() == 1 else t[:1, :2] for n, t in _delta().items()}, META)
    shapes = {"embedding.weight": (1, 2), "fc.bias": (1,), "fc.weight": (1, 2)}
    expect = ExpectedMeta(round_id=3, base=BASE, sender=ALICE, samples=120)
    data_start = len(blob) - 4 * 5
    rng = np.random.default_rng(7)
    for i in range(len(blob)):
        for _ in range(3):
            corrupted = bytearray(blob)
            corrupted[i] ^= int(rng.integers(1, 256))
            try:
                decode_update(bytes(corrupted), expected_shapes=shapes, expect=expect)
            except CodecError:
                continue
            assert i >= data_start, f"byte {i} changed and the blob still decoded"


# --------------------------------------------------------------------------- fuzzing


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_only_ever_raise_codec_error(blob: bytes) -> None:
    with pytest.raises(CodecError):
        _decode(blob)
    with pytest.raises(CodecError):
        decode_model(blob)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_edited_blobs_only_ever_raise_codec_error_or_decode(data: st.DataObject) -> None:
    blob = bytearray(encode_update({n: t[:2] if t.dim() == 1 else t[:2, :3] for n, t in _delta().items()}, META))
    shapes = {"embedding.weight": (2, 3), "fc.bias": (2,), "fc.weight": (2, 3)}
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(blob)))
        action = data.draw(st.sampled_from(["flip", "insert", "delete", "cut"]))
        if action == "flip" and at < len(blob):
            blob[at] = data.draw(st.integers(0, 255))
        elif action == "insert":
            blob[at:at] = data.draw(st.binary(min_size=1, max_size=8))
        elif action == "delete":
            del blob[at : at + data.draw(st.integers(1, 8))]
        else:
            del blob[at:]
    try:
        decode_update(bytes(blob), expected_shapes=shapes, max_norm=1e6)
    except CodecError:
        pass
