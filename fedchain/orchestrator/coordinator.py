"""The coordinator: registers participants, opens, closes, aggregates and finalizes rounds.

It signs with its own key, receives its ledger, store and rules (nothing is reached for), and
keeps nothing that matters only in memory: after a crash everything is read back from the
chain and the store (which round is next, whether it is open or closed, what it builds on).

:class:`CoordinatorService` is its loop: each :meth:`~CoordinatorService.step` reads the chain
and takes the one step the chain's state calls for, so a process killed at any point and
started again carries on. The demo steps the same service in one process.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedchain.chain import Ledger, Signer
from fedchain.errors import AggregationError, ConfigError, QuorumNotReachedError, VerificationError
from fedchain.fl.robust import RobustResult
from fedchain.hashing import sha256, short, to_hex
from fedchain.orchestrator._events import log_event
from fedchain.orchestrator._step import Step
from fedchain.orchestrator.masked import MaskedRounds
from fedchain.protocol import (
    Checkpoint,
    Exclusion,
    RoundVerdict,
    Rules,
    UpdateOutcome,
    UpdateStatus,
    advance,
    genesis,
    load_model,
    prepare_aggregate,
)
from fedchain.protocol.blobs import aggregate_blob
from fedchain.protocol.masked import MASKED_RULE, outcomes_of
from fedchain.protocol.verify import mark_selection
from fedchain.records import RoundHistory, RoundState, RoundStatus, TxResult, UpdateRecord
from fedchain.storage import BlobStore
from fedchain.types import Address, Cid, Digest, RoundId

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RoundReport:
    """What the coordinator did to end one round (finalized or abandoned)."""

    round_id: int
    verdict: RoundVerdict
    aggregate_hash: Digest | None
    aggregate_cid: Cid | None
    gas_used: int

    @property
    def abandoned(self) -> bool:
        return self.verdict.status is RoundStatus.ABANDONED


@dataclass(frozen=True)
class _Prepared:
    """One screening of a round's recorded updates, with the aggregate of the valid ones."""

    key: tuple[object, ...]
    valid: list[UpdateRecord]
    excluded: list[Exclusion]
    params: dict[str, np.ndarray] | None
    error: AggregationError | None
    selection: RobustResult | None = None


def _key(history: RoundHistory) -> tuple[object, ...]:
    return (int(history.state.round_id), tuple((u.participant, bytes(u.update_hash)) for u in history.updates))


