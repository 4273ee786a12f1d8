"""The canonical encoding of updates and models: safetensors, written and read strictly.

One tensor dict plus its metadata has exactly one byte string, on any machine::

    u64 little-endian N | header: N bytes of JSON, padded with spaces to a multiple of 8 | data

The header is compact JSON with sorted keys: ``__metadata__`` (all strings) and, per tensor,
``{"data_offsets": [a, b], "dtype": "F32", "shape": [...]}``; tensors are laid out in sorted
name order, contiguous, little-endian float32. That is the safetensors format (any safetensors
reader loads these blobs), but the writer is ours so that the bytes do not depend on a
library version, and the reader is ours so that hostile bytes are rejected before anything
is allocated: the header length is bounded before it is read, the JSON is bounded in size and
depth, and offsets are checked against the blob before any tensor is built. Nothing here
ever unpickles: a pickle or zip payload is simply "not safetensors".

Metadata binds a blob to its place in the federation: ``kind`` (``update`` or ``model``),
``codec`` (:data:`CODEC`), ``round`` (``genesis`` for the genesis model), ``base`` (0x
sha256 of the base model; empty for genesis), ``sender`` (checksummed address), ``samples``
and, for models, ``spec``.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fedchain.errors import CodecError
from fedchain.fl.model import ModelSpec, init_params, param_shapes

CODEC = "fedchain/f32-v1"
#: Largest header accepted, in bytes (the metadata is small; the tensor table is a few lines).
MAX_HEADER_SIZE = 64 * 1024
_MAX_DEPTH = 4
_DTYPE = "F32"
_META_KEYS_UPDATE = {"kind", "codec", "round", "base", "sender", "samples"}
_META_KEYS_MODEL = _META_KEYS_UPDATE | {"spec"}


@dataclass(frozen=True)
class BlobMeta:
    """The metadata a blob carries."""

    kind: str
    round: str
    base: str
    sender: str
    samples: int
    spec: str | None = None


@dataclass(frozen=True)
class DecodedUpdate:
    """A validated update: its delta tensors and metadata."""

    delta: dict[str, Tensor]
    meta: BlobMeta


@dataclass(frozen=True)
class DecodedModel:
    """A validated model: its spec, parameters and metadata."""

    spec: ModelSpec
    params: dict[str, Tensor]
    meta: BlobMeta


# --------------------------------------------------------------------------- encoding


def _encode(tensors: Mapping[str, Tensor | np.ndarray], metadata: Mapping[str, str]) -> bytes:
    header: dict[str, Any] = {"__metadata__": dict(sorted(metadata.items()))}
    chunks: list[bytes] = []
    offset = 0
    for name in sorted(tensors):
        value = tensors[name]
        array = value.detach().cpu().numpy() if isinstance(value, Tensor) else np.asarray(value)
        if array.dtype != np.float32:
            raise CodecError("dtype", f"tensor {name} is {array.dtype}, the codec stores float32 only")
        data = np.ascontiguousarray(array, dtype="<f4").tobytes()
        header[name] = {"data_offsets": [offset, offset + len(data)], "dtype": _DTYPE, "shape": list(array.shape)}
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def encode_update(delta: Mapping[str, Tensor], *, round_id: int, base_hash: bytes, sender: str, num_samples: int) -> bytes:
    """Encode a participant's update for ``round_id`` built on the model ``base_hash``."""
    return _encode(delta, {"kind": "update", "codec": CODEC, "round": str(int(round_id)), "base": "0x" + bytes(base_hash).hex(), "sender": sender, "samples": str(int(num_samples))})


def encode_aggregate(params: Mapping[str, Tensor], *, spec: ModelSpec, round_id: int, base_hash: bytes, sender: str, num_samples: int) -> bytes:
    """Encode round ``round_id``'s aggregated model (``sender`` is the coordinator)."""
    meta = {"kind": "model", "codec": CODEC, "round": str(int(round_id)), "base": "0x" + bytes(base_hash).hex(), "sender": sender, "samples": str(int(num_samples)), "spec": spec.to_json()}
    return _encode(params, meta)


