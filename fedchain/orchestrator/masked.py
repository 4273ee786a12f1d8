"""The masked path of the services: a participant's key, submission and reveals; the coordinator's reveal phases.

The plain path (fedchain/orchestrator/participant.py and coordinator.py) is unchanged; these
objects are attached to a :class:`Participant` (``participant.masking``) and a
:class:`Coordinator` (``coordinator.masking``) only when the manifest's rounds are masked.
Everything is read from the chain at each step (restartable).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedchain.chain import Ledger, Signer
from fedchain.errors import AggregationError
from fedchain.fl.dp import DpSpend
from fedchain.fl.masking import MaskingKey
from fedchain.hashing import short
from fedchain.orchestrator._dp import spend_of
from fedchain.orchestrator._events import log_event
from fedchain.orchestrator._step import Step
from fedchain.protocol import Checkpoint, Rules, load_model
from fedchain.protocol.blobs import aggregate_blob
from fedchain.protocol.masked import (
    MaskedRoundData,
    RevealState,
    build_masked_update,
    masked_config,
    open_my_shares,
    pair_seeds,
    read_round_cached,
    replay_reveals,
    unmask_aggregate,
)
from fedchain.records import RoundHistory, RoundStatus, TxResult
from fedchain.storage import BlobStore

if TYPE_CHECKING:
    from fedchain.orchestrator.participant import Participant

logger = logging.getLogger(__name__)


def unsettled(data: MaskedRoundData, now: int, rules: Rules) -> list[str]:
    """Senders whose blob this actor could not read, while the round's first phase is less than half over.

    A member uploads its blob only once its submission is mined, so right after the close an
    upload may still be in flight; a store may also fail for a moment. An actor that acted on
    such a view would drop the member (and reveal its pair seeds with it) while the others, who
    read the blob, keep it: their replays would differ. So nobody acts on an unreadable blob
    during the first half of the phase, and reads it again at every step; after that, the blob
    counts as unavailable (its sender leaves the survivors), as the audit will also see it if it
    never appears.
    """
    if now >= data.close_time + masked_config(rules).phase_seconds // 2:
        return []
    return sorted(who for who, (reason, _) in data.problems.items() if reason == "unavailable")


def round_state(
    ledger: Ledger, store: BlobStore, rules: Rules, round_id: int, cache: dict[Any, MaskedRoundData]
) -> tuple[MaskedRoundData, RevealState]:
    """The closed round's data and where its reveals stand now."""
    history = ledger.round_history(round_id)
    data = read_round_cached(ledger, store, rules, history, cache)
    state = replay_reveals(
        data, ledger.reveals(round_id, history.state), now=ledger.chain.now(), config=masked_config(rules)
    )
    return data, state


#: The HKDF info of a participant's masking key derived from its Ethereum key.
MASKING_KEY_INFO = b"fedchain/masking-key/v1"


def masking_key_for(signer: Signer) -> MaskingKey:
    """The participant's X25519 masking key, derived from its Ethereum key (HKDF-SHA256, info ``fedchain/masking-key/v1``).

    As secret as the Ethereum key it comes from, the same after a restart, and nothing more to
    keep: a participant process needs only its keystore.
    """
    account = getattr(signer, "_account")  # noqa: B009  # the key stays inside the Signer's account object
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=MASKING_KEY_INFO)
    return MaskingKey.from_private_bytes(hkdf.derive(bytes(account.key)))