class Coordinator:
    """The coordinator role.

    Parameters
    ----------
    ledger, signer, store:
        The federation's ledger (its coordinator is ``signer``), the key, the blob store.
    rules:
        The federation's rules, from the manifest the ledger fixes.
    """

    def __init__(self, ledger: Ledger, signer: Signer, store: BlobStore, rules: Rules) -> None:
        if rules.coordinator != signer.address:
            raise VerificationError(0, "coordinator", expected=rules.coordinator, actual=signer.address)
        self.ledger = ledger
        self.signer = signer
        self.store = store
        self.rules = rules
        self.gas_used = 0
        self._checkpoint: Checkpoint | None = None
        self._prepared_cache: _Prepared | None = None
        self._closed_cache: RoundHistory | None = None
        self.opened: OpenedRound | None = None  # the round this process opened last
        self.masking = MaskedRounds(ledger, store, rules) if rules.manifest.private else None

    # -- registry

    def register(self, participant: Address, max_samples: int) -> TxResult | None:
        """Register ``participant`` unless it already is (idempotent, for restarts)."""
        if self.ledger.participant(participant).registered:
            return None
        cap = self.rules.manifest.privacy_settings.masked
        if cap is not None and max_samples > cap.max_samples:
            raise ConfigError(
                "manifest.privacy.max_samples",
                f"{participant} would be registered with {max_samples} samples, above the masked rounds' cap {cap.max_samples}",
            )
        tx = self.ledger.register_participant(self.signer, participant, max_samples)
        self.gas_used += tx.gas_used
        return tx

    # -- rounds

    def checkpoint(self, upto: int) -> Checkpoint:
        """Verify every round before ``upto`` (from the genesis, or from what this process verified)."""
        if self._checkpoint is None:
            self._checkpoint = genesis(self.ledger, self.store, self.rules, keep=False)
        self._checkpoint, _ = advance(self.ledger, self.store, self.rules, self._checkpoint, upto, keep=False)
        return self._checkpoint

    def open_round(self, round_id: int | None = None) -> int:
        """Open the next round on the last verified aggregate (verifying every round before it first).

        ``round_id`` is the chain's ``nextRound()`` if the caller has just read it; the ledger
        refuses any other. What was opened is in :attr:`opened`.
        """
        r = self.ledger.next_round() if round_id is None else round_id
        cp = self.checkpoint(r)
        last = self.ledger.last_aggregate()
        if last != cp.digest:
            raise VerificationError(r, "lineage", expected=to_hex(cp.digest), actual=to_hex(last))
        deadline = self.ledger.chain.now() + self.rules.round_seconds
        tx = self.ledger.open_round(self.signer, r, cp.digest, cp.cid, deadline, self.rules.min_updates)
        self.gas_used += tx.gas_used
        self.opened = OpenedRound(RoundId(r), cp.digest, deadline, self.rules.min_updates, tx)
        logger.info("round %d opened on %s, deadline %d", r, short(cp.digest), deadline)
        return r

    def ready_to_close(self, round_id: int, state: RoundState | None = None) -> bool:
        """Whether the open round may be closed: its deadline passed, or enough valid updates are recorded.

        Once enough updates are recorded they are screened and, optimistically in the same pass,
        aggregated, so that finalizing right after the close does not fetch them again.
        """
        if self.masking is not None:
            return self.masking.ready_to_close(round_id)
        state = state or self.ledger.round_state(round_id)
        if state.status is not RoundStatus.OPEN:
            return False
        if self.ledger.chain.now() > state.deadline:
            return True
        history = self.ledger.round_history(round_id, state)
        if len(history.updates) < state.min_updates:
            return False
        return len(self._prepared(history).valid) >= state.min_updates

    def close(self, round_id: int) -> TxResult:
        """Close the round: from now on the set of recorded updates is fixed on chain."""
        tx = self.ledger.close_round(self.signer, round_id)
        self.gas_used += tx.gas_used
        logger.info("round %d closed", round_id)
        return tx

    def can_finalize(self, round_id: int, state: RoundState | None = None) -> bool:
        """Whether a closed round can end now (the quorum of valid updates, or the deadline passed).

        The chain's clock is asked only when the valid updates are not enough (finishing needs
        their screening and aggregate in any case; the closed round's history is read once).
        """
        if self.masking is not None:
            return self.masking.can_finish(round_id)
        state = state or self.ledger.round_state(round_id)
        if state.status is not RoundStatus.CLOSED:
            return False
        prepared = self._prepared(self.closed_history(round_id, state))
        if prepared.error is not None or len(prepared.valid) >= state.min_updates:
            return True
        return self.ledger.chain.now() > state.deadline

    def closed_history(self, round_id: int, state: RoundState | None = None) -> RoundHistory:
        """The history of ``round_id`` while it is closed, read from the chain once.

        Between its close and its end a plain round's events cannot change (the close fixed the
        recorded updates; only ``finalizeRound`` or ``abandonRound`` come next), so the history
        read right after the close serves every step until the end, as long as the round's
        state (``state``, just read, or read here) is still the one it was read with.
        """
        state = state or self.ledger.round_state(round_id)
        cached = self._closed_cache
        if cached is not None and self.masking is None and state.status is RoundStatus.CLOSED and cached.state == state:
            return cached
        history = self.ledger.round_history(round_id, state)
        self._closed_cache = history if history.state.status is RoundStatus.CLOSED else None
        return history

    def finish(self, round_id: int, state: RoundState | None = None) -> RoundReport:
        """End a closed round: finalize it with the aggregate of its valid updates, or abandon it.

        A round is abandoned when no recorded update is valid, or when the aggregate of the valid
        ones would not be finite (no honest party can be made to fail by such a round: the next
        round builds on the same base).
        """
        history = self.closed_history(round_id, state)
        self._closed_cache = None  # the round ends here
        if history.state.status is not RoundStatus.CLOSED:
            raise VerificationError(round_id, "state", expected="closed", actual=history.state.status.name.lower())
        if self.masking is not None:
            return self._finish_masked(round_id, history)
        prepared = self._prepared(history)
        self._prepared_cache = None  # hold no model past its round
        for ex in prepared.excluded:
            logger.warning("round %d: excluding %s: %s (%s)", round_id, ex.participant, ex.reason, ex.detail)
        if prepared.params is None or not prepared.valid:
            why = str(prepared.error) if prepared.error is not None else "no valid update"
            tx = self.ledger.abandon_round(self.signer, round_id)
            self.gas_used += tx.gas_used
            logger.warning("round %d abandoned: %s", round_id, why)
            verdict = self._verdict(round_id, RoundStatus.ABANDONED, prepared, None, history)
            return RoundReport(round_id, verdict, None, None, tx.gas_used)
        total = sum(u.num_samples for u in prepared.valid)
        blob = aggregate_blob(
            prepared.params, self.rules, round_id=round_id, base_hash=history.opened.base_hash, num_samples=total
        )
        digest = sha256(blob)
        cid = self.store.put(blob)
        self.store.pin(cid)
        del blob
        included = tuple(u.participant for u in prepared.valid)
        tx = self.ledger.finalize_round(self.signer, round_id, digest, cid, list(included))
        self.gas_used += tx.gas_used
        # What was aggregated is exactly the updates recorded before the close (the prepared key
        # is the round's closed history); what remains is that the chain records this aggregate
        # and this inclusion list for the round built on this base.
        recorded = self.ledger.round_history(round_id)
        if _key(recorded) != prepared.key:
            raise VerificationError(
                round_id, "recorded updates", expected="the closed round's updates", actual="a different set"
            )
        _check_recorded(round_id, recorded, history, digest, included)
        verdict = self._verdict(round_id, RoundStatus.FINALIZED, prepared, digest, recorded)
        if self._checkpoint is not None and self._checkpoint.next_round == round_id:
            self._checkpoint = Checkpoint(round_id + 1, cid, digest, None)  # verified as it was built
        logger.info(
            "round %d finalized: %d included, %d excluded, aggregate %s",
            round_id,
            len(included),
            len(prepared.excluded),
            short(digest),
        )
        return RoundReport(round_id, verdict, digest, cid, tx.gas_used)

    def _finish_masked(self, round_id: int, history: RoundHistory) -> RoundReport:
        """End a closed masked round whose reveals are complete: finalize the unmasked aggregate, or abandon."""
        assert self.masking is not None
        blob, included_names, _total, why = self.masking.aggregate(round_id, history)
        included = tuple(Address(a) for a in included_names)
        ended = self.masking.ended  # what aggregate() just replayed: a ``done`` or ``abandon`` is final
        data, state = ended[1:] if ended is not None and ended[0] == round_id else self.masking.state(round_id)
        missing = tuple(a for a in data.roster if a not in {u.participant for u in history.updates})
        if blob is None:
            tx = self.ledger.abandon_round(self.signer, round_id)
            self.gas_used += tx.gas_used
            logger.warning("round %d abandoned: %s", round_id, why)
            outcomes, excluded = outcomes_of(data, state, ())
            verdict = RoundVerdict(
                round_id, RoundStatus.ABANDONED, (), tuple(excluded), missing, None, (), tuple(outcomes), MASKED_RULE
            )
            return RoundReport(round_id, verdict, None, None, tx.gas_used)
        digest = sha256(blob)
        cid = self.store.put(blob)
        self.store.pin(cid)
        del blob
        tx = self.ledger.finalize_round(self.signer, round_id, digest, cid, list(included))
        self.gas_used += tx.gas_used
        # The survivors' words and the reveals were read from the closed round and its ended phases
        # (``done`` is final: no later reveal changes the replay); what remains is that the chain
        # records this aggregate and these survivors, as for a plain round.
        recorded = self.ledger.round_history(round_id)
        _check_recorded(round_id, recorded, history, digest, included)
        if self._checkpoint is not None and self._checkpoint.next_round == round_id:
            self._checkpoint = Checkpoint(round_id + 1, cid, digest, None)  # verified as it was built
        outcomes, excluded = outcomes_of(data, state, included)
        verdict = RoundVerdict(
            round_id,
            RoundStatus.FINALIZED,
            included,
            tuple(excluded),
            missing,
            digest,
            (),
            tuple(outcomes),
            MASKED_RULE,
        )
        logger.info("round %d finalized (masked): %d survivors, aggregate %s", round_id, len(included), short(digest))
        return RoundReport(round_id, verdict, digest, cid, tx.gas_used)

    def abandon(self, round_id: int) -> TxResult:
        """Abandon an open or closed round (its quorum cannot be reached)."""
        tx = self.ledger.abandon_round(self.signer, round_id)
        self.gas_used += tx.gas_used
        return tx

    def _verdict(
        self, round_id: int, status: RoundStatus, prepared: _Prepared, digest: Digest | None, history: RoundHistory
    ) -> RoundVerdict:
        submitted = {u.participant for u in history.updates}
        missing = tuple(
            a
            for a in self.ledger.participant_addresses()
            if a not in submitted and self.ledger.participant(a).registered
        )
        included = tuple(u.participant for u in prepared.valid) if status is RoundStatus.FINALIZED else ()
        outcomes = [
            UpdateOutcome(u, UpdateStatus.INCLUDED if u.participant in included else UpdateStatus.VALID)
            for u in prepared.valid
        ]
        if status is RoundStatus.FINALIZED:
            mark_selection(outcomes, prepared.selection)  # discarded and clipped, as the audit marks them
        excluded = tuple(
            UpdateOutcome(
                next(u for u in history.updates if u.participant == e.participant),
                UpdateStatus.EXCLUDED,
                e.reason,
                e.detail,
            )
            for e in prepared.excluded
        )
        return RoundVerdict(
            round_id,
            status,
            included,
            tuple(prepared.excluded),
            missing,
            digest,
            (),
            (*outcomes, *excluded),
            self.rules.strategy.name,
        )

    def _prepared(self, history: RoundHistory) -> _Prepared:
        """The screening and aggregate of the round's recorded updates, reused while they stay the same."""
        key = _key(history)
        cached = self._prepared_cache
        if cached is not None and cached.key == key:
            return cached
        self._prepared_cache = None  # let the previous model go before building this one
        round_id = int(history.state.round_id)

        def load_base() -> dict[str, np.ndarray]:
            return load_model(
                self.store,
                self.rules,
                history.opened.base_cid,
                history.opened.base_hash,
                round_id=round_id,
                what="base model",
            )

        p = prepare_aggregate(history, self.store, self.rules, load_base)
        prepared = _Prepared(key, list(p.valid), list(p.excluded), p.params, p.error, p.selection)
        self._prepared_cache = prepared
        return prepared


