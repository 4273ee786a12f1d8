"""The canonical encoding of updates and models: one byte string per value, no pickle.

numpy only: tensors are ``np.ndarray`` of dtype float32 (any memory layout on input; decoded
arrays are C-contiguous). The codec knows no model: the caller gives the tensor
:class:`~fedchain.fl.schema.Schema` (the federation manifest's) that a blob must match.

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
metrics    updates only, and only when there are any: the training metrics as canonical
           JSON (see :func:`render_metrics`), e.g. ``{"accuracy":0.5,"loss":1.25}``
spec       models only: the task's short description of the model (:attr:`ModelMeta.model`,
           printable ASCII, at most :data:`MAX_MODEL_DESCRIPTION` characters)
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

The sender's EIP-55 checksum is checked here, with pycryptodome's keccak (a crypto library,
not a chain one): one address has exactly one accepted spelling, so the check belongs to the
canonical form the decoder enforces, not to its callers.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import NoReturn

import numpy as np
from Crypto.Hash import keccak

from fedchain.errors import CodecError
from fedchain.fl import _safetensors
from fedchain.fl._exact import sum_of_squares
from fedchain.fl.schema import FLOAT32, Schema
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
#: Largest blob accepted when the caller gives neither ``max_size`` nor a schema.
DEFAULT_MAX_BLOB_SIZE = 256 * 1024 * 1024
#: Longest model description (:attr:`ModelMeta.model`).
MAX_MODEL_DESCRIPTION = 2000
#: Most metrics an update header carries.
MAX_METRICS = 32

_UPDATE_KEYS = frozenset({"codec", "kind", "round", "base", "sender", "samples"})
_UPDATE_OPTIONAL = frozenset({"metrics"})
_MODEL_KEYS = _UPDATE_KEYS | {"spec", "strategy"}
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,30}")
_HEX_DIGEST = re.compile(r"0x[0-9a-f]{64}")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_STRATEGY = re.compile(r"[A-Za-z0-9_.:=,+-]{1,200}")
_MODEL = re.compile(rf"[\x20-\x7e]{{1,{MAX_MODEL_DESCRIPTION}}}")
_METRIC_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@functools.lru_cache(maxsize=4096)
def is_checksum_address(address: str) -> bool:
    """Whether ``address`` is ``0x`` + 40 hex digits cased as EIP-55 says.

    Remembered: a federation's few senders recur in every blob (a keccak each time otherwise).
    """
    if not isinstance(address, str) or not _ADDRESS.fullmatch(address):
        return False
    digits = address[2:]
    hashed = keccak.new(digest_bits=256, data=digits.lower().encode("ascii")).hexdigest()
    return all(
        (c.upper() if int(h, 16) >= 8 else c.lower()) == c for c, h in zip(digits, hashed, strict=False) if c.isalpha()
    )


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
    metrics:
        Training metrics (``loss``, ``accuracy``, ...): at most :data:`MAX_METRICS` finite
        numbers named by ``[A-Za-z0-9_.-]{1,64}``. Empty by default, and then absent from the header.
    """

    round_id: RoundId
    base: Digest
    sender: Address
    samples: int
    metrics: Mapping[str, float] = field(default_factory=dict)


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
    model:
        The task's short description of the model (:meth:`fedchain.tasks.api.Task.describe`),
        opaque to the codec: printable ASCII, 1 to :data:`MAX_MODEL_DESCRIPTION` characters.
        Written under the header key ``spec``.
    strategy:
        The aggregation's :attr:`~fedchain.fl.strategy.Strategy.name` (``genesis`` for the genesis model).
    """

    round_id: RoundId
    base: Digest
    sender: Address
    samples: int
    model: str
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
    """A validated update: the delta (float32, C-contiguous, sorted by name) and its header."""

    delta: dict[str, np.ndarray]
    meta: UpdateMeta
    norm: float | None = None
    """The delta's exact L2 norm (:func:`l2_norm`), when the decoder checked it against a bound or was given
    the blob's :class:`SumOfSquares`."""


