"""The canonical blob encoding: one byte string per value, and strict, total decoding."""

from __future__ import annotations

import hashlib
import io
import json
import math
import pickle
import struct
import subprocess
import sys
import zipfile
from fractions import Fraction

import numpy as np
import pytest
import safetensors.numpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedchain.errors import AggregationError, CodecError
from fedchain.fl import (
    CODEC,
    GENESIS_BASE,
    GENESIS_STRATEGY,
    ExpectedMeta,
    ModelMeta,
    Schema,
    UpdateMeta,
    decode_model,
    decode_update,
    encode_model,
    encode_update,
    fedavg_stream,
    is_checksum_address,
    l2_norm,
    model_blob_matches,
)
from fedchain.fl._safetensors import render
from fedchain.types import Address, Digest, RoundId

ALICE = Address("0xA1A1a1a1A1A1A1A1A1a1a1a1a1a1A1A1a1A1a1a1")  # EIP-55 of 0xa1a1...
BOB = Address("0x0B0b0b0b0B0B0B0B0b0b0b0b0B0B0B0B0B0b0B0b")  # EIP-55 of 0x0b0b...


def _icd_shapes(num_buckets: int, dim: int, num_classes: int = 22) -> dict[str, tuple[int, ...]]:
    """The tensors of the ICD task's model (what ``param_shapes(ModelSpec(...))`` gave)."""
    return {"embedding.weight": (num_buckets, dim), "fc.bias": (num_classes,), "fc.weight": (num_classes, dim)}


#: The ICD model's description, ``ModelSpec(num_buckets=1024, dim=8).to_json()``, as the task writes it.
TINY = '{"dim":8,"ngram":2,"num_buckets":1024,"num_classes":22}'
BASE = Digest(hashlib.sha256(b"round 3 base model").digest())
SHAPES = _icd_shapes(1024, 8)
SCHEMA = Schema.from_shapes(SHAPES)
META = UpdateMeta(RoundId(3), BASE, ALICE, 120)
PINNED_UPDATE_DIGEST = "6b50bb0ca52a59f1e94285a99254ad2f0313e22d04ded1d4cf0b823bb43c9f64"


def _delta(seed: int = 5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(shape).astype(np.float32) * np.float32(0.01) for name, shape in SHAPES.items()}


def _params(seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.uniform(-0.1, 0.1, shape).astype(np.float32) for name, shape in SHAPES.items()}


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
        arrays = _delta()
    return render(arrays, _metadata(**meta_changes))


def _decode(blob: bytes, **kwargs: object) -> object:
    return decode_update(blob, schema=SCHEMA, **kwargs)  # type: ignore[arg-type]


def _reason(blob: bytes, **kwargs: object) -> str:
    with pytest.raises(CodecError) as info:
        _decode(blob, **kwargs)
    return info.value.reason


# --------------------------------------------------------------------------- round trip and canonical form


def test_an_update_round_trips_exactly() -> None:
    delta = _delta()
    decoded = decode_update(encode_update(delta, META), schema=SCHEMA)
    assert decoded.meta == META and decoded.meta.metrics == {}
    assert list(decoded.delta) == sorted(SHAPES)
    for name in SHAPES:
        assert decoded.delta[name].dtype == np.float32 and decoded.delta[name].flags.c_contiguous
        assert decoded.delta[name].tobytes() == delta[name].tobytes()


def test_a_model_round_trips_with_its_spec() -> None:
    params = _params()
    meta = ModelMeta(RoundId(0), GENESIS_BASE, BOB, 0, TINY, GENESIS_STRATEGY)
    blob = encode_model(params, meta, schema=SCHEMA)
    for schema in (SCHEMA, None):
        decoded = decode_model(blob, schema=schema, model=TINY)
        assert decoded.meta == meta and decoded.meta.model == TINY and decoded.schema == SCHEMA
        assert all(decoded.params[n].tobytes() == params[n].tobytes() for n in params)
    assert model_blob_matches(blob, params, meta, schema=SCHEMA)
    assert not model_blob_matches(blob, _params(2), meta)


def test_the_same_values_give_the_same_bytes_whatever_the_insertion_order() -> None:
    delta = _delta()
    backwards = {name: delta[name].copy() for name in reversed(list(delta))}
    assert encode_update(delta, META) == encode_update(backwards, META)


