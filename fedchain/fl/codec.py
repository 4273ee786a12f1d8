"""The canonical encoding of updates and models: one byte string per value, no pickle.

A blob is a safetensors file (see :mod:`fedchain.fl._safetensors` for the exact
header rendering) holding float32 little-endian tensors with their data in sorted name
order, and string metadata in the header's ``__metadata__``:

=========  ==========================================================================
key        value
=========  ==========================================================================
codec      :data:`CODEC` (``fedchain/f32-v1``)
kind       ``update`` or ``model``
round      the round, in decimal (a genesis model says ``0``)
base       ``0x`` + 64 lower-case hex: sha256 of the base model blob
           (a genesis model has the zero digest, :data:`GENESIS_BASE`)
sender     the EIP-55 checksummed address of whoever produced the blob
samples    decimal training-sample count: ``n_k`` for an update, ``n`` for an aggregate
           (0 for a genesis model)
spec       models only: :meth:`ModelSpec.to_json` of the model's shape
strategy   models only: :attr:`Strategy.name` of the aggregation, or ``genesis``
=========  ==========================================================================

Same tensors and metadata give the same bytes on every machine, so the same sha256.
Decoding is strict: the blob must be exactly what :func:`encode_update` or
:func:`encode_model` would write for the values it holds, and every check runs before
any tensor is built. Every failure is a :class:`~fedchain.errors.CodecError` whose
``reason`` is one of:

``too-large``, ``truncated``, ``not-safetensors``, ``header``, ``metadata``,
``codec``, ``kind``, ``spec``, ``missing-tensor``, ``unexpected-tensor``, ``dtype``,
``shape``, ``offsets``, ``non-canonical``, ``non-finite`` (NaN or infinite values),
``norm``, and ``round``, ``base``, ``sender`` or ``samples`` when that metadata field
differs from what the ledger says.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import NoReturn

import numpy as np
import torch
from eth_utils.address import is_checksum_address as _is_checksum_address
from torch import Tensor

from fedchain.errors import CodecError
from fedchain.fl import _safetensors
from fedchain.fl._exact import sum_of_squares
from fedchain.fl.model import ModelSpec, param_shapes
from fedchain.types import Address, Digest, RoundId

logger = logging.getLogger(__name__)

#: The codec identifier written into every blob.
CODEC = "fedchain/f32-v1"
#: The ``base`` of a genesis model: the zero digest.
GENESIS_BASE = Digest(bytes(32))
#: The ``strategy`` of a genesis model.
GENESIS_STRATEGY = "genesis"
#: Largest header accepted (ours are a few hundred bytes; this bounds JSON parsing).
MAX_HEADER_SIZE = 64 * 1024
#: Largest blob accepted when the caller gives neither ``max_size`` nor shapes.
DEFAULT_MAX_BLOB_SIZE = 256 * 1024 * 1024

_UPDATE_KEYS = frozenset({"codec", "kind", "round", "base", "sender", "samples"})
_MODEL_KEYS = _UPDATE_KEYS | {"spec", "strategy"}
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,30}")
_HEX_DIGEST = re.compile(r"0x[0-9a-f]{64}")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_STRATEGY = re.compile(r"[A-Za-z0-9_.:=,+-]{1,200}")


@functools.lru_cache(maxsize=4096)
def is_checksum_address(address: str) -> bool:
    """EIP-55 check, remembered: a federation's few senders recur in every blob (a keccak each time otherwise)."""
    return bool(_is_checksum_address(address))


@dataclass(frozen=True)
class UpdateMeta:
    """Header fields of an update blob.

    Attributes
    ----------
    round_id:
        The round the update was trained for.
    base:
        sha256 of the base model blob the update was trained from.
    sender:
        The participant's checksummed address.
    samples:
        Training records used (``n_k``), at least 1.
    """

    round_id: RoundId
    base: Digest
    sender: Address
    samples: int


@dataclass(frozen=True)
class ModelMeta:
    """Header fields of a model blob (the genesis model or a round's aggregate).

    Attributes
    ----------
    round_id:
        The round this aggregate finalizes (0 for the genesis model).
    base:
        sha256 of the round's base model blob (:data:`GENESIS_BASE` for the genesis model).
    sender:
        The coordinator's checksummed address.
    samples:
        Total training records aggregated (``n``; 0 for the genesis model).
    spec:
        The model's shape.
    strategy:
        The aggregation's :attr:`~fedchain.fl.strategy.Strategy.name` (``genesis`` for the genesis model).
    """

    round_id: RoundId
    base: Digest
    sender: Address
    samples: int
    spec: ModelSpec
    strategy: str


