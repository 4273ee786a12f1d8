"""The rules object: what a manifest says, in the form the round protocol uses.

Built once from the manifest the ledger fixes (:func:`load_rules`) and handed to the
coordinator, every participant and the audit alike, so that their verdicts cannot drift: they
screen with the same bounds, aggregate with the same strategy and check the same headers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedchain.chain import Ledger
from fedchain.errors import AggregationError, ConfigError, DigestMismatchError, StorageError, VerificationError
from fedchain.fl.robust import RULES, RobustResult, RobustRule, rule_from_config
from fedchain.fl.schema import Schema
from fedchain.fl.strategy import FedAvg, Strategy
from fedchain.hashing import to_hex
from fedchain.protocol.manifest import Manifest
from fedchain.storage import BlobStore
from fedchain.types import Address, Cid, Digest

logger = logging.getLogger(__name__)


class RobustStrategy:
    """A robust rule of :mod:`fedchain.fl.robust` behind the :class:`Strategy` interface.

    The rule needs every valid update at once (a coordinate-wise median sorts each element's K
    values), so the stream is gathered into memory: K updates, where FedAvg streams one at a time.
    What the last call selected, discarded and clipped is kept in :attr:`last` for the verdict.
    """

    def __init__(self, rule: RobustRule) -> None:
        self.rule = rule
        self.last: RobustResult | None = None

    @property
    def name(self) -> str:
        return self.rule.name

    def configure(self, round_id: int, default: Any) -> Any:
        return default

    def aggregate(
        self,
        base: Mapping[str, np.ndarray],
        updates: Iterable[tuple[str, int, Mapping[str, np.ndarray]]],
        *,
        total_samples: int,
        release_base: bool = False,
    ) -> dict[str, np.ndarray]:
        self.last = None
        items = [(p, n, {k: np.array(v, dtype=np.float32, copy=True) for k, v in d.items()}) for p, n, d in updates]
        if sum(n for _, n, _ in items) != total_samples:
            raise AggregationError(
                f"updates declare {sum(n for _, n, _ in items)} samples in all, the ledger says {total_samples}"
            )
        if not items:
            return {k: np.array(v, dtype=np.float32, copy=True) for k, v in base.items()}
        result = self.rule.aggregate(base, items)
        self.last = result
        return result.params


#: Aggregation rules a manifest may name.
RULE_NAMES = tuple(sorted(RULES))


def strategy_for(aggregation: Mapping[str, Any]) -> Strategy:
    """The aggregation strategy a manifest's ``aggregation`` table names, with its parameters.

    Plain FedAvg (no clipping) is :class:`FedAvg`, which streams the updates one at a time;
    every other rule (and FedAvg behind server-side clipping) is a :class:`RobustStrategy`.

    Raises
    ------
    ConfigError
        Naming ``manifest.aggregation.<key>`` for an unknown rule or parameter.
    """
    name = aggregation.get("rule")
    params = {k: v for k, v in aggregation.items() if k != "rule"}
    try:
        rule = rule_from_config(str(name), params)
    except ConfigError as err:
        raise ConfigError(
            f"manifest.{err.key}" if not str(err.key).startswith("manifest.") else err.key, err.problem
        ) from None
    if rule.rule == "fedavg" and rule.clip is None:
        return FedAvg(server_lr=float(rule.server_lr))
    return RobustStrategy(rule)


@dataclass(frozen=True)
class Rules:
    """One federation's rules, from its manifest, for one ledger.

    Attributes
    ----------
    manifest:
        The manifest itself.
    manifest_cid:
        Where it is stored.
    coordinator:
        The ledger's coordinator: the sender every aggregate blob must name.
    strategy:
        The aggregation the manifest names.
    """

    manifest: Manifest
    manifest_cid: Cid
    coordinator: Address
    strategy: Strategy

    @classmethod
    def of(cls, manifest: Manifest, *, coordinator: Address, manifest_cid: Cid) -> Rules:
        """The rules of ``manifest`` for a ledger coordinated by ``coordinator``."""
        return cls(manifest, manifest_cid, coordinator, strategy_for(manifest.aggregation))

    @property
    def schema(self) -> Schema:
        return self.manifest.schema

    @property
    def model(self) -> str:
        return self.manifest.model

    @property
    def max_blob_size(self) -> int:
        return self.manifest.max_blob_size

    @property
    def max_update_norm(self) -> float:
        return self.manifest.max_update_norm

    @property
    def min_updates(self) -> int:
        return self.manifest.min_updates

    @property
    def round_seconds(self) -> int:
        return self.manifest.round_seconds

    @property
    def digest(self) -> Digest:
        return self.manifest.digest


def load_manifest(store: BlobStore, cid: str, digest: Digest) -> Manifest:
    """Fetch a manifest and check it against the digest the ledger holds.

    Raises
    ------
    VerificationError
        If it cannot be fetched, does not hash to ``digest`` or is not a valid manifest.
    """
    try:
        blob = store.get_verified(cid, digest, max_size=1024 * 1024)
    except DigestMismatchError as err:
        raise VerificationError(0, "manifest hash", expected=to_hex(digest), actual=to_hex(err.actual)) from None
    except StorageError as err:
        raise VerificationError(0, "manifest", expected=f"{to_hex(digest)} at {cid}", actual=str(err)) from err
    try:
        return Manifest.from_bytes(blob)
    except ConfigError as err:
        raise VerificationError(0, "manifest", expected="a valid manifest", actual=str(err)) from err


def load_rules(ledger: Ledger, store: BlobStore) -> Rules:
    """The rules of the federation at ``ledger``: its manifest, fetched and checked against the chain."""
    info = ledger.info()
    cid = ledger.manifest_cid()
    manifest = load_manifest(store, cid, info.manifest_hash)
    try:
        return Rules.of(manifest, coordinator=info.coordinator, manifest_cid=cid)
    except ConfigError as err:
        raise VerificationError(0, "manifest", expected="rules this fedchain knows", actual=str(err)) from err


__all__ = ["RULE_NAMES", "RobustStrategy", "Rules", "load_manifest", "load_rules", "strategy_for"]