@dataclass(frozen=True)
class SumOfSquares:
    """The exactly rounded sum of the squares of a blob's float32 values from ``start`` to its end.

    What :func:`sum_of_squares_after_header` computes from the blob's bytes alone (no header
    parsed), so that a reader can compute it beside reading and hashing the blob, and
    :func:`decode_update` then takes the update's norm from it instead of passing over the
    values again. It is the norm's sum when the tensors are the one float32 run from ``start``
    to the end of the blob (the decoder checks that they are, and ignores it otherwise): the
    exact sum does not depend on the order of the values, so it is the same float as
    :func:`l2_norm`'s, squared, on every machine.
    """

    start: int
    value: float


def sum_of_squares_after_header(blob: bytes | bytearray | memoryview) -> SumOfSquares | None:
    """The :class:`SumOfSquares` of the values after the blob's safetensors header, or ``None`` if there are none.

    ``None`` when the blob is too short for its header-length prefix, the header length is
    over :data:`MAX_HEADER_SIZE`, what follows the header is not a whole number of float32
    values, or the machine is not little-endian: the decoder then computes the norm itself.
    """
    data = _as_buffer(blob)
    prefix = _safetensors.PREFIX_SIZE
    if len(data) < prefix or sys.byteorder != "little":
        return None
    start = prefix + int.from_bytes(bytes(data[:prefix]), "little")
    if start - prefix > MAX_HEADER_SIZE or start > len(data) or (len(data) - start) % 4:
        return None
    values = np.frombuffer(data, dtype=np.float32, count=(len(data) - start) // 4, offset=start)
    return SumOfSquares(start, sum_of_squares([values]))


@dataclass(frozen=True)
class DecodedModel:
    """A validated model: its parameters (float32, C-contiguous, sorted by name) and its header."""

    params: dict[str, np.ndarray]
    meta: ModelMeta

    @property
    def schema(self) -> Schema:
        """The schema of :attr:`params`."""
        return Schema.of(self.params)


def _fail(reason: str, detail: str) -> NoReturn:
    raise CodecError(reason, detail)


# --------------------------------------------------------------------------- metrics


def render_metrics(metrics: Mapping[str, float]) -> str:
    """The canonical JSON of ``metrics``: sorted names, ``repr(float(v))`` values, no spaces.

    ``repr`` of a float is the shortest string that reads back as the same float, so each
    set of metrics has exactly one rendering (``-0.0`` stays ``-0.0``; ``1`` becomes ``1.0``).

    Raises
    ------
    CodecError
        ``metadata``: a name outside ``[A-Za-z0-9_.-]{1,64}``, more than :data:`MAX_METRICS`
        entries, or a value that is not a finite real number.
    """
    if not isinstance(metrics, Mapping):
        _fail("metadata", f"metrics must be a mapping, got {type(metrics).__name__}")
    if len(metrics) > MAX_METRICS:
        _fail("metadata", f"{len(metrics)} metrics, at most {MAX_METRICS} are recorded")
    values: dict[str, float] = {}
    for name, value in metrics.items():
        if not isinstance(name, str) or not _METRIC_NAME.fullmatch(name):
            _fail("metadata", f"metric name {str(name)[:80]!r} is not 1 to 64 of [A-Za-z0-9_.-]")
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
            _fail("metadata", f"metric {name!r} is a {type(value).__name__}, not a number")
        as_float = float(value)
        if not math.isfinite(as_float):
            _fail("metadata", f"metric {name!r} is {as_float!r}, not finite")
        values[name] = as_float
    return json.dumps(values, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _no_constant(text: str) -> NoReturn:
    _fail("metadata", f"metadata field 'metrics' holds {text!r}, not a finite number")


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out = dict(pairs)
    if len(out) != len(pairs):
        _fail("metadata", "metadata field 'metrics' names a metric twice")
    return out


def _parse_metrics(text: str) -> dict[str, float]:
    """The metrics of an update header, which must be exactly :func:`render_metrics` of them."""
    try:
        parsed = json.loads(text, parse_constant=_no_constant, object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError) as exc:
        if isinstance(exc, CodecError):
            raise
        _fail("metadata", f"metadata field 'metrics' is not JSON: {text[:80]!r}")
    if not isinstance(parsed, dict) or not parsed:
        _fail("metadata", f"metadata field 'metrics' is not a non-empty object: {text[:80]!r}")
    if any(not isinstance(v, float) for v in parsed.values()):
        _fail("non-canonical", f"metadata field 'metrics' holds a value that is not a float: {text[:80]!r}")
    metrics: dict[str, float] = parsed
    if render_metrics(metrics) != text:
        _fail("non-canonical", f"metadata field 'metrics' is not in canonical form: {text[:80]!r}")
    return metrics


# --------------------------------------------------------------------------- encoding


def _common_metadata(
    kind: str, round_id: int, base: Digest, sender: Address, samples: int, min_samples: int
) -> dict[str, str]:
    if not isinstance(round_id, int) or isinstance(round_id, bool) or round_id < 0:
        _fail("metadata", f"round must be a non-negative int, got {round_id!r}")
    if not isinstance(base, bytes) or len(base) != 32:
        _fail("metadata", f"base must be a 32-byte digest, got {base!r}")
    if not is_checksum_address(sender):
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


def _to_arrays(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    if not isinstance(tensors, Mapping):
        _fail("dtype", f"expected a mapping of names to numpy float32 arrays, got {type(tensors).__name__}")
    arrays: dict[str, np.ndarray] = {}
    for name in sorted(tensors):
        t = tensors[name]
        if not isinstance(name, str) or not name or name.startswith("__") or not name.isascii():
            _fail("header", f"tensor name {name!r} is not a plain ASCII name")
        if not isinstance(t, np.ndarray):
            _fail(
                "dtype", f"tensor {name!r} is a {type(t).__module__}.{type(t).__name__}: expected a numpy float32 array"
            )
        if t.dtype != np.float32:
            _fail("dtype", f"tensor {name!r} has dtype {t.dtype}: expected a numpy float32 array")
        if not np.isfinite(t).all():
            _fail("non-finite", f"tensor {name!r} holds NaN or infinite values")
        arrays[name] = t
    return arrays


def _check_schema(arrays: Mapping[str, np.ndarray], schema: Schema | None) -> None:
    if schema is not None:
        _check_names_and_shapes({n: tuple(a.shape) for n, a in arrays.items()}, _shapes(schema))


def encode_update(delta: Mapping[str, np.ndarray], meta: UpdateMeta, *, schema: Schema | None = None) -> bytes:
    """Encode an update (a parameter delta) canonically.

    Parameters
    ----------
    delta:
        float32 numpy arrays by tensor name (any memory layout).
    meta:
        The header fields.
    schema:
        If given, ``delta`` must have exactly its tensors and shapes.

    Raises
    ------
    CodecError
        ``dtype`` (not a numpy float32 array), ``non-finite`` (NaN or infinite values),
        ``metadata`` (bad field), or ``shape`` / ``missing-tensor`` / ``unexpected-tensor``
        when ``delta`` does not fit ``schema``.
    """
    metadata = _common_metadata("update", meta.round_id, meta.base, meta.sender, meta.samples, 1)
    if meta.metrics:
        metadata["metrics"] = render_metrics(meta.metrics)
    elif not isinstance(meta.metrics, Mapping):
        _fail("metadata", f"metrics must be a mapping, got {type(meta.metrics).__name__}")
    arrays = _to_arrays(delta)
    _check_schema(arrays, schema)
    return _safetensors.render(arrays, metadata)


def encode_model(params: Mapping[str, np.ndarray], meta: ModelMeta, *, schema: Schema | None = None) -> bytes:
    """Encode model parameters canonically.

    Parameters
    ----------
    params:
        float32 numpy arrays by tensor name (any memory layout).
    meta:
        The header fields.
    schema:
        If given, ``params`` must have exactly its tensors and shapes.

    Raises
    ------
    CodecError
        ``dtype``, ``non-finite``, ``metadata``, or ``shape`` / ``missing-tensor`` /
        ``unexpected-tensor`` when ``params`` does not fit ``schema``.
    """
    metadata = _model_metadata(meta)
    arrays = _to_arrays(params)
    _check_schema(arrays, schema)
    return _safetensors.render(arrays, metadata)


def model_blob_matches(
    blob: bytes | bytearray | memoryview,
    params: Mapping[str, np.ndarray],
    meta: ModelMeta,
    *,
    schema: Schema | None = None,
) -> bool:
    """Whether ``blob == encode_model(params, meta, schema=schema)``, decided without encoding (or hashing) anything.

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
    metadata = _model_metadata(meta)
    arrays = _to_arrays(params)
    _check_schema(arrays, schema)
    return _safetensors.matches(blob, arrays, metadata)


def model_blob_arrays(
    blob: bytes | bytearray | memoryview, meta: ModelMeta, *, schema: Schema
) -> dict[str, np.ndarray] | None:
    """The tensors of ``blob`` (float32 views, by name) if all but their values is what :func:`encode_model` writes.

    That is: the length prefix, the header (the schema's names and shapes, and ``meta``) and
    the total length are exactly those of ``encode_model(params, meta, schema=schema)`` for
    any ``params`` of the schema; else ``None``. So that blob is ``encode_model``'s exactly
    when ``params`` are finite (``encode_model`` refuses anything else) and have these views'
    bits: what :meth:`FedAvg.matches <fedchain.fl.strategy.FedAvg.matches>` decides without
    writing the aggregate.

    Raises
    ------
    CodecError
        Whenever :func:`encode_model` would for ``meta`` (checked first).
    """
    metadata = _model_metadata(meta)
    shapes = _shapes(schema)
    if any(spec.dtype != FLOAT32 for spec in schema.tensors):
        return None
    return _safetensors.float32_views(blob, shapes, metadata)


def _model_metadata(meta: ModelMeta) -> dict[str, str]:
    """A model blob's header metadata, after checking ``meta``."""
    metadata = _common_metadata("model", meta.round_id, meta.base, meta.sender, meta.samples, 0)
    if not isinstance(meta.strategy, str) or not _STRATEGY.fullmatch(meta.strategy):
        _fail("metadata", f"strategy must be a short plain name, got {meta.strategy!r}")
    if not isinstance(meta.model, str) or not _MODEL.fullmatch(meta.model):
        _fail(
            "metadata",
            f"model must be 1 to {MAX_MODEL_DESCRIPTION} printable ASCII characters, got {str(meta.model)[:80]!r}",
        )
    metadata["spec"] = meta.model
    metadata["strategy"] = meta.strategy
    return metadata


# --------------------------------------------------------------------------- decoding


def _shapes(schema: Schema) -> dict[str, tuple[int, ...]]:
    if not isinstance(schema, Schema):
        _fail("spec", f"expected a fedchain.fl.schema.Schema, got {type(schema).__name__}")
    return schema.shapes


def _check_names_and_shapes(actual: Mapping[str, tuple[int, ...]], expected: Mapping[str, tuple[int, ...]]) -> None:
    for name in sorted(expected):
        if name not in actual:
            _fail("missing-tensor", f"tensor {name!r} is missing")
    for name in sorted(actual):
        if name not in expected:
            _fail("unexpected-tensor", f"tensor {name[:80]!r} is not in the schema")
        if tuple(actual[name]) != tuple(expected[name]):
            _fail("shape", f"tensor {name!r} has shape {tuple(actual[name])}, expected {tuple(expected[name])}")


def _parse_common(
    meta: Mapping[str, str], kind: str, keys: frozenset[str], optional: frozenset[str] = frozenset()
) -> tuple[RoundId, Digest, Address, int]:
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
        if key not in keys and key not in optional:
            _fail("metadata", f"unknown metadata field {key[:80]!r}")
    for key in ("round", "samples"):
        if not _DECIMAL.fullmatch(meta[key]):
            _fail("metadata", f"metadata field {key!r} is not a canonical decimal: {meta[key][:80]!r}")
    if not _HEX_DIGEST.fullmatch(meta["base"]):
        _fail("metadata", f"metadata field 'base' is not 0x + 64 lower-case hex digits: {meta['base'][:80]!r}")
    if not is_checksum_address(meta["sender"]):
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
    for key, want, have in pairs:
        if key == "sender" and want is not None:
            want, have = str(want).lower(), str(have).lower()  # one address, however it is cased
        if want is not None and want != have:
            _fail(key, f"metadata field {key!r} is {have!r}, the ledger says {want!r}")


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


def _check_values(
    blob: bytes | bytearray | memoryview,
    parsed: _safetensors.Parsed,
    max_norm: float | None,
    squares: SumOfSquares | None = None,
) -> float | None:
    # _check_layout has made the tensors one contiguous float32 run: one pass over all of
    # it, and tensor by tensor only to name the culprit
    total = sum(math.prod(e.shape) for e in parsed.entries)
    values = np.frombuffer(blob, dtype="<f4", count=total, offset=parsed.data_start)
    # With a bound, the norm comes first: the sum of squares of finite float32 values is finite
    # (below 2**256 per element), and inf or nan otherwise, so a finite norm spares the
    # finiteness pass (a sixth of an audit's time) and a non-finite one fails it as before.
    # A given sum of squares of exactly that run is the norm's (the same float: the sum is exact).
    norm: float | None = None
    if squares is not None and squares.start == parsed.data_start and squares.start + 4 * total == len(blob):
        norm = math.sqrt(squares.value)
    elif max_norm is not None:
        norm = l2_norm(dict(_arrays(blob, parsed)))
    # in slices, so the check's boolean mask is a few hundred KiB, not a quarter of the blob
    if not (norm is not None and math.isfinite(norm)) and not all(
        np.isfinite(values[lo : lo + _FINITE_SLICE]).all() for lo in range(0, total, _FINITE_SLICE)
    ):
        for name, view in _arrays(blob, parsed):
            finite = np.isfinite(view)
            if not finite.all():
                n_nan = int(np.isnan(view).sum())
                _fail(
                    "non-finite",
                    f"tensor {name!r} holds {n_nan} NaN and {int(finite.size - finite.sum()) - n_nan} infinite values",
                )
    if norm is not None and max_norm is not None and not norm <= max_norm:
        _fail("norm", f"update L2 norm {norm!r} exceeds the bound {max_norm!r}")
    return norm


def l2_norm(arrays: Mapping[str, np.ndarray]) -> float:
    """The L2 norm over all float32 arrays, exactly rounded: the same float on every machine.

    The sum of squares is computed exactly and rounded once (see :mod:`fedchain.fl._exact`),
    then its square root is taken (correctly rounded by IEEE 754), so the result does not
    depend on summation order, SIMD width or threads.

    Raises
    ------
    CodecError
        ``dtype``: a value is not a numpy float32 array.
    """
    values = []
    for name, a in sorted(arrays.items()):
        if not isinstance(a, np.ndarray) or a.dtype != np.float32:
            what = f"dtype {a.dtype}" if isinstance(a, np.ndarray) else f"a {type(a).__module__}.{type(a).__name__}"
            _fail("dtype", f"tensor {name!r} is {what}: expected a numpy float32 array")
        values.append(a)
    return math.sqrt(sum_of_squares(values))


def _copies(blob: bytes | bytearray | memoryview, parsed: _safetensors.Parsed, copy: bool) -> dict[str, np.ndarray]:
    if not copy and isinstance(blob, bytearray) and sys.byteorder == "little":
        # views of the caller's buffer, which it handed over: no allocation at all
        return {name: view.view(np.float32) for name, view in _arrays(blob, parsed)}
    # the only allocation proportional to the blob, made after every check has passed
    return {name: view.astype(np.float32, copy=True) for name, view in _arrays(blob, parsed)}


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
    schema: Schema,
    max_size: int | None = None,
    expect: ExpectedMeta | None = None,
    max_norm: float | None = None,
    copy: bool = True,
    squares: SumOfSquares | None = None,
) -> DecodedUpdate:
    """Validate and decode an update blob.

    Parameters
    ----------
    blob:
        The bytes, as fetched.
    schema:
        The exchanged tensors (the federation manifest's): the blob must hold exactly these,
        with these shapes, in float32.
    max_size:
        Largest blob accepted; by default the size the schema implies plus the largest header.
    expect:
        What the ledger says (round, base, sender, samples); given fields must match the header.
    max_norm:
        If given, the update's L2 norm over all tensors must not exceed it.
    copy:
        ``False`` lets the arrays be views of ``blob`` when it is a ``bytearray`` the
        caller hands over (a fresh read, say), saving a copy of the blob; the caller must
        not change the buffer afterwards. Any other blob is copied.
    squares:
        :func:`sum_of_squares_after_header` of this very blob, if the caller computed it
        (say, on the thread that read the blob): the norm is then taken from it, and set
        in the result even without a bound. Ignored unless it covers exactly the tensors.

    Returns
    -------
    DecodedUpdate
        Its ``meta.metrics`` are the header's (empty when it has none).

    Raises
    ------
    CodecError
        On any defect; nothing is returned half-checked.
    """
    shapes = _shapes(schema)
    data, parsed = _start(blob, _default_max_size(shapes) if max_size is None else max_size)
    round_id, base, sender, samples = _parse_common(parsed.metadata, "update", _UPDATE_KEYS, _UPDATE_OPTIONAL)
    if samples < 1:
        _fail("metadata", "metadata field 'samples' must be at least 1 for an update")
    metrics = _parse_metrics(parsed.metadata["metrics"]) if "metrics" in parsed.metadata else {}
    _check_expected(round_id, base, sender, samples, expect)
    _check_names_and_shapes({e.name: e.shape for e in parsed.entries}, shapes)
    _check_layout(parsed, len(data))
    _check_canonical(parsed)
    norm = _check_values(data, parsed, max_norm, squares)
    meta = UpdateMeta(round_id, base, sender, samples, metrics)
    return DecodedUpdate(delta=_copies(data, parsed, copy), meta=meta, norm=norm)


def decode_model(
    blob: bytes | bytearray | memoryview,
    *,
    schema: Schema | None,
    model: str | None = None,
    max_size: int | None = None,
    expect: ExpectedMeta | None = None,
    copy: bool = True,
) -> DecodedModel:
    """Validate and decode a model blob.

    Parameters
    ----------
    blob:
        The bytes, as fetched.
    schema:
        The exchanged tensors the caller expects (the manifest's); ``None`` accepts the
        tensors the header declares (still bounded by ``max_size``).
    model:
        If given, the header's model description (key ``spec``) must be exactly this.
    max_size:
        Largest blob accepted; by default the size ``schema`` implies plus the largest
        header, or :data:`DEFAULT_MAX_BLOB_SIZE` without a schema.
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
    shapes = None if schema is None else _shapes(schema)
    if max_size is None:
        max_size = DEFAULT_MAX_BLOB_SIZE if shapes is None else _default_max_size(shapes)
    data, parsed = _start(blob, max_size)
    round_id, base, sender, samples = _parse_common(parsed.metadata, "model", _MODEL_KEYS)
    header_model = parsed.metadata["spec"]
    if not _MODEL.fullmatch(header_model):
        _fail("spec", f"model description is not 1 to {MAX_MODEL_DESCRIPTION} printable ASCII: {header_model[:80]!r}")
    if model is not None and header_model != model:
        _fail("spec", f"model is {header_model[:200]!r}, expected {model[:200]!r}")
    strategy = parsed.metadata["strategy"]
    if not _STRATEGY.fullmatch(strategy):
        _fail("metadata", f"metadata field 'strategy' is not a plain name: {strategy[:80]!r}")
    _check_expected(round_id, base, sender, samples, expect)
    if shapes is not None:
        _check_names_and_shapes({e.name: e.shape for e in parsed.entries}, shapes)
    else:
        for entry in parsed.entries:
            if not entry.name or entry.name.startswith("__") or not entry.name.isascii():
                _fail("header", f"tensor name {entry.name[:80]!r} is not a plain ASCII name")
    _check_layout(parsed, len(data))
    _check_canonical(parsed)
    _check_values(data, parsed, None)
    meta = ModelMeta(round_id, base, sender, samples, header_model, strategy)
    return DecodedModel(params=_copies(data, parsed, copy), meta=meta)


__all__ = [
    "CODEC",
    "DEFAULT_MAX_BLOB_SIZE",
    "GENESIS_BASE",
    "GENESIS_STRATEGY",
    "MAX_HEADER_SIZE",
    "MAX_METRICS",
    "MAX_MODEL_DESCRIPTION",
    "DecodedModel",
    "DecodedUpdate",
    "ExpectedMeta",
    "ModelMeta",
    "SumOfSquares",
    "UpdateMeta",
    "decode_model",
    "decode_update",
    "encode_model",
    "encode_update",
    "is_checksum_address",
    "l2_norm",
    "model_blob_matches",
    "render_metrics",
    "sum_of_squares_after_header",
]