def encode_genesis(spec: ModelSpec, *, seed: int, sender: str) -> bytes:
    """Encode the genesis model: fresh parameters of ``spec`` drawn from ``seed``."""
    meta = {"kind": "model", "codec": CODEC, "round": "genesis", "base": "", "sender": sender, "samples": "0", "spec": spec.to_json()}
    return _encode(init_params(spec, seed), meta)


# --------------------------------------------------------------------------- decoding


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise CodecError("header", f"duplicate key {key!r} in header")
        out[key] = value
    return out


def _depth(value: Any, level: int = 0) -> int:
    if level > _MAX_DEPTH:
        return level
    if isinstance(value, dict):
        return max([_depth(v, level + 1) for v in value.values()], default=level + 1)
    if isinstance(value, list):
        return max([_depth(v, level + 1) for v in value], default=level + 1)
    return level


def _parse(blob: bytes, max_size: int | None) -> tuple[dict[str, Any], dict[str, Any], memoryview]:
    if max_size is not None and len(blob) > max_size:
        raise CodecError("too-large", f"blob of {len(blob)} bytes exceeds the limit of {max_size}")
    if len(blob) < 8:
        raise CodecError("not-safetensors", f"{len(blob)} bytes is too short to be a safetensors blob")
    (n,) = struct.unpack_from("<Q", blob, 0)
    if n > MAX_HEADER_SIZE:
        raise CodecError("header", f"header claims {n} bytes, more than the limit of {MAX_HEADER_SIZE}")
    if 8 + n > len(blob):
        raise CodecError("truncated", f"header claims {n} bytes but the blob has {len(blob) - 8} after the length")
    raw = bytes(blob[8 : 8 + n])
    if not raw.startswith(b"{"):
        raise CodecError("not-safetensors", "the header is not a JSON object (pickle, zip or random bytes?)")
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_reject_duplicates)
    except CodecError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise CodecError("not-safetensors", f"the header is not valid JSON: {err}") from err
    if not isinstance(header, dict):
        raise CodecError("not-safetensors", "the header is not a JSON object")
    if _depth(header) > 3:
        raise CodecError("header", "the header is nested deeper than a safetensors header can be")
    meta = header.pop("__metadata__", None)
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise CodecError("metadata", "missing __metadata__, or a value that is not a string")
    return header, meta, memoryview(blob)[8 + n :]


def _meta(meta: dict[str, Any], kind: str) -> BlobMeta:
    keys = _META_KEYS_MODEL if kind == "model" else _META_KEYS_UPDATE
    if set(meta) != keys:
        missing, extra = sorted(keys - set(meta)), sorted(set(meta) - keys)
        raise CodecError("metadata", f"metadata keys wrong: missing {missing}, unexpected {extra}")
    if meta["codec"] != CODEC:
        raise CodecError("codec", f"unknown codec {meta['codec'][:64]!r} (known: {CODEC})")
    if meta["kind"] != kind:
        raise CodecError("metadata", f"a {meta['kind'][:32]!r} blob where a {kind} was expected")
    try:
        samples = int(meta["samples"])
    except ValueError as err:
        raise CodecError("metadata", f"samples {meta['samples'][:32]!r} is not an integer") from err
    return BlobMeta(kind=kind, round=meta["round"], base=meta["base"], sender=meta["sender"], samples=samples, spec=meta.get("spec"))