@dataclass(frozen=True)
class ExpectedMeta:
    """What the ledger says about a blob; each field given is checked against its header.

    Attributes
    ----------
    round_id, base, sender, samples:
        ``None`` skips the check.
    """

    round_id: int | None = None
    base: Digest | None = None
    sender: Address | None = None
    samples: int | None = None


@dataclass(frozen=True)
class DecodedUpdate:
    """A validated update: the delta (float32, sorted by name) and its header."""

    delta: dict[str, Tensor]
    meta: UpdateMeta


@dataclass(frozen=True)
class DecodedModel:
    """A validated model: its parameters (float32, sorted by name) and its header."""

    params: dict[str, Tensor]
    meta: ModelMeta

    @property
    def spec(self) -> ModelSpec:
        """The model's spec (``meta.spec``)."""
        return self.meta.spec


def _fail(reason: str, detail: str) -> NoReturn:
    raise CodecError(reason, detail)


# --------------------------------------------------------------------------- encoding


def _common_metadata(
    kind: str, round_id: int, base: Digest, sender: Address, samples: int, min_samples: int
) -> dict[str, str]:
    if not isinstance(round_id, int) or isinstance(round_id, bool) or round_id < 0:
        _fail("metadata", f"round must be a non-negative int, got {round_id!r}")
    if not isinstance(base, bytes) or len(base) != 32:
        _fail("metadata", f"base must be a 32-byte digest, got {base!r}")
    if not isinstance(sender, str) or not _ADDRESS.fullmatch(sender) or not is_checksum_address(sender):
        _fail("metadata", f"sender must be a checksummed address, got {sender!r}")
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < min_samples:
        _fail("metadata", f"samples must be an int >= {min_samples}, got {samples!r}")
    return {
        "base": "0x" + bytes(base).hex(),
        "codec": CODEC,
        "kind": kind,
        "round": str(round_id),
        "samples": str(samples),
        "sender": sender,
    }


def _to_arrays(tensors: Mapping[str, Tensor]) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    for name in sorted(tensors):
        t = tensors[name]
        if not isinstance(name, str) or not name or name.startswith("__") or not name.isascii():
            _fail("header", f"tensor name {name!r} is not a plain ASCII name")
        if not isinstance(t, Tensor):
            _fail("dtype", f"tensor {name!r} is a {type(t).__name__}, not a torch.Tensor")
        if t.dtype != torch.float32:
            _fail("dtype", f"tensor {name!r} has dtype {t.dtype}, only float32 is encoded")
        arr = t.detach().cpu().contiguous().numpy()
        if not np.isfinite(arr).all():
            _fail("non-finite", f"tensor {name!r} holds NaN or infinite values")
        arrays[name] = arr
    return arrays


def encode_update(delta: Mapping[str, Tensor], meta: UpdateMeta) -> bytes:
    """Encode an update (a parameter delta) canonically.

    Raises
    ------
    CodecError
        ``dtype`` (not float32), ``non-finite`` (NaN or infinite values) or ``metadata`` (bad field).
    """
    metadata = _common_metadata("update", meta.round_id, meta.base, meta.sender, meta.samples, 1)
    return _safetensors.render(_to_arrays(delta), metadata)


def encode_model(params: Mapping[str, Tensor], meta: ModelMeta) -> bytes:
    """Encode model parameters canonically.

    Raises
    ------
    CodecError
        ``dtype``, ``non-finite``, ``metadata``, or ``shape`` / ``missing-tensor`` /
        ``unexpected-tensor`` when ``params`` does not fit ``meta.spec``.
    """
    metadata = _model_metadata(params, meta)  # metadata and shapes are checked before the values
    return _safetensors.render(_to_arrays(params), metadata)


def model_blob_matches(blob: bytes | bytearray | memoryview, params: Mapping[str, Tensor], meta: ModelMeta) -> bool:
    """Whether ``blob == encode_model(params, meta)``, decided without encoding (or hashing) anything.

    The same checks as :func:`encode_model` run first and raise as it raises; then the
    blob is compared with what it would write, piece by piece and byte for byte
    (:func:`fedchain.fl._safetensors.matches`): the length prefix, the header (rendered
    from ``params``' names, shapes and offsets and from ``meta``), every tensor's data,
    and the total length. A verifier holding a stored blob already checked against its
    digest learns from ``True`` exactly what re-encoding and comparing would tell it.

    Raises
    ------
    CodecError
        Whenever :func:`encode_model` would.
    """
    metadata = _model_metadata(params, meta)
    return _safetensors.matches(blob, _to_arrays(params), metadata)


