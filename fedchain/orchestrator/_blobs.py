"""The orchestrator's view of the codec: blobs bound to a ledger's round, base and sender.

The codec offers two spellings (keyword metadata, or metadata records such as
``UpdateMeta``/``ModelMeta``/``ExpectedMeta``); this module is the one place that knows which
is installed, so the orchestrator, the verifier and the audit do not.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from fedchain.fl import codec as _codec
from fedchain.fl.model import ModelSpec, init_params, param_shapes
from fedchain.types import Address, Digest, RoundId

_RECORDS = hasattr(_codec, "UpdateMeta")


def strategy_name(strategy: object) -> str:
    """The name a model blob records for the strategy that made it."""
    return str(getattr(strategy, "name", "fedavg"))


def update_blob(delta: Mapping[str, Tensor], *, round_id: int, base_hash: bytes, sender: str, num_samples: int) -> bytes:
    """Encode a participant's update for ``round_id`` built on ``base_hash``."""
    if _RECORDS:
        meta = _codec.UpdateMeta(RoundId(round_id), Digest(bytes(base_hash)), Address(sender), num_samples)
        return bytes(_codec.encode_update(delta, meta))
    return bytes(_codec.encode_update(delta, round_id=round_id, base_hash=base_hash, sender=sender, num_samples=num_samples))


def aggregate_blob(params: Mapping[str, Tensor], *, spec: ModelSpec, strategy: object, round_id: int, base_hash: bytes, sender: str, num_samples: int) -> bytes:
    """Encode round ``round_id``'s aggregate (``sender`` is the coordinator)."""
    if _RECORDS:
        meta = _codec.ModelMeta(RoundId(round_id), Digest(bytes(base_hash)), Address(sender), num_samples, spec, strategy_name(strategy))
        return bytes(_codec.encode_model(params, meta))
    return bytes(_codec.encode_aggregate(params, spec=spec, round_id=round_id, base_hash=base_hash, sender=sender, num_samples=num_samples))


def genesis_blob(spec: ModelSpec, *, seed: int, sender: str) -> bytes:
    """Encode the genesis model: fresh parameters of ``spec`` from ``seed``."""
    if _RECORDS:
        meta = _codec.ModelMeta(RoundId(0), _codec.GENESIS_BASE, Address(sender), 0, spec, getattr(_codec, "GENESIS_STRATEGY", "genesis"))
        return bytes(_codec.encode_model(init_params(spec, seed), meta))
    return bytes(_codec.encode_genesis(spec, seed=seed, sender=sender))


def read_update(blob: bytes, *, spec: ModelSpec, max_size: int, round_id: int, base_hash: bytes, sender: str, num_samples: int, max_norm: float | None) -> Any:
    """Decode an update (``.delta``), checking it against what the ledger records."""
    if _RECORDS:
        expect = _codec.ExpectedMeta(round_id=round_id, base=Digest(bytes(base_hash)), sender=Address(sender), samples=num_samples)
        return _codec.decode_update(blob, expected_shapes=param_shapes(spec), max_size=max_size, expect=expect, max_norm=max_norm)
    return _codec.decode_update(blob, expected_shapes=param_shapes(spec), max_size=max_size, round_id=round_id, base_hash=base_hash, sender=sender, num_samples=num_samples, max_norm=max_norm)


def read_model(blob: bytes, *, spec: ModelSpec | None, max_size: int) -> Any:
    """Decode a model blob (``.params``), genesis or aggregate."""
    return _codec.decode_model(blob, spec=spec, max_size=max_size)


def model_spec(model: Any) -> ModelSpec:
    """The spec a decoded model declares."""
    spec = model.meta.spec if _RECORDS else model.spec
    assert isinstance(spec, ModelSpec)
    return spec


__all__ = ["aggregate_blob", "genesis_blob", "model_spec", "read_model", "read_update", "strategy_name", "update_blob"]