def _check_recorded(
    round_id: int, recorded: RoundHistory, history: RoundHistory, digest: Digest, included: Sequence[str]
) -> None:
    """That the chain now records ``digest`` and exactly ``included`` for the round built on ``history``'s base."""
    if recorded.aggregate is None or recorded.aggregate.aggregate_hash != digest:
        actual = to_hex(recorded.aggregate.aggregate_hash) if recorded.aggregate else "none"
        raise VerificationError(round_id, "aggregate (recorded)", expected=to_hex(digest), actual=actual)
    if set(recorded.aggregate.included) != set(included) or recorded.opened.base_hash != history.opened.base_hash:
        raise VerificationError(
            round_id,
            "inclusion (recorded)",
            expected=",".join(included),
            actual=",".join(recorded.aggregate.included),
        )


@dataclass(frozen=True)
class OpenedRound:
    """A round as :meth:`Coordinator.open_round` opened it (what the ledger accepted)."""

    round_id: RoundId
    base: Digest
    deadline: int
    min_updates: int
    tx: TxResult


@dataclass(frozen=True)
class Registration:
    """A participant the coordinator registers."""

    address: Address
    max_samples: int
    name: str


class CoordinatorService:
    """The coordinator's loop (see the module docstring).

    Each step, in this order: register a listed participant that is not registered yet; close
    the open round once it may be closed; end the closed round (finalize, or abandon); stop when
    ``rounds`` rounds have ended; open the next round.
    """

    def __init__(self, coordinator: Coordinator, participants: Sequence[Registration], *, rounds: int) -> None:
        self.coordinator = coordinator
        self.participants = tuple(participants)
        self.rounds = rounds
        self._registered: set[str] = set()
        self._waiting_logged: tuple[int, str] | None = None
        self._early_finalize: int | None = None  # the round whose finalize the chain found early
        self.reports: list[RoundReport] = []

    @property
    def ledger(self) -> Ledger:
        return self.coordinator.ledger

    def _waiting(self, round_id: int, what: str, **fields: object) -> None:
        if self._waiting_logged != (round_id, what):
            log_event(what, round=round_id, **fields)
            self._waiting_logged = (round_id, what)

    def step(self) -> Step:
        """Take the one step the chain's state calls for."""
        ledger, c = self.ledger, self.coordinator
        c.signer.forget_nonce(ledger.chain.chain_id)  # after a node restart or a failed send it may be stale
        for p in self.participants:
            if p.address in self._registered:
                continue
            tx = c.register(p.address, p.max_samples)
            self._registered.add(p.address)
            if tx is not None:
                log_event(
                    "participant_registered",
                    participant=p.address,
                    name=p.name,
                    max_samples=p.max_samples,
                    gas=tx.gas_used,
                )
                return Step.WORKED
        r = ledger.next_round()
        if r > 0:
            state = ledger.round_state(r - 1)
            if state.status is RoundStatus.OPEN:
                if not c.ready_to_close(r - 1, state):
                    self._waiting(r - 1, "waiting_for_updates", min_updates=state.min_updates, deadline=state.deadline)
                    return Step.IDLE
                tx = c.close(r - 1)
                recorded = ledger.round_history(r - 1) if c.masking is not None else c.closed_history(r - 1)
                log_event("round_closed", round=r - 1, updates=len(recorded.updates), gas=tx.gas_used)
                return Step.WORKED
            if state.status is RoundStatus.CLOSED:
                if not c.can_finalize(r - 1, state):
                    self._waiting(r - 1, "waiting_for_deadline", deadline=state.deadline)
                    return Step.IDLE
                try:
                    report = c.finish(r - 1)
                except QuorumNotReachedError as err:
                    # The deadline passed by the clock this side reads, not yet by the clock of the
                    # block the finalize went into (another node's, on a network): try again later.
                    if self._early_finalize != r - 1:  # once a round, not at every poll
                        logger.warning("round %d: the chain says its deadline has not passed yet: %s", r - 1, err)
                        self._early_finalize = r - 1
                    self._waiting(r - 1, "waiting_for_deadline", deadline=state.deadline)
                    return Step.IDLE
                self.reports.append(report)
                if report.abandoned:
                    log_event("round_abandoned", round=r - 1, updates=len(report.verdict.outcomes), gas=report.gas_used)
                else:
                    log_event(
                        "round_finalized",
                        round=r - 1,
                        updates=len(report.verdict.outcomes),
                        included=len(report.verdict.included),
                        excluded=len(report.verdict.excluded),
                        aggregate=report.aggregate_hash,
                        cid=report.aggregate_cid,
                        gas=report.gas_used,
                    )
                log_event("round_verified", round=r - 1, ok=report.verdict.ok, by="coordinator")
                return Step.WORKED
        if r >= self.rounds:
            log_event("federation_finished", rounds=r, ledger=ledger.address)
            return Step.DONE
        if c.masking is not None and not c.masking.ready_to_open([p.address for p in self.participants]):
            self._waiting(r, "waiting_for_masking_keys", participants=len(self.participants))
            return Step.IDLE
        c.open_round(r)
        assert c.opened is not None
        log_event(
            "round_opened",
            round=c.opened.round_id,
            deadline=c.opened.deadline,
            min_updates=c.opened.min_updates,
            base=c.opened.base,
            gas=c.opened.tx.gas_used,
        )
        return Step.WORKED


__all__ = ["Coordinator", "CoordinatorService", "OpenedRound", "Registration", "RoundReport"]