class MaskedMember:
    """A participant's masked path. ``key`` is its X25519 masking key (kept with its Ethereum key)."""

    def __init__(self, key: MaskingKey, *, withhold: frozenset[str] = frozenset()) -> None:
        self.key = key
        self.withhold = withhold  # tests only: reveal phases this member stays silent in ("pairs", "shares")
        self.round_cache: dict[Any, MaskedRoundData] = {}
        """The closed round last read (:func:`read_round_cached`): for its reveals, then its verification."""
        self._uploaded: dict[int, bytes] = {}
        self._said_missed: set[int] = set()
        self._key_on_chain = False  # only this account can change its key, and only this object sends it

    def ensure_key(self, p: Participant) -> TxResult | None:
        """Publish the masking key unless the chain already holds it (asked until it is seen there)."""
        public = self.key.public_bytes()
        if self._key_on_chain or p.ledger.masking_key(p.address) == public:
            self._key_on_chain = True
            return None
        tx = p.ledger.register_masking_key(p.signer, public)
        p.gas_used += tx.gas_used
        self._key_on_chain = True
        log_event("masking_key_registered", participant=p.address, gas=tx.gas_used)
        return tx

    def in_roster(self, p: Participant, round_id: int) -> bool:
        """Whether this participant had its key on chain when ``round_id`` opened (said once when not).

        A roster smaller than the share threshold counts as not: no round with it can be unmasked.
        """
        roster = p.ledger.roster(round_id, p.ledger.round_state(round_id).opened_block)
        threshold = masked_config(p.rules).share_threshold
        if p.address in roster and len(roster) >= threshold:
            return True
        if round_id not in self._said_missed:
            self._said_missed.add(round_id)
            reason = (
                "not in the roster (no masking key when it opened)"
                if p.address not in roster
                else f"a roster of {len(roster)}, below the share threshold {threshold}: it cannot be unmasked"
            )
            log_event("round_missed", round=round_id, reason=reason)
        return False

    def submit(
        self,
        p: Participant,
        round_id: int,
        cp: Checkpoint,
        delta: Mapping[str, np.ndarray],
        num_samples: int,
        metrics: Mapping[str, float],
    ) -> TxResult | None:
        """Mask and record the update; upload the blob only after the submission is mined."""
        ledger = p.ledger
        history = ledger.round_history(round_id)
        roster = ledger.roster(round_id, history.state.opened_block)
        if p.address not in roster:
            return None
        if len(roster) < masked_config(p.rules).share_threshold:
            return None  # in_roster said so before training
        spend = spend_of(metrics)
        dp = None
        if spend is not None and spend[2] > 0:
            dp = DpSpend(spend[0], spend[1], spend[2], float(metrics["dp_delta"]), float(metrics["dp_epsilon"]))
        sub = build_masked_update(
            delta,
            num_samples=num_samples,
            config=masked_config(p.rules),
            key=self.key,
            roster=roster,
            me=p.address,
            chain_id=ledger.chain.chain_id,
            ledger=bytes.fromhex(ledger.address[2:]),
            round_id=round_id,
            base_hash=cp.digest,
            dp=dp,
        )
        tx = ledger.submit_update(p.signer, round_id, sub.digest, sub.cid, num_samples)
        p.gas_used += tx.gas_used
        cid = p.store.put(sub.blob)  # only now: a submission that missed the close never published its words
        p.store.pin(cid)
        self._uploaded[round_id] = sub.digest
        logger.info(
            "%s: submitted masked round %d update %s (gas %d)", p.name, round_id, short(sub.digest), tx.gas_used
        )
        return tx

    def reveal_step(self, p: Participant, round_id: int) -> Step:
        """Reveal exactly what the replayed plan asks of this participant now (nothing else)."""
        ledger = p.ledger
        if ledger.update_hash(round_id, p.address) is None:
            return Step.IDLE
        data, state = round_state(ledger, p.store, p.rules, round_id, self.round_cache)
        waiting = unsettled(data, ledger.chain.now(), p.rules)
        if waiting:
            logger.info("%s: round %d: waiting for the blobs of %s", p.name, round_id, ", ".join(waiting))
            return Step.IDLE
        plan = state.plan
        if p.address not in plan.survivors or p.address not in data.headers:
            return Step.IDLE
        chain_id, ledger_bytes = ledger.chain.chain_id, bytes.fromhex(ledger.address[2:])
        if plan.phase == "pairs" and p.address in plan.pair_requests and "pairs" not in self.withhold:
            owed = plan.pair_requests[p.address]
            everyone = pair_seeds(
                self.key, data.roster, me=p.address, chain_id=chain_id, ledger=ledger_bytes, round_id=round_id
            )
            tx = ledger.reveal_pair_seeds(p.signer, round_id, {j: everyone[j] for j in owed})
            p.gas_used += tx.gas_used
            log_event("pair_seeds_revealed", round=round_id, participant=p.address, others=len(owed), gas=tx.gas_used)
            return Step.WORKED
        if plan.phase == "shares" and p.address in plan.share_requests and "shares" not in self.withhold:
            # only survivors' seeds, only once S is final: this member never revealed a pair seed with any of them
            shares = open_my_shares(
                self.key, data, plan.share_requests[p.address], me=p.address, chain_id=chain_id, ledger=ledger_bytes
            )
            if not shares:
                return Step.IDLE  # what is still asked of it cannot be opened: the others' shares must do
            tx = ledger.reveal_shares(p.signer, round_id, shares)
            p.gas_used += tx.gas_used
            log_event("shares_revealed", round=round_id, participant=p.address, owners=len(shares), gas=tx.gas_used)
            return Step.WORKED
        return Step.IDLE