def test_any_memory_layout_gives_the_same_bytes() -> None:
    delta = _delta()
    strided = {n: np.asfortranarray(a) if a.ndim == 2 else a[::-1].copy()[::-1] for n, a in delta.items()}
    big_endian = {n: a.astype(">f4").astype(np.float32) for n, a in delta.items()}
    assert not strided["fc.weight"].flags.c_contiguous and not strided["fc.bias"].flags.c_contiguous
    assert encode_update(delta, META) == encode_update(strided, META) == encode_update(big_endian, META)


def test_the_encoding_is_pinned_byte_for_byte() -> None:
    """Same tensors and metadata give these bytes on any machine (the hash the ledger records)."""
    delta = {"b": np.array([1.0, -2.5], dtype=np.float32), "a": np.arange(6, dtype=np.float32).reshape(2, 3) / 4}
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
    loaded = safetensors.numpy.load(encode_update(delta, META))
    assert sorted(loaded) == sorted(delta)
    assert all(loaded[n].dtype == np.float32 and loaded[n].tobytes() == delta[n].tobytes() for n in delta)


def test_the_safetensors_library_output_is_rejected_as_non_canonical() -> None:
    # its serializer's metadata order is not fixed; we accept exactly one encoding
    # (it writes each tensor's keys as dtype, shape, data_offsets; ours are sorted). Should a
    # release ever write our form, this fails: then the equality below is worth knowing.
    arrays = _delta()
    blob = safetensors.numpy.save(arrays, metadata=_metadata())
    ours = _craft(arrays)
    n, m = struct.unpack("<Q", blob[:8])[0], struct.unpack("<Q", ours[:8])[0]
    assert json.loads(blob[8 : 8 + n]) == json.loads(ours[8 : 8 + m])  # the same content
    assert blob[8 + n :] == ours[8 + m :]  # the same data
    assert blob != ours
    assert _reason(blob) == "non-canonical"


