"""Chain of custody: nobody trains on, builds on or accepts a model it has not verified.

A :class:`Checkpoint` says how far a party has verified a ledger's history: every round before
``next_round`` verified, and the model the next round must build on (the last finalized
aggregate, or the genesis model). :func:`advance` verifies every round from the checkpoint up to
a given round, so a wrong aggregate cannot be laundered through an empty or abandoned round: a
participant that trains on round r's base has verified every round since the genesis (or since
its own last checkpoint), not only round r-1.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedchain.chain import Ledger
from fedchain.errors import VerificationError
from fedchain.hashing import to_hex
from fedchain.protocol.rules import Rules
from fedchain.protocol.verify import RoundVerdict, VerifiedModel, load_model, verify_round
from fedchain.records import RoundStatus
from fedchain.storage import BlobStore
from fedchain.types import Cid, Digest

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Checkpoint:
    """Every round before ``next_round`` is verified; ``cid``/``digest`` is what the next round builds on.

    ``params`` holds that model's parameters when the holder keeps them in memory (a participant
    trains on them); ``None`` means they are fetched (and checked) again when needed.
    """

    next_round: int
    cid: Cid
    digest: Digest
    params: Mapping[str, np.ndarray] | None = None

    def model(self, store: BlobStore, rules: Rules) -> VerifiedModel:
        """The checkpoint's model with its parameters, fetching and checking them if not held."""
        params = self.params
        if params is None:
            params = load_model(store, rules, self.cid, self.digest, round_id=self.next_round, what="base model")
        return VerifiedModel(self.cid, self.digest, params)


def genesis(ledger: Ledger, store: BlobStore, rules: Rules, *, keep: bool = True) -> Checkpoint:
    """The checkpoint before round 0: the genesis model, fetched and checked against the ledger."""
    info = ledger.info()
    cid = ledger.genesis_cid()
    params = load_model(store, rules, cid, info.genesis_hash, round_id=0, what="genesis model")
    return Checkpoint(0, cid, info.genesis_hash, params if keep else None)


def advance(
    ledger: Ledger,
    store: BlobStore,
    rules: Rules,
    checkpoint: Checkpoint,
    upto: int,
    *,
    keep: bool = True,
    masked_cache: dict[Any, Any] | None = None,
) -> tuple[Checkpoint, list[RoundVerdict]]:
    """Verify rounds ``checkpoint.next_round .. upto - 1`` (each must have ended) and return the new checkpoint.

    ``masked_cache``: a masked round's data the caller read before (``read_round_cached``'s cache).

    Raises
    ------
    VerificationError
        Naming the first round that does not verify, or one that has not ended yet.
    """
    verdicts: list[RoundVerdict] = []
    if upto <= checkpoint.next_round:
        return checkpoint, verdicts
    current = checkpoint
    base: VerifiedModel | None = current.model(store, rules) if current.params is not None else None
    for history in ledger.history(checkpoint.next_round, upto):
        r = int(history.state.round_id)
        if rules.manifest.private:
            # masked rounds need the ledger's key and reveal events
            from fedchain.protocol.masked import verify_masked_round

            verdict, model = verify_masked_round(
                ledger, history, store, rules, expected_base=current.digest, base=base, cache=masked_cache
            )
        else:
            verdict, model = verify_round(history, store, rules, expected_base=current.digest, base=base)
        verdicts.append(verdict)
        verdict.raise_for_failure()
        if history.state.status is RoundStatus.ABANDONED:
            current = Checkpoint(r + 1, current.cid, current.digest, current.params)
            continue
        if history.state.status is not RoundStatus.FINALIZED or history.aggregate is None:
            raise VerificationError(
                r, "state", expected="finalized or abandoned", actual=history.state.status.name.lower()
            )
        agg = history.aggregate
        if model is None:  # verified, but the stored blob changed between two reads: read it once more
            model = VerifiedModel(
                agg.cid,
                agg.aggregate_hash,
                load_model(store, rules, agg.cid, agg.aggregate_hash, round_id=r, what="aggregate"),
            )
        base = model if keep else None
        current = Checkpoint(r + 1, agg.cid, agg.aggregate_hash, model.params if keep else None)
        logger.info("round %d verified: aggregate %s", r, to_hex(agg.aggregate_hash))
    if current.next_round != upto:
        raise VerificationError(
            upto - 1, "history", expected=f"rounds up to {upto - 1}", actual=f"rounds up to {current.next_round - 1}"
        )
    return current, verdicts


__all__ = ["Checkpoint", "advance", "genesis"]