class MaskedRounds:
    """The coordinator's masked path: close when every roster member submitted (or at the deadline), then drive the reveals."""

    def __init__(self, ledger: Ledger, store: BlobStore, rules: Rules) -> None:
        self.ledger = ledger
        self.store = store
        self.rules = rules
        self._cache: dict[Any, MaskedRoundData] = {}
        self._keyed: set[str] = set()
        self.ended: tuple[int, MaskedRoundData, RevealState] | None = None  # the round aggregate() last replayed

    def ready_to_open(self, members: list[str]) -> bool:
        """Whether every listed participant has published its masking key (the next roster is complete).

        A key once on chain stays there (``registerMaskingKey`` refuses an empty one), so each
        participant's is looked up until it is seen.
        """
        for a in members:
            if a not in self._keyed:
                if self.ledger.masking_key(a) is None:
                    return False
                self._keyed.add(a)
        return True

    def ready_to_close(self, round_id: int) -> bool:
        state = self.ledger.round_state(round_id)
        if state.status is not RoundStatus.OPEN:
            return False
        if self.ledger.chain.now() > state.deadline:
            return True
        history = self.ledger.round_history(round_id, state)
        roster = self.ledger.roster(round_id, state.opened_block)
        return bool(roster) and {u.participant for u in history.updates} >= set(roster)

    def state(self, round_id: int) -> tuple[MaskedRoundData, RevealState]:
        return round_state(self.ledger, self.store, self.rules, round_id, self._cache)

    def can_finish(self, round_id: int) -> bool:
        """Whether the closed round's reveals are complete (``done``) or it must be abandoned."""
        if self.ledger.round_state(round_id).status is not RoundStatus.CLOSED:
            return False
        data, state = self.state(round_id)
        if unsettled(data, self.ledger.chain.now(), self.rules):
            return False
        return state.plan.phase in ("done", "abandon")

    def phase_deadline(self, round_id: int) -> int | None:
        _, state = self.state(round_id)
        return state.deadline

    def aggregate(self, round_id: int, history: RoundHistory) -> tuple[bytes | None, tuple[str, ...], int, str | None]:
        """``(aggregate blob, included, total samples, why abandoned)`` for a closed round whose reveals ended."""
        data, state = self.state(round_id)
        self.ended = (round_id, data, state)  # ``done`` and ``abandon`` are final: what the finish reports
        for who, what in state.wrong:
            logger.warning("round %d: participant %s revealed a wrong %s", round_id, who, what)
        if state.plan.phase != "done":
            return None, (), 0, state.why or f"the reveals ended in phase {state.plan.phase}"
        base = load_model(
            self.store,
            self.rules,
            history.opened.base_cid,
            history.opened.base_hash,
            round_id=round_id,
            what="base model",
        )
        try:
            params, total = unmask_aggregate(data, state, self.store, self.rules, base)
        except AggregationError as err:
            return None, (), 0, str(err)
        blob = aggregate_blob(
            params, self.rules, round_id=round_id, base_hash=history.opened.base_hash, num_samples=total
        )
        logger.info("round %d: unmasked %d survivors", round_id, len(state.plan.survivors))
        return blob, state.plan.survivors, total, None


__all__ = ["MASKING_KEY_INFO", "MaskedMember", "MaskedRounds", "masking_key_for", "round_state"]
