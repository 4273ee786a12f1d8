"""Blobs bound to a ledger's round, base and sender: the protocol's view of the codec."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fedchain.fl.codec import (
    GENESIS_BASE,
    GENESIS_STRATEGY,
    DecodedModel,
    DecodedUpdate,
    ExpectedMeta,
    ModelMeta,
    SumOfSquares,
    UpdateMeta,
    decode_model,
    decode_update,
    encode_model,
    encode_update,
    model_blob_arrays,
    model_blob_matches,
)
from fedchain.protocol.rules import Rules
from fedchain.records import UpdateRecord
from fedchain.types import Address, Digest, RoundId


def update_blob(
    delta: Mapping[str, np.ndarray],
    *,
    round_id: int,
    base_hash: bytes,
    sender: str,
    num_samples: int,
    metrics: Mapping[str, float] | None = None,
) -> bytes:
    """Encode a participant's update for ``round_id`` built on ``base_hash`` (metrics in its header)."""
    meta = UpdateMeta(RoundId(round_id), Digest(bytes(base_hash)), Address(sender), num_samples, dict(metrics or {}))
    return encode_update(delta, meta)


def _aggregate_meta(rules: Rules, *, round_id: int, base_hash: bytes, num_samples: int) -> ModelMeta:
    return ModelMeta(
        RoundId(round_id), Digest(bytes(base_hash)), rules.coordinator, num_samples, rules.model, rules.strategy.name
    )


def aggregate_blob(
    params: Mapping[str, np.ndarray], rules: Rules, *, round_id: int, base_hash: bytes, num_samples: int
) -> bytes:
    """Encode round ``round_id``'s aggregate (sender: the coordinator; strategy: the manifest's)."""
    return encode_model(
        params,
        _aggregate_meta(rules, round_id=round_id, base_hash=base_hash, num_samples=num_samples),
        schema=rules.schema,
    )


def aggregate_matches(
    blob: bytes | bytearray | memoryview,
    params: Mapping[str, np.ndarray],
    rules: Rules,
    *,
    round_id: int,
    base_hash: bytes,
    num_samples: int,
) -> bool:
    """Whether ``blob`` is exactly :func:`aggregate_blob` of these arguments (nothing is encoded)."""
    meta = _aggregate_meta(rules, round_id=round_id, base_hash=base_hash, num_samples=num_samples)
    return model_blob_matches(blob, params, meta, schema=rules.schema)


def stored_aggregate_arrays(
    blob: bytes | bytearray | memoryview, rules: Rules, *, round_id: int, base_hash: bytes, num_samples: int
) -> dict[str, np.ndarray] | None:
    """The stored aggregate's tensors (views) if all but their values is what :func:`aggregate_blob` writes."""
    meta = _aggregate_meta(rules, round_id=round_id, base_hash=base_hash, num_samples=num_samples)
    return model_blob_arrays(blob, meta, schema=rules.schema)


def genesis_blob(params: Mapping[str, np.ndarray], *, model: str, sender: str) -> bytes:
    """Encode the genesis model ``params`` (round 0, zero base, no samples)."""
    return encode_model(params, ModelMeta(RoundId(0), GENESIS_BASE, Address(sender), 0, model, GENESIS_STRATEGY))


def read_update(
    blob: bytes | bytearray,
    rules: Rules,
    record: UpdateRecord,
    *,
    base_hash: bytes,
    copy: bool = True,
    squares: SumOfSquares | None = None,
) -> DecodedUpdate:
    """Decode an update, checking it against the schema, the norm bound and what the ledger records.

    ``squares`` is the blob's :func:`~fedchain.fl.codec.sum_of_squares_after_header`, if the caller
    has it (see :func:`~fedchain.fl.codec.decode_update`).
    """
    expect = ExpectedMeta(
        round_id=int(record.round_id),
        base=Digest(bytes(base_hash)),
        sender=record.participant,
        samples=record.num_samples,
    )
    return decode_update(
        blob,
        schema=rules.schema,
        max_size=rules.max_blob_size,
        expect=expect,
        max_norm=rules.max_update_norm,
        copy=copy,
        squares=squares,
    )


def read_model(blob: bytes | bytearray, rules: Rules, *, copy: bool = True) -> DecodedModel:
    """Decode a model blob (genesis or aggregate) of the manifest's schema and model."""
    return decode_model(blob, schema=rules.schema, model=rules.model, max_size=rules.max_blob_size, copy=copy)


__all__ = [
    "aggregate_blob",
    "aggregate_matches",
    "genesis_blob",
    "read_model",
    "read_update",
    "stored_aggregate_arrays",
    "update_blob",
]