def _tensors(header: dict[str, Any], data: memoryview, expected: Mapping[str, tuple[int, ...]], *, max_norm: float | None) -> dict[str, Tensor]:
    if set(header) != set(expected):
        missing, extra = sorted(set(expected) - set(header)), sorted(set(header) - set(expected))
        raise CodecError("names", f"tensor names wrong: missing {missing}, unexpected {[e[:64] for e in extra[:5]]}")
    offset = 0
    for name in sorted(header):
        entry = header[name]
        if not isinstance(entry, dict) or set(entry) != {"data_offsets", "dtype", "shape"}:
            raise CodecError("header", f"tensor {name}: malformed entry")
        if entry["dtype"] != _DTYPE:
            raise CodecError("dtype", f"tensor {name} is {str(entry['dtype'])[:16]}, expected {_DTYPE}")
        shape = entry["shape"]
        if not isinstance(shape, list) or tuple(shape) != tuple(expected[name]):
            raise CodecError("shape", f"tensor {name} has shape {str(shape)[:64]}, the base model's is {list(expected[name])}")
        size = 4 * int(np.prod(expected[name], dtype=np.int64))
        offsets = entry["data_offsets"]
        if offsets != [offset, offset + size]:
            raise CodecError("header", f"tensor {name}: data offsets {str(offsets)[:64]} are not [{offset}, {offset + size}] (canonical layout)")
        offset += size
    if offset != len(data):
        what = "truncated" if offset > len(data) else "trailing"
        raise CodecError("truncated" if offset > len(data) else "header", f"{what} data: tensors need {offset} bytes, the blob has {len(data)}")
    out: dict[str, Tensor] = {}
    sq = 0.0
    for name in sorted(header):
        lo, hi = header[name]["data_offsets"]
        array = np.frombuffer(data[lo:hi], dtype="<f4").reshape(expected[name])
        if not np.isfinite(array).all():
            bad = int(np.count_nonzero(~np.isfinite(array)))
            raise CodecError("non-finite", f"tensor {name} has {bad} NaN or infinite values")
        if max_norm is not None:
            sq += float(np.dot(array.ravel().astype(np.float64), array.ravel().astype(np.float64)))
        out[name] = torch.from_numpy(array.astype(np.float32, copy=True))
    if max_norm is not None and sq**0.5 > max_norm:
        raise CodecError("norm", f"update L2 norm {sq**0.5:.4g} exceeds the federation's bound {max_norm:.4g}")
    return out


def decode_update(
    blob: bytes,
    *,
    expected_shapes: Mapping[str, tuple[int, ...]],
    max_size: int | None = None,
    round_id: int | None = None,
    base_hash: bytes | None = None,
    sender: str | None = None,
    num_samples: int | None = None,
    max_norm: float | None = None,
) -> DecodedUpdate:
    """Validate and decode an update blob; every given expectation must hold.

    Raises
    ------
    CodecError
        With a reason code: ``too-large``, ``not-safetensors``, ``header``, ``truncated``,
        ``metadata``, ``codec``, ``round``, ``base``, ``sender``, ``samples``, ``names``,
        ``shape``, ``dtype``, ``non-finite``, ``norm``.
    """
    header, raw_meta, data = _parse(blob, max_size)
    meta = _meta(raw_meta, "update")
    if round_id is not None and meta.round != str(int(round_id)):
        raise CodecError("round", f"header says round {meta.round[:32]!r}, the ledger records round {round_id}")
    if base_hash is not None and meta.base != "0x" + bytes(base_hash).hex():
        raise CodecError("base", f"header says base {meta.base[:80]}, the round builds on 0x{bytes(base_hash).hex()}")
    if sender is not None and meta.sender.lower() != sender.lower():
        raise CodecError("sender", f"header says sender {meta.sender[:64]}, the ledger record is from {sender}")
    if num_samples is not None and meta.samples != num_samples:
        raise CodecError("samples", f"header declares {meta.samples} samples, the ledger records {num_samples}")
    return DecodedUpdate(delta=_tensors(header, data, expected_shapes, max_norm=max_norm), meta=meta)


def decode_model(blob: bytes, *, spec: ModelSpec | None = None, max_size: int | None = None) -> DecodedModel:
    """Validate and decode a model blob (the genesis model or an aggregate).

    If ``spec`` is given, the blob's spec must equal it; otherwise the blob's own spec is used.
    """
    header, raw_meta, data = _parse(blob, max_size)
    meta = _meta(raw_meta, "model")
    blob_spec = ModelSpec.from_json(meta.spec or "")
    if spec is not None and blob_spec != spec:
        raise CodecError("spec", f"model spec {meta.spec} differs from the federation's {spec.to_json()}")
    return DecodedModel(spec=blob_spec, params=_tensors(header, data, param_shapes(blob_spec), max_norm=None), meta=meta)


__all__ = ["CODEC", "MAX_HEADER_SIZE", "BlobMeta", "DecodedModel", "DecodedUpdate", "decode_model", "decode_update", "encode_aggregate", "encode_genesis", "encode_update"]