@pytest.mark.parametrize("order", ["library key order", "unsorted metadata", "unsorted tensors"])
def test_the_same_header_in_another_key_order_is_non_canonical(order: str) -> None:
    blob = _craft()
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8 : 8 + n])
    if order == "library key order":
        tensor = {k: header[k] for k in header if k != "__metadata__"}
        reordered = {"__metadata__": header["__metadata__"]}
        reordered |= {k: {f: v[f] for f in ("dtype", "shape", "data_offsets")} for k, v in tensor.items()}
    elif order == "unsorted metadata":
        reordered = {**header, "__metadata__": dict(reversed(list(header["__metadata__"].items())))}
    else:
        reordered = dict(reversed(list(header.items())))
    text = json.dumps(reordered, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    assert json.loads(text) == header and text != blob[8 : 8 + n]
    assert _reason(struct.pack("<Q", len(text)) + text + blob[8 + n :]) == "non-canonical"


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
    import torch

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
    arrays = _delta()
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
    arrays = _delta()
    flat = arrays["fc.weight"].reshape(-1)
    flat[{"first": 0, "middle": flat.size // 2, "last": flat.size - 1}[position]] = float("nan")
    with pytest.raises(CodecError, match="'fc.weight'") as info:
        _decode(_craft(arrays))
    assert info.value.reason == "non-finite"


@pytest.mark.parametrize("dtype", [np.float64, np.float16, np.int64, np.int32])
def test_tensors_that_are_not_float32_are_refused(dtype: type) -> None:
    arrays = _delta()
    arrays["fc.bias"] = arrays["fc.bias"].astype(dtype)
    with pytest.raises(CodecError, match="'fc.bias'") as info:
        _decode(_craft(arrays))
    assert info.value.reason == "dtype"


def test_a_bfloat16_tensor_is_refused() -> None:
    import safetensors.torch
    import torch

    tensors = {n: torch.from_numpy(a) for n, a in _delta().items()}
    tensors["fc.bias"] = tensors["fc.bias"].to(torch.bfloat16)
    assert _reason(safetensors.torch.save(tensors, metadata=_metadata())) == "dtype"


def test_a_float32_header_over_float64_data_is_refused() -> None:
    assert _reason(_craft().replace(b'"F32"', b'"F64"', 1)) == "dtype"


def test_a_wrong_shape_is_refused_naming_the_tensor() -> None:
    arrays = _delta()
    arrays["fc.weight"] = arrays["fc.weight"].T.copy()
    with pytest.raises(CodecError, match=r"'fc.weight' has shape \(8, 22\), expected \(22, 8\)") as info:
        _decode(_craft(arrays))
    assert info.value.reason == "shape"


def test_a_missing_tensor_is_refused() -> None:
    arrays = {n: a for n, a in _delta().items() if n != "fc.bias"}
    with pytest.raises(CodecError, match="'fc.bias' is missing") as info:
        _decode(_craft(arrays))
    assert info.value.reason == "missing-tensor"


def test_an_extra_tensor_is_refused() -> None:
    arrays = _delta()
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
    delta = _delta()
    blob = encode_update(delta, META)
    expect = ExpectedMeta(round_id=3, base=BASE, sender=Address(ALICE.lower()), samples=120)  # any casing
    decoded = decode_update(blob, schema=SCHEMA, expect=expect)
    assert decoded.meta == META
    assert all(decoded.delta[n].tobytes() == delta[n].tobytes() for n in SHAPES)


def test_a_model_with_another_description_or_schema_is_refused() -> None:
    blob = encode_model(_params(), ModelMeta(RoundId(2), BASE, BOB, 500, TINY, "fedavg:server_lr=1.0"))
    with pytest.raises(CodecError, match="expected") as info:
        decode_model(blob, schema=SCHEMA, model=TINY.replace("1024", "2048"))
    assert info.value.reason == "spec"
    with pytest.raises(CodecError, match="'embedding.weight' has shape") as info:
        decode_model(blob, schema=Schema.from_shapes(_icd_shapes(2048, 8)), model=TINY)
    assert info.value.reason == "shape"
    with pytest.raises(CodecError, match="'z' is missing") as info:
        decode_model(blob, schema=Schema.from_shapes({**SHAPES, "z": (1,)}), model=TINY)
    assert info.value.reason == "missing-tensor"
    smaller = Schema.from_shapes({n: s for n, s in SHAPES.items() if n != "fc.bias"})
    with pytest.raises(CodecError, match="'fc.bias' is not in the schema") as info:
        decode_model(blob, schema=smaller)
    assert info.value.reason == "unexpected-tensor"
    expect = ExpectedMeta(round_id=2, base=BASE, sender=BOB, samples=500)
    assert decode_model(blob, schema=SCHEMA, model=TINY, expect=expect).meta.samples == 500


@pytest.mark.parametrize("model", ["", "x" * 2001, "caf\u00e9", "tab\there", "line\n", "nul\x00"])
def test_a_model_description_must_be_short_printable_ascii(model: str) -> None:
    params = _params()
    with pytest.raises(CodecError, match="printable ASCII") as info:
        encode_model(params, ModelMeta(RoundId(0), GENESIS_BASE, BOB, 0, model, GENESIS_STRATEGY))
    assert info.value.reason == "metadata"
    crafted = render(
        params, _metadata(kind="model", sender=BOB, samples="0", round="0", spec=model, strategy=GENESIS_STRATEGY)
    )
    with pytest.raises(CodecError) as info:
        decode_model(crafted, schema=SCHEMA)
    assert info.value.reason == "spec"
    longest = "x" * 2000
    blob = encode_model(params, ModelMeta(RoundId(0), GENESIS_BASE, BOB, 0, longest, GENESIS_STRATEGY))
    assert decode_model(blob, schema=SCHEMA, model=longest).meta.model == longest


def test_the_icd_model_header_is_pinned_byte_for_byte() -> None:
    """The ``spec`` key still holds ``ModelSpec.to_json()``: an ICD model blob keeps its bytes."""
    params = {"fc.bias": np.array([0.5], dtype=np.float32)}
    blob = encode_model(params, ModelMeta(RoundId(0), GENESIS_BASE, BOB, 0, TINY, GENESIS_STRATEGY))
    header_len = struct.unpack("<Q", blob[:8])[0]
    assert blob[8 : 8 + header_len].rstrip(b" ") == (
        b'{"__metadata__":{"base":"0x' + b"0" * 64 + b'","codec":"fedchain/f32-v1","kind":"model","round":"0",'
        b'"samples":"0","sender":"' + BOB.encode() + b'","spec":"{\\"dim\\":8,\\"ngram\\":2,\\"num_buckets\\":1024,'
        b'\\"num_classes\\":22}","strategy":"genesis"},"fc.bias":{"data_offsets":[0,4],"dtype":"F32","shape":[1]}}'
    )


def test_an_update_is_not_a_model_and_a_model_is_not_an_update() -> None:
    model = encode_model(_params(), ModelMeta(RoundId(0), GENESIS_BASE, BOB, 0, TINY, GENESIS_STRATEGY))
    assert _reason(model) == "kind"
    with pytest.raises(CodecError) as info:
        decode_model(encode_update(_delta(), META), schema=None)
    assert info.value.reason == "kind"


# --------------------------------------------------------------------------- metrics


def test_metrics_travel_in_the_update_header_in_canonical_form() -> None:
    meta = UpdateMeta(RoundId(3), BASE, ALICE, 120, {"loss": 1.25, "accuracy": 0.1, "top-5.acc_x": 1, "neg": -0.0})
    blob = encode_update(_delta(), meta)
    header_len = struct.unpack("<Q", blob[:8])[0]
    assert (
        b'"metrics":"{\\"accuracy\\":0.1,\\"loss\\":1.25,\\"neg\\":-0.0,\\"top-5.acc_x\\":1.0}"'
        in blob[8 : 8 + header_len]
    )
    decoded = decode_update(blob, schema=SCHEMA)
    assert decoded.meta.metrics == {"accuracy": 0.1, "loss": 1.25, "neg": -0.0, "top-5.acc_x": 1.0}
    assert math.copysign(1.0, decoded.meta.metrics["neg"]) == -1.0
    assert all(type(v) is float for v in decoded.meta.metrics.values())
    assert encode_update(decoded.delta, decoded.meta) == blob


def test_an_update_without_metrics_has_no_metrics_key() -> None:
    blob = encode_update(_delta(), UpdateMeta(RoundId(3), BASE, ALICE, 120, {}))
    assert blob == encode_update(_delta(), META) and b"metrics" not in blob


@pytest.mark.parametrize(
    "metrics",
    [
        {"": 1.0},
        {"a" * 65: 1.0},
        {"sp ace": 1.0},
        {"caf\u00e9": 1.0},
        {"nan": float("nan")},
        {"inf": float("inf")},
        {"flag": True},
        {"text": "1.0"},
        {f"m{i}": 0.0 for i in range(33)},
    ],
)
def test_bad_metrics_are_refused_by_the_encoder(metrics: dict[str, object]) -> None:
    with pytest.raises(CodecError) as info:
        encode_update(_delta(), UpdateMeta(RoundId(3), BASE, ALICE, 120, metrics))  # type: ignore[arg-type]
    assert info.value.reason == "metadata"


def test_thirty_two_metrics_of_the_longest_names_are_accepted() -> None:
    metrics = {f"{i:02d}" + "m" * 62: float(i) / 3 for i in range(32)}
    blob = encode_update(_delta(), UpdateMeta(RoundId(3), BASE, ALICE, 120, metrics))
    assert decode_update(blob, schema=SCHEMA).meta.metrics == metrics


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"loss":1.25}', None),
        ('{"loss": 1.25}', "non-canonical"),
        ('{"loss":1.250}', "non-canonical"),
        ('{"loss":1}', "non-canonical"),
        ('{"loss":125e-2}', "non-canonical"),
        ('{"b":1.0,"a":2.0}', "non-canonical"),
        ('{"loss":1.25,"loss":1.25}', "metadata"),
        ('{"loss":NaN}', "metadata"),
        ('{"loss":Infinity}', "metadata"),
        ('{"loss":1e999}', "metadata"),
        ('{"loss":"1.25"}', "non-canonical"),
        ('{"bad name":1.0}', "metadata"),
        ("{}", "metadata"),
        ("[1.0]", "metadata"),
        ("1.0", "metadata"),
        ("{", "metadata"),
        ("[" * 10_000 + "]" * 10_000, "metadata"),
    ],
)
def test_a_header_s_metrics_must_be_canonical(text: str, reason: str | None) -> None:
    blob = _craft(metrics=text)
    if reason is None:
        assert _decode(blob).meta.metrics == {"loss": 1.25}  # type: ignore[attr-defined]
    else:
        assert _reason(blob, max_size=10**6) == reason