def _model_metadata(params: Mapping[str, Tensor], meta: ModelMeta) -> dict[str, str]:
    """A model blob's header metadata, after checking ``meta`` and ``params``' names and shapes against its spec."""
    metadata = _common_metadata("model", meta.round_id, meta.base, meta.sender, meta.samples, 0)
    if not isinstance(meta.strategy, str) or not _STRATEGY.fullmatch(meta.strategy):
        _fail("metadata", f"strategy must be a short plain name, got {meta.strategy!r}")
    metadata["spec"] = meta.spec.to_json()
    metadata["strategy"] = meta.strategy
    _check_names_and_shapes({n: tuple(t.shape) for n, t in params.items()}, param_shapes(meta.spec))
    return metadata


# --------------------------------------------------------------------------- decoding


def _check_names_and_shapes(actual: Mapping[str, tuple[int, ...]], expected: Mapping[str, tuple[int, ...]]) -> None:
    for name in sorted(expected):
        if name not in actual:
            _fail("missing-tensor", f"tensor {name!r} is missing")
    for name in sorted(actual):
        if name not in expected:
            _fail("unexpected-tensor", f"tensor {name[:80]!r} is not a parameter of the model")
        if tuple(actual[name]) != tuple(expected[name]):
            _fail("shape", f"tensor {name!r} has shape {tuple(actual[name])}, expected {tuple(expected[name])}")


def _parse_common(meta: Mapping[str, str], kind: str, keys: frozenset[str]) -> tuple[RoundId, Digest, Address, int]:
    codec = meta.get("codec")
    if codec != CODEC:
        _fail(
            "codec",
            f"unknown codec {codec[:80]!r}, expected {CODEC!r}"
            if codec is not None
            else "metadata field 'codec' is missing",
        )
    if meta.get("kind") != kind:
        _fail("kind", f"blob is a {str(meta.get('kind'))[:80]!r}, expected {kind!r}")
    for key in sorted(keys):
        if key not in meta:
            _fail("metadata", f"metadata field {key!r} is missing")
    for key in sorted(meta):
        if key not in keys:
            _fail("metadata", f"unknown metadata field {key[:80]!r}")
    for key in ("round", "samples"):
        if not _DECIMAL.fullmatch(meta[key]):
            _fail("metadata", f"metadata field {key!r} is not a canonical decimal: {meta[key][:80]!r}")
    if not _HEX_DIGEST.fullmatch(meta["base"]):
        _fail("metadata", f"metadata field 'base' is not 0x + 64 lower-case hex digits: {meta['base'][:80]!r}")
    if not _ADDRESS.fullmatch(meta["sender"]) or not is_checksum_address(meta["sender"]):
        _fail("metadata", f"metadata field 'sender' is not a checksummed address: {meta['sender'][:80]!r}")
    return (
        RoundId(int(meta["round"])),
        Digest(bytes.fromhex(meta["base"][2:])),
        Address(meta["sender"]),
        int(meta["samples"]),
    )


def _check_expected(round_id: int, base: Digest, sender: Address, samples: int, expect: ExpectedMeta | None) -> None:
    if expect is None:
        return
    pairs = (
        ("round", expect.round_id, round_id),
        ("base", None if expect.base is None else "0x" + bytes(expect.base).hex(), "0x" + base.hex()),
        ("sender", expect.sender, sender),
        ("samples", expect.samples, samples),
    )
    for field, want, have in pairs:
        if field == "sender" and want is not None:
            want, have = str(want).lower(), str(have).lower()  # one address, however it is cased
        if want is not None and want != have:
            _fail(field, f"metadata field {field!r} is {have!r}, the ledger says {want!r}")


def _check_layout(parsed: _safetensors.Parsed, blob_size: int) -> None:
    """Offsets contiguous, in sorted name order, covering the data section exactly."""
    position = 0
    for entry in sorted(parsed.entries, key=lambda e: e.name):
        if entry.dtype != "F32":
            _fail("dtype", f"tensor {entry.name!r} has dtype {entry.dtype[:20]!r}, only F32 is accepted")
        nbytes = 4 * math.prod(entry.shape)
        if entry.start != position or entry.end != position + nbytes:
            _fail(
                "offsets",
                f"tensor {entry.name!r} occupies [{entry.start}, {entry.end}), expected [{position}, {position + nbytes})",
            )
        position = entry.end
    available = blob_size - parsed.data_start
    if available < position:
        _fail("truncated", f"data section holds {available} bytes, the header describes {position}")
    if available > position:
        _fail("offsets", f"{available - position} unexpected bytes after the last tensor")


