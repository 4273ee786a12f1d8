"""A participant: verifies, trains on its own data, and submits updates from its own account.

The participant never trains on a model it has not verified: before training on round r's
base it verifies every round from the genesis (or from its own last checkpoint) up to r
(:mod:`fedchain.protocol.custody`). Its data never leaves the object; only the update blob,
whose header carries the metrics its task reported, goes to the store, and its digest to the
chain.

:class:`ParticipantService` is its loop, like the coordinator's: every step reads the chain and
takes the one step its state calls for.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from fedchain.chain import Ledger, Signer
from fedchain.errors import (
    AlreadySubmittedError,
    ConfigError,
    DeadlinePassedError,
    RoundNotOpenError,
    VerificationError,
)
from fedchain.fl.dp import Spend
from fedchain.hashing import participant_seed, sha256, short, to_hex
from fedchain.orchestrator._dp import check_budget, record_dp, spend_of
from fedchain.orchestrator._events import log_event
from fedchain.orchestrator._step import Step
from fedchain.protocol import Checkpoint, Rules, advance, genesis
from fedchain.protocol.blobs import update_blob
from fedchain.records import RoundState, RoundStatus, TxResult
from fedchain.storage import BlobStore
from fedchain.tasks.api import Task
from fedchain.types import Address, Digest

if TYPE_CHECKING:
    from fedchain.orchestrator.masked import MaskedMember

logger = logging.getLogger(__name__)

_METRIC = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def _public_metrics(metrics: Mapping[str, Any], name: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if not isinstance(key, str) or not _METRIC.fullmatch(key):
            raise ConfigError(
                "task", f"{name}: metric name {key!r} is not a short plain name ([A-Za-z0-9_.-], 1 to 64)"
            )
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError("task", f"{name}: metric {key!r} is {value!r}, not a finite number")
        out[key] = float(value)
    return out


class Participant:
    """The participant role.

    Parameters
    ----------
    ledger, signer, store, rules:
        The federation's ledger, this participant's key, the blob store and the manifest's rules.
    task:
        The task that trains (its schema and model must be the manifest's).
    data:
        The participant's private data, as the task loaded it. It never leaves this object.
    name:
        A label for logs and the training seed (the hospital's name).
    """

    def __init__(
        self, ledger: Ledger, signer: Signer, store: BlobStore, rules: Rules, task: Task, data: Any, name: str
    ) -> None:
        schema = task.schema()
        if schema != rules.schema:
            raise ConfigError(
                "task",
                f"task {task.name!r} exchanges {schema.to_json()}, the federation manifest fixes {rules.schema.to_json()}",
            )
        if task.describe() != rules.model:
            raise ConfigError(
                "task",
                f"task {task.name!r} describes its model as {task.describe()!r}, the federation manifest says {rules.model!r}",
            )
        if dict(task.frozen()) != dict(rules.manifest.frozen):
            raise ConfigError(
                "task",
                f"task {task.name!r} builds on {dict(task.frozen())}, the federation manifest says {dict(rules.manifest.frozen)}",
            )
        self.ledger = ledger
        self.signer = signer
        self.store = store
        self.rules = rules
        self.task = task
        self.data = data
        self.name = name
        self.gas_used = 0
        self.checkpoint: Checkpoint | None = None
        self.dp_spends: dict[int, Spend] = {}  # this participant's recorded DP-SGD spending, by round
        self.masking: MaskedMember | None = None  # set by the factory in a masked federation
        self.submitted: dict[int, Digest] = {}  # the digests this process recorded, by round

    @property
    def address(self) -> Address:
        return self.signer.address

    @property
    def num_samples(self) -> int:
        return int(self.task.num_samples(self.data))

    def catch_up(self, upto: int) -> Checkpoint:
        """Verify every round before ``upto`` (chain of custody); return the checkpoint.

        Raises
        ------
        VerificationError
            Naming the first round that does not verify: nothing is trained on it.
        """
        if self.checkpoint is None:
            self.checkpoint = genesis(self.ledger, self.store, self.rules)
        cache = self.masking.round_cache if self.masking is not None else None
        self.checkpoint, verdicts = advance(
            self.ledger, self.store, self.rules, self.checkpoint, upto, masked_cache=cache
        )
        for v in verdicts:
            log_event("round_verified", round=v.round_id, ok=v.ok, by=self.name, status=v.status.name.lower())
            for o in v.outcomes:
                spend = spend_of(o.metrics)
                if o.record.participant == self.address and spend is not None:
                    self.dp_spends[v.round_id] = spend
        return self.checkpoint

    def has_submitted(self, round_id: int) -> bool:
        """Whether the chain already holds this participant's update for ``round_id``."""
        return self.ledger.update_hash(round_id, self.address) is not None

    def participate(self, round_id: int) -> TxResult | None:
        """Verify up to round ``round_id``, train on its base and submit the update.

        Returns ``None`` if the chain already has this participant's update (after a restart).

        Raises
        ------
        VerificationError
            If any round before, or the round's base, does not verify; nothing is trained then.
        ContractRevertError
            If the ledger refuses the submission (e.g. :class:`DeadlinePassedError`).
        """
        if self.has_submitted(round_id):
            logger.info("%s: already submitted for round %d", self.name, round_id)
            return None
        return self._participate(round_id, None)

    def _participate(self, round_id: int, state: RoundState | None) -> TxResult | None:
        """:meth:`participate` once the chain is known to hold no update of this participant's for ``round_id``.

        ``state`` is the round's state if the caller has just read it (it saves reading it again).
        """
        if self.masking is not None and not self.masking.in_roster(self, round_id):
            return None
        cp = self.catch_up(round_id)
        opened = self.ledger.round_opened(round_id, state)
        if opened.base_hash != cp.digest or opened.base_cid != cp.cid:
            raise VerificationError(
                round_id,
                "lineage",
                expected=f"{to_hex(cp.digest)} at {cp.cid}",
                actual=f"{to_hex(opened.base_hash)} at {opened.base_cid}",
            )
        assert cp.params is not None
        base = cp.params
        budget = self.rules.manifest.privacy_settings.dp
        spent = [self.dp_spends[r] for r in sorted(self.dp_spends)]
        if budget is not None and spent:
            check_budget(budget, spent, spent[-1], round_id=round_id, who=self.address, before_training=True)
        result = self.task.train(
            {k: np.array(v, dtype=np.float32, copy=True) for k, v in base.items()},
            self.data,
            dict(self.rules.manifest.train),
            seed=participant_seed(self.rules.manifest.seed, round_id, self.name),
        )
        if set(result.arrays) != set(base):
            raise ConfigError(
                "task",
                f"{self.task.name}: train returned tensors {sorted(result.arrays)}, the schema has {sorted(base)}",
            )
        delta = {
            k: np.subtract(np.asarray(result.arrays[k], dtype=np.float32), base[k], dtype=np.float32)
            for k in sorted(base)
        }
        metrics = _public_metrics(result.metrics, self.task.name)
        spend = record_dp(metrics)
        if budget is not None and spend is not None:
            check_budget(budget, spent, spend, round_id=round_id, who=self.address, before_training=False)
        if self.masking is not None:
            return self.masking.submit(self, round_id, cp, delta, result.num_samples, metrics)
        blob = update_blob(
            delta,
            round_id=round_id,
            base_hash=cp.digest,
            sender=self.address,
            num_samples=result.num_samples,
            metrics=metrics,
        )
        del delta
        digest = sha256(blob)
        cid = self.store.put(blob)
        self.store.pin(cid)
        del blob
        try:
            tx = self.ledger.submit_update(self.signer, round_id, digest, cid, result.num_samples)
        except AlreadySubmittedError:
            return None
        self.submitted[round_id] = digest
        self.gas_used += tx.gas_used
        logger.info(
            "%s: submitted round %d update %s (%d samples, gas %d)",
            self.name,
            round_id,
            short(digest),
            result.num_samples,
            tx.gas_used,
        )
        return tx


class ParticipantService:
    """A participant's loop: wait for registration, take part in every open round, verify the last.

    It stops when ``rounds`` rounds have ended (after verifying all of them).
    """

    def __init__(self, participant: Participant, *, rounds: int) -> None:
        self.participant = participant
        self.rounds = rounds
        self._said: set[tuple[str, int]] = set()

    @property
    def ledger(self) -> Ledger:
        return self.participant.ledger

    def _once(self, event: str, round_id: int | None, **fields: Any) -> None:
        key = (event, -1 if round_id is None else round_id)
        if key not in self._said:
            self._said.add(key)
            log_event(event, **({} if round_id is None else {"round": round_id}), **fields)

    def step(self) -> Step:
        """Take the one step the chain's state calls for."""
        p, ledger = self.participant, self.ledger
        p.signer.forget_nonce(ledger.chain.chain_id)
        entry = ledger.participant(p.address)
        if not entry.registered:
            self._once("waiting_for_registration", None, participant=p.address)
            return Step.IDLE
        if p.num_samples > entry.max_samples:
            raise ConfigError(
                "participant.data",
                f"{p.num_samples} records, above the {entry.max_samples} the coordinator registered for {p.address}",
            )
        if p.masking is not None and p.masking.ensure_key(p) is not None:
            return Step.WORKED
        r = ledger.next_round()
        if r == 0:
            self._once("waiting_for_round", 0)
            return Step.IDLE
        current = r - 1
        state = ledger.round_state(current)
        if state.status in (RoundStatus.FINALIZED, RoundStatus.ABANDONED):
            if r >= self.rounds:
                p.catch_up(r)
                log_event("federation_finished", rounds=r, ledger=ledger.address)
                return Step.DONE
            self._once("waiting_for_round", r)
            return Step.IDLE
        if p.masking is not None and state.status is RoundStatus.CLOSED:
            return p.masking.reveal_step(p, current)
        if p.has_submitted(current):
            self._once("update_on_chain", current, participant=p.address)
            return Step.IDLE
        if state.status is RoundStatus.CLOSED:
            self._once("round_missed", current, reason="closed")
            return Step.IDLE
        if ledger.chain.now() > state.deadline:
            self._once("round_missed", current, deadline=state.deadline)
            return Step.IDLE
        self._once("round_seen", current, deadline=state.deadline)
        try:
            tx = p._participate(current, state)  # has_submitted was just asked
        except DeadlinePassedError:
            self._once("round_missed", current, deadline=state.deadline)
            return Step.IDLE
        except RoundNotOpenError:
            self._once("round_missed", current, reason="closed")
            return Step.IDLE
        if tx is None:
            self._once("update_on_chain", current, participant=p.address)
        else:
            log_event(
                "update_submitted",
                round=current,
                participant=p.address,
                name=p.name,
                update=p.submitted.get(current) or ledger.update_hash(current, p.address),
                samples=p.num_samples,
                gas=tx.gas_used,
                tx=tx.tx_hash,
            )
        return Step.WORKED


__all__ = ["Participant", "ParticipantService", "participant_seed"]