# --------------------------------------------------------------------------- encoding refuses what decoding would


def test_encoding_refuses_non_float32_and_non_finite_arrays() -> None:
    for bad in (np.zeros(3, dtype=np.float64), np.zeros(3, dtype=np.float16), [0.0, 1.0], np.float32(1.0)):
        with pytest.raises(CodecError, match="expected a numpy float32 array") as info:
            encode_update({"x": bad}, META)  # type: ignore[dict-item]
        assert info.value.reason == "dtype"
    with pytest.raises(CodecError) as info:
        encode_update({"x": np.array([0.0, np.nan], dtype=np.float32)}, META)
    assert info.value.reason == "non-finite"


def test_a_torch_tensor_is_refused_everywhere_not_converted() -> None:
    import torch

    tensors = {n: torch.from_numpy(a) for n, a in _delta().items()}
    model_meta = ModelMeta(RoundId(0), GENESIS_BASE, BOB, 0, TINY, GENESIS_STRATEGY)
    for encode in (lambda: encode_update(tensors, META), lambda: encode_model(tensors, model_meta)):
        with pytest.raises(CodecError, match=r"torch\.Tensor: expected a numpy float32 array") as info:
            encode()  # type: ignore[arg-type]
        assert info.value.reason == "dtype"
    with pytest.raises(CodecError, match="expected a numpy float32 array"):
        l2_norm(tensors)  # type: ignore[arg-type]
    with pytest.raises(AggregationError, match="expected a numpy float32 array"):
        fedavg_stream(tensors, [], total_samples=0)  # type: ignore[arg-type]
    with pytest.raises(AggregationError, match="expected a numpy float32 array"):
        fedavg_stream(_delta(), [(ALICE, 1, tensors)], total_samples=1)  # type: ignore[list-item]