def _check_canonical(parsed: _safetensors.Parsed) -> None:
    entries = {e.name: (e.dtype, e.shape, e.start, e.end) for e in parsed.entries}
    if _safetensors.render_header(entries, parsed.metadata) != parsed.header:
        _fail("non-canonical", "header is not in canonical form (key order, whitespace, escaping or padding)")


def _arrays(blob: bytes | bytearray | memoryview, parsed: _safetensors.Parsed) -> Iterator[tuple[str, np.ndarray]]:
    """float32 views of the data (read-only over ``bytes``), one tensor at a time, in sorted name order."""
    for entry in sorted(parsed.entries, key=lambda e: e.name):
        count = math.prod(entry.shape)
        view = np.frombuffer(blob, dtype="<f4", count=count, offset=parsed.data_start + entry.start)
        yield entry.name, view.reshape(entry.shape)


_FINITE_SLICE = 1 << 18  # elements per slice of the finiteness check


def _check_values(blob: bytes | bytearray | memoryview, parsed: _safetensors.Parsed, max_norm: float | None) -> None:
    # _check_layout has made the tensors one contiguous float32 run: one pass over all of
    # it, and tensor by tensor only to name the culprit
    total = sum(math.prod(e.shape) for e in parsed.entries)
    values = np.frombuffer(blob, dtype="<f4", count=total, offset=parsed.data_start)
    # in slices, so the check's boolean mask is a few hundred KiB, not a quarter of the blob
    if not all(np.isfinite(values[lo : lo + _FINITE_SLICE]).all() for lo in range(0, total, _FINITE_SLICE)):
        for name, view in _arrays(blob, parsed):
            finite = np.isfinite(view)
            if not finite.all():
                n_nan = int(np.isnan(view).sum())
                _fail(
                    "non-finite",
                    f"tensor {name!r} holds {n_nan} NaN and {int(finite.size - finite.sum()) - n_nan} infinite values",
                )
    if max_norm is not None:
        norm = l2_norm(dict(_arrays(blob, parsed)))
        if not norm <= max_norm:
            _fail("norm", f"update L2 norm {norm!r} exceeds the bound {max_norm!r}")


def l2_norm(arrays: Mapping[str, np.ndarray | Tensor]) -> float:
    """The L2 norm over all float32 tensors, exactly rounded: the same float on every machine.

    The sum of squares is computed exactly and rounded once (see :mod:`fedchain.fl._exact`),
    then its square root is taken (correctly rounded by IEEE 754), so the result does not
    depend on summation order, SIMD width or threads.

    Raises
    ------
    ValueError
        If a tensor is not float32.
    """
    values = (a.detach().cpu().numpy() if isinstance(a, Tensor) else np.asarray(a) for _, a in sorted(arrays.items()))
    return math.sqrt(sum_of_squares(values))


def _tensors(blob: bytes | bytearray | memoryview, parsed: _safetensors.Parsed, copy: bool) -> dict[str, Tensor]:
    if not copy and isinstance(blob, bytearray) and sys.byteorder == "little":
        # views of the caller's buffer, which it handed over: no allocation at all
        return {name: torch.from_numpy(view) for name, view in _arrays(blob, parsed)}
    # the only allocation proportional to the blob, made after every check has passed
    return {name: torch.from_numpy(view.astype(np.float32, copy=True)) for name, view in _arrays(blob, parsed)}


def _as_buffer(blob: object) -> bytes | bytearray | memoryview:
    if isinstance(blob, (bytes, bytearray)):
        return blob
    if isinstance(blob, memoryview):
        return blob.cast("B") if blob.format != "B" or blob.ndim != 1 else blob
    _fail("not-safetensors", f"expected bytes, got {type(blob).__name__}")


def _start(blob: object, max_size: int) -> tuple[bytes | bytearray | memoryview, _safetensors.Parsed]:
    data = _as_buffer(blob)
    if len(data) > max_size:
        _fail("too-large", f"blob of {len(data)} bytes exceeds the limit of {max_size} bytes")
    return data, _safetensors.parse(data, max_header=MAX_HEADER_SIZE)


def _default_max_size(shapes: Mapping[str, tuple[int, ...]]) -> int:
    return _safetensors.PREFIX_SIZE + MAX_HEADER_SIZE + 4 * sum(math.prod(s) for s in shapes.values())


