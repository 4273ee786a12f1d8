"""What the ledger says, as frozen dataclasses.

These are the only shapes that cross from the chain layer to the rest of the package;
raw web3 dicts stay inside :mod:`fedchain.chain`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from fedchain.types import Address, Cid, Digest, Gas, RoundId


class RoundStatus(enum.IntEnum):
    """Mirror of ``IFederatedLedger.RoundStatus``."""

    NOT_OPENED = 0
    OPEN = 1
    CLOSED = 2
    FINALIZED = 3
    ABANDONED = 4

    @property
    def ended(self) -> bool:
        """Whether the round is over (finalized or abandoned): nothing changes it any more."""
        return self in (RoundStatus.FINALIZED, RoundStatus.ABANDONED)


@dataclass(frozen=True)
class LedgerInfo:
    """Deploy-time facts of a ledger."""

    address: Address
    coordinator: Address
    genesis_hash: Digest
    manifest_hash: Digest
    deployed_block: int


@dataclass(frozen=True)
class ParticipantInfo:
    """A participant as the registry holds it now."""

    address: Address
    registered: bool
    max_samples: int


@dataclass(frozen=True)
class RoundState:
    """One round's state as the contract's storage holds it (no events needed).

    ``closed_block`` is 0 until the round is closed (and stays 0 for a round abandoned while
    open); ``end_block`` is the block of its finalization or abandonment, 0 until then. The
    aggregate digest is not in storage: it is in the round's ``RoundFinalized`` event
    (:attr:`RoundHistory.aggregate`).
    """

    round_id: RoundId
    status: RoundStatus
    deadline: int
    min_updates: int
    included_count: int
    opened_block: int
    closed_block: int
    end_block: int


@dataclass(frozen=True)
class RoundOpened:
    """A ``RoundOpened`` event."""

    round_id: RoundId
    base_hash: Digest
    base_cid: Cid
    deadline: int
    min_updates: int
    block_number: int
    tx_hash: str


@dataclass(frozen=True)
class UpdateRecord:
    """An ``UpdateSubmitted`` event: one participant's update for one round."""

    round_id: RoundId
    participant: Address
    update_hash: Digest
    cid: Cid
    num_samples: int
    block_number: int
    tx_hash: str


@dataclass(frozen=True)
class RoundClosedRecord:
    """A ``RoundClosed`` event: no update can be recorded in the round from this block on."""

    round_id: RoundId
    block_number: int
    tx_hash: str


@dataclass(frozen=True)
class RoundAbandonedRecord:
    """A ``RoundAbandoned`` event: the round ended without an aggregate."""

    round_id: RoundId
    block_number: int
    tx_hash: str


@dataclass(frozen=True)
class AggregateRecord:
    """A ``RoundFinalized`` event."""

    round_id: RoundId
    aggregate_hash: Digest
    cid: Cid
    included: tuple[Address, ...]
    block_number: int
    tx_hash: str


@dataclass(frozen=True)
class RoundHistory:
    """Everything the ledger recorded about one round."""

    state: RoundState
    opened: RoundOpened
    updates: tuple[UpdateRecord, ...]
    """Every recorded update, sorted by participant address (the aggregation order)."""
    aggregate: AggregateRecord | None
    closed: RoundClosedRecord | None = None
    abandoned: RoundAbandonedRecord | None = None


@dataclass(frozen=True)
class TxResult:
    """A mined transaction."""

    action: str
    tx_hash: str
    block_number: int
    gas_used: Gas


__all__ = [
    "AggregateRecord",
    "LedgerInfo",
    "ParticipantInfo",
    "RoundAbandonedRecord",
    "RoundClosedRecord",
    "RoundHistory",
    "RoundOpened",
    "RoundState",
    "RoundStatus",
    "TxResult",
    "UpdateRecord",
]