def test_encoding_refuses_bad_metadata() -> None:
    with pytest.raises(CodecError, match="checksummed"):
        encode_update(_delta(), UpdateMeta(RoundId(3), BASE, Address(ALICE.lower()), 120))
    with pytest.raises(CodecError, match="samples"):
        encode_update(_delta(), UpdateMeta(RoundId(3), BASE, ALICE, 0))
    with pytest.raises(CodecError, match="shape") as info:
        encode_model(
            _params(),
            ModelMeta(RoundId(0), GENESIS_BASE, BOB, 0, TINY, GENESIS_STRATEGY),
            schema=Schema.from_shapes(_icd_shapes(99, 8)),
        )
    assert info.value.reason == "shape"
    with pytest.raises(CodecError, match="'fc.bias' is missing") as info:
        encode_update({n: a for n, a in _delta().items() if n != "fc.bias"}, META, schema=SCHEMA)
    assert info.value.reason == "missing-tensor"


def test_the_eip55_check_is_the_standard_one() -> None:
    # the EIP-55 specification's own examples
    for good in (
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
        "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
        "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
        "0x52908400098527886E0F7030069857D2E4169EE7",
        "0xde709f2102306220921060314715629080e2fb77",
    ):
        assert is_checksum_address(good)
        assert not is_checksum_address(good[:-1] + ("0" if good[-1] != "0" else "1") + "0")
    for bad in ("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD", "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed", "0x12", 7):
        assert not is_checksum_address(bad)  # type: ignore[arg-type]


def test_the_audit_path_imports_neither_torch_nor_eth_utils() -> None:
    code = (
        "import sys\n"
        "for name in ('torch', 'eth_utils', 'web3'): sys.modules[name] = None\n"
        "import fedchain.fl, fedchain.fl.codec, fedchain.fl.strategy, fedchain.fl.schema\n"
        "print(sorted(m for m in sys.modules if m.startswith('fedchain')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    loaded = set(json.loads(out.stdout.replace("'", '"')))
    assert {"fedchain.fl.codec", "fedchain.fl.strategy", "fedchain.fl._aggregate"} <= loaded
    assert not {"fedchain.fl.model", "fedchain.fl.train", "fedchain.fl.data", "fedchain.fl.simulate"} & loaded


def test_every_single_byte_corruption_outside_the_data_is_refused() -> None:
    blob = encode_update({n: t[:1] if t.ndim == 1 else t[:1, :2] for n, t in _delta().items()}, META)
    shapes = Schema.from_shapes({"embedding.weight": (1, 2), "fc.bias": (1,), "fc.weight": (1, 2)})
    expect = ExpectedMeta(round_id=3, base=BASE, sender=ALICE, samples=120)
    data_start = len(blob) - 4 * 5
    rng = np.random.default_rng(7)
    for i in range(len(blob)):
        for _ in range(3):
            corrupted = bytearray(blob)
            corrupted[i] ^= int(rng.integers(1, 256))
            try:
                decode_update(bytes(corrupted), schema=shapes, expect=expect)
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
        decode_model(blob, schema=None)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_edited_blobs_only_ever_raise_codec_error_or_decode(data: st.DataObject) -> None:
    meta = UpdateMeta(RoundId(3), BASE, ALICE, 120, {"loss": 0.5})
    blob = bytearray(encode_update({n: t[:2] if t.ndim == 1 else t[:2, :3] for n, t in _delta().items()}, meta))
    shapes = Schema.from_shapes({"embedding.weight": (2, 3), "fc.bias": (2,), "fc.weight": (2, 3)})
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
        decoded = decode_update(bytes(blob), schema=shapes, max_norm=1e6)
    except CodecError:
        return
    # whatever decodes is exactly what the encoder writes for what it holds: nothing else passes
    assert encode_update(decoded.delta, decoded.meta) == bytes(blob)
