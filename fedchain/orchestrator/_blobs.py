"""The orchestrator's view of the codec: blobs bound to a ledger's round, base and sender."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from fedchain.fl.codec import (
    GENESIS_BASE,
    GENESIS_STRATEGY,
    DecodedModel,
    DecodedUpdate,
    ExpectedMeta,
    ModelMeta,
    UpdateMeta,
    decode_model,
    decode_update,
    encode_model,
    encode_update,
    model_blob_matches,
)
from fedchain.fl.model import ModelSpec, init_params, param_shapes
from fedchain.fl.strategy import Strategy
from fedchain.types import Address, Digest, RoundId


def update_blob(
    delta: Mapping[str, Tensor], *, round_id: int, base_hash: bytes, sender: str, num_samples: int
) -> bytes:
    """Encode a participant's update for ``round_id`` built on ``base_hash``."""
    return encode_update(delta, UpdateMeta(RoundId(round_id), Digest(bytes(base_hash)), Address(sender), num_samples))


def aggregate_blob(
    params: Mapping[str, Tensor],
    *,
    spec: ModelSpec,
    strategy: Strategy,
    round_id: int,
    base_hash: bytes,
    sender: str,
    num_samples: int,
) -> bytes:
    """Encode round ``round_id``'s aggregate (``sender`` is the coordinator; the header names the strategy)."""
    meta = ModelMeta(RoundId(round_id), Digest(bytes(base_hash)), Address(sender), num_samples, spec, strategy.name)
    return encode_model(params, meta)


def aggregate_matches(
    blob: bytes | bytearray | memoryview,
    params: Mapping[str, Tensor],
    *,
    spec: ModelSpec,
    strategy: Strategy,
    round_id: int,
    base_hash: bytes,
    sender: str,
    num_samples: int,
) -> bool:
    """Whether ``blob`` is exactly what :func:`aggregate_blob` returns for these arguments (nothing is encoded).

    Raises
    ------
    CodecError
        Whenever :func:`aggregate_blob` would.
    """
    meta = ModelMeta(RoundId(round_id), Digest(bytes(base_hash)), Address(sender), num_samples, spec, strategy.name)
    return model_blob_matches(blob, params, meta)


def genesis_blob(spec: ModelSpec, *, seed: int, sender: str) -> bytes:
    """Encode the genesis model: fresh parameters of ``spec`` from ``seed``."""
    return encode_model(
        init_params(spec, seed), ModelMeta(RoundId(0), GENESIS_BASE, Address(sender), 0, spec, GENESIS_STRATEGY)
    )


def read_update(
    blob: bytes | bytearray,
    *,
    spec: ModelSpec,
    max_size: int,
    round_id: int,
    base_hash: bytes,
    sender: str,
    num_samples: int,
    max_norm: float | None,
    copy: bool = True,
) -> DecodedUpdate:
    """Decode an update, checking it against what the ledger records (``copy=False``: see :func:`decode_update`)."""
    expect = ExpectedMeta(round_id=round_id, base=Digest(bytes(base_hash)), sender=Address(sender), samples=num_samples)
    return decode_update(
        blob, expected_shapes=param_shapes(spec), max_size=max_size, expect=expect, max_norm=max_norm, copy=copy
    )


def read_model(blob: bytes | bytearray, *, spec: ModelSpec | None, max_size: int, copy: bool = True) -> DecodedModel:
    """Decode a model blob (genesis or aggregate; ``copy=False``: see :func:`decode_model`)."""
    return decode_model(blob, spec=spec, max_size=max_size, copy=copy)


__all__ = ["aggregate_blob", "aggregate_matches", "genesis_blob", "read_model", "read_update", "update_blob"]
