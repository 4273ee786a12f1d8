"""The rules object: what a manifest says, in the form the round protocol uses.

Built once from the manifest the ledger fixes (:func:`load_rules`) and handed to the
coordinator, every participant and the audit alike, so that their verdicts cannot drift: they
screen with the same bounds, aggregate with the same strategy and check the same headers.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fedchain.chain import Ledger
from fedchain.errors import ConfigError, DigestMismatchError, StorageError, VerificationError
from fedchain.fl.schema import Schema
from fedchain.fl.strategy import FedAvg, Strategy
from fedchain.hashing import to_hex
from fedchain.protocol.manifest import Manifest
from fedchain.storage import BlobStore
from fedchain.types import Address, Cid, Digest

logger = logging.getLogger(__name__)

#: Aggregation rules a manifest may name, with the parameters each takes.
RULE_PARAMETERS: dict[str, tuple[str, ...]] = {"fedavg": ("server_lr",)}


def strategy_for(aggregation: Mapping[str, Any]) -> Strategy:
    """The aggregation strategy a manifest's ``aggregation`` table names, with its parameters.

    Raises
    ------
    ConfigError
        Naming ``manifest.aggregation.<key>`` for an unknown rule or parameter.
    """
    rule = aggregation.get("rule")
    if rule not in RULE_PARAMETERS:
        raise ConfigError("manifest.aggregation.rule", f"unknown rule {rule!r} (known: {', '.join(RULE_PARAMETERS)})")
    for key in sorted(aggregation):
        if key != "rule" and key not in RULE_PARAMETERS[str(rule)]:
            raise ConfigError(f"manifest.aggregation.{key}", f"not a parameter of {rule}")
    return FedAvg(server_lr=float(aggregation.get("server_lr", 1.0)))


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


__all__ = ["RULE_PARAMETERS", "Rules", "load_manifest", "load_rules", "strategy_for"]