def decode_update(
    blob: bytes | bytearray | memoryview,
    *,
    expected_shapes: Mapping[str, tuple[int, ...]],
    max_size: int | None = None,
    expect: ExpectedMeta | None = None,
    max_norm: float | None = None,
    copy: bool = True,
) -> DecodedUpdate:
    """Validate and decode an update blob.

    Parameters
    ----------
    blob:
        The bytes, as fetched.
    expected_shapes:
        Name and shape of every tensor of the base model (:func:`~fedchain.fl.model.param_shapes`).
    max_size:
        Largest blob accepted; by default the size the shapes imply plus the largest header.
    expect:
        What the ledger says (round, base, sender, samples); given fields must match the header.
    max_norm:
        If given, the update's L2 norm over all tensors must not exceed it.
    copy:
        ``False`` lets the tensors be views of ``blob`` when it is a ``bytearray`` the
        caller hands over (a fresh read, say), saving a copy of the blob; the caller must
        not change the buffer afterwards. Any other blob is copied.

    Returns
    -------
    DecodedUpdate

    Raises
    ------
    CodecError
        On any defect; nothing is returned half-checked.
    """
    data, parsed = _start(blob, _default_max_size(expected_shapes) if max_size is None else max_size)
    round_id, base, sender, samples = _parse_common(parsed.metadata, "update", _UPDATE_KEYS)
    if samples < 1:
        _fail("metadata", "metadata field 'samples' must be at least 1 for an update")
    _check_expected(round_id, base, sender, samples, expect)
    _check_names_and_shapes({e.name: e.shape for e in parsed.entries}, expected_shapes)
    _check_layout(parsed, len(data))
    _check_canonical(parsed)
    _check_values(data, parsed, max_norm)
    return DecodedUpdate(delta=_tensors(data, parsed, copy), meta=UpdateMeta(round_id, base, sender, samples))


def decode_model(
    blob: bytes | bytearray | memoryview,
    *,
    spec: ModelSpec | None = None,
    max_size: int | None = None,
    expect: ExpectedMeta | None = None,
    copy: bool = True,
) -> DecodedModel:
    """Validate and decode a model blob.

    Parameters
    ----------
    blob:
        The bytes, as fetched.
    spec:
        The model shape the caller expects; ``None`` accepts the shape the header
        declares (still bounded by ``max_size``).
    max_size:
        Largest blob accepted; by default the size ``spec`` implies plus the largest
        header, or :data:`DEFAULT_MAX_BLOB_SIZE` without a spec.
    expect:
        What the ledger says (round, base, sender, samples); given fields must match the header.
    copy:
        As for :func:`decode_update`.

    Returns
    -------
    DecodedModel

    Raises
    ------
    CodecError
        On any defect; nothing is returned half-checked.
    """
    if max_size is None:
        max_size = DEFAULT_MAX_BLOB_SIZE if spec is None else _default_max_size(param_shapes(spec))
    data, parsed = _start(blob, max_size)
    round_id, base, sender, samples = _parse_common(parsed.metadata, "model", _MODEL_KEYS)
    header_spec = ModelSpec.from_json(parsed.metadata["spec"])
    if spec is not None and header_spec != spec:
        _fail("spec", f"model spec is {header_spec.to_json()}, expected {spec.to_json()}")
    strategy = parsed.metadata["strategy"]
    if not _STRATEGY.fullmatch(strategy):
        _fail("metadata", f"metadata field 'strategy' is not a plain name: {strategy[:80]!r}")
    _check_expected(round_id, base, sender, samples, expect)
    _check_names_and_shapes({e.name: e.shape for e in parsed.entries}, param_shapes(header_spec))
    _check_layout(parsed, len(data))
    _check_canonical(parsed)
    _check_values(data, parsed, None)
    meta = ModelMeta(round_id, base, sender, samples, header_spec, strategy)
    return DecodedModel(params=_tensors(data, parsed, copy), meta=meta)


__all__ = [
    "CODEC",
    "DEFAULT_MAX_BLOB_SIZE",
    "GENESIS_BASE",
    "GENESIS_STRATEGY",
    "MAX_HEADER_SIZE",
    "DecodedModel",
    "DecodedUpdate",
    "ExpectedMeta",
    "ModelMeta",
    "UpdateMeta",
    "decode_model",
    "decode_update",
    "encode_model",
    "encode_update",
    "l2_norm",
    "model_blob_matches",
]
