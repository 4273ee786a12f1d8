"""The coordinator and participant roles.

Each actor receives its ledger, store and strategy (nothing is reached for), signs with its
own key, and keeps no state that matters: everything it needs to carry on after a crash is
read back from the chain and the store (which round is next, whether it already submitted,
what the current global model is).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from fedchain.chain import Ledger, Signer
from fedchain.errors import ContractRevertError, VerificationError
from fedchain.fl import (
    Dataset,
    ModelSpec,
    Strategy,
    TrainConfig,
    derive_seed,
)
from fedchain.fl.simulate import local_round
from fedchain.hashing import sha256, short
from fedchain.orchestrator._blobs import aggregate_blob, genesis_blob, update_blob
from fedchain.orchestrator.verify import (
    Exclusion,
    RoundVerdict,
    load_model,
    screen_and_aggregate,
    verify_round,
    verify_round_chained,
)
from fedchain.records import RoundHistory, RoundStatus, TxResult, UpdateRecord
from fedchain.storage import BlobStore
from fedchain.types import Address, Cid, Digest

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FederationSettings:
    """What every actor of one federation agrees on.

    Attributes
    ----------
    spec:
        The model's shape.
    train:
        Local training settings participants use each round.
    seed:
        Root seed: genesis initialisation and each participant's shuffling derive from it.
    round_seconds:
        Time from opening a round to its deadline.
    min_updates:
        Updates needed to finalize before the deadline.
    max_blob_size:
        Largest update or model blob anybody fetches.
    max_update_norm:
        L2 bound on an update's delta (``None``: no bound).
    server_lr:
        FedAvg's server learning rate (eta).
    """

    spec: ModelSpec
    train: TrainConfig
    seed: int = 0
    round_seconds: int = 600
    min_updates: int = 1
    max_blob_size: int = 64 * 1024 * 1024
    max_update_norm: float | None = None
    server_lr: float = 1.0


@dataclass(frozen=True)
class RoundReport:
    """What the coordinator did in one round."""

    round_id: int
    verdict: RoundVerdict
    aggregate_hash: Digest
    aggregate_cid: Cid
    gas_used: int


class Coordinator:
    """Opens rounds, waits for updates, aggregates, finalizes, verifies.

    Parameters
    ----------
    ledger, signer, store, strategy, settings:
        Injected backends and the federation's settings.
    """

    def __init__(
        self, ledger: Ledger, signer: Signer, store: BlobStore, strategy: Strategy, settings: FederationSettings
    ) -> None:
        self.ledger = ledger
        self.signer = signer
        self.store = store
        self.strategy = strategy
        self.settings = settings
        self.gas_used = 0
        self._verdicts: dict[int, RoundVerdict] = {}
        self._prepared_cache: _Prepared | None = None

    # -- genesis and registry

    @staticmethod
    def publish_genesis(store: BlobStore, settings: FederationSettings, coordinator: Address) -> tuple[Digest, Cid]:
        """Create the genesis model from the settings' seed, store it, return its digest and CID."""
        blob = genesis_blob(settings.spec, seed=derive_seed(settings.seed, "genesis"), sender=coordinator)
        cid = store.put(blob)
        store.pin(cid)
        return sha256(blob), cid

    def register(self, participant: Address, max_samples: int) -> TxResult | None:
        """Register ``participant`` unless it already is (idempotent, for restarts)."""
        if self.ledger.participant(participant).registered:
            return None
        tx = self.ledger.register_participant(self.signer, participant, max_samples)
        self.gas_used += tx.gas_used
        return tx

    # -- rounds

    def current_model(self) -> tuple[int, Digest, Cid]:
        """The next round to open, and the model it must build on (from the chain)."""
        r = self.ledger.next_round()
        if r == 0:
            return 0, self.ledger.info().genesis_hash, self.ledger.genesis_cid()
        previous = self.ledger.round_history(r - 1)
        if previous.aggregate is None:
            raise VerificationError(r - 1, "state", expected="finalized", actual="still open")
        return r, previous.aggregate.aggregate_hash, previous.aggregate.cid

    def open_round(self) -> int:
        """Open the next round on the current model (after verifying the previous round)."""
        r, base_hash, base_cid = self.current_model()
        if r > 0:
            # A round this process finalized was verified as it was built (see finalize); after a
            # restart the cache is empty and the round is verified in full from the chain.
            verdict = self._verdicts.get(r - 1)
            if verdict is None or verdict.aggregate_hash != base_hash:
                verdict = self.verify(r - 1)
            verdict.raise_for_failure()
        deadline = self.ledger.chain.now() + self.settings.round_seconds
        tx = self.ledger.open_round(self.signer, r, base_hash, base_cid, deadline, self.settings.min_updates)
        self.gas_used += tx.gas_used
        logger.info("round %d opened on %s, deadline %d", r, short(base_hash), deadline)
        return r

    def ready_to_finalize(self, round_id: int) -> bool:
        """Whether the quorum of valid updates arrived or the deadline passed.

        Once enough updates are recorded they are screened, and (optimistically, in the same
        pass) aggregated, so that :meth:`finalize` right after does not fetch them again.
        """
        state = self.ledger.round_state(round_id)
        if state.status is not RoundStatus.OPEN:
            return False
        if self.ledger.chain.now() > state.deadline:
            return True
        history = self.ledger.round_history(round_id, state)
        if len(history.updates) < state.min_updates:
            return False
        return len(self._prepared(history).valid) >= state.min_updates

    def finalize(self, round_id: int) -> RoundReport:
        """Aggregate the valid updates of ``round_id``, store the model and record it."""
        history = self.ledger.round_history(round_id)
        prepared = self._prepared(history)
        valid, excluded, params = prepared.valid, prepared.excluded, prepared.params
        self._prepared_cache = None  # hold no model past its round
        for ex in excluded:
            logger.warning("round %d: excluding %s: %s (%s)", round_id, ex.participant, ex.reason, ex.detail)
        total = sum(u.num_samples for u in valid)
        spec = prepared.spec
        del prepared
        blob = aggregate_blob(
            params,
            spec=spec,
            strategy=self.strategy,
            round_id=round_id,
            base_hash=history.opened.base_hash,
            sender=self.signer.address,
            num_samples=total,
        )
        del params
        digest = sha256(blob)
        cid = self.store.put(blob)
        self.store.pin(cid)
        included = tuple(u.participant for u in valid)
        tx = self.ledger.finalize_round(self.signer, round_id, digest, cid, list(included))
        self.gas_used += tx.gas_used
        # Every included update was fetched, re-hashed against the ledger and validated above, and
        # the aggregate computed from exactly them: what remains to verify is that the chain now
        # records this aggregate and this inclusion list for the round built on this base.
        recorded = self.ledger.round_history(round_id)
        if recorded.aggregate is None or recorded.aggregate.aggregate_hash != digest:
            raise VerificationError(
                round_id,
                "aggregate (recorded)",
                expected=digest.hex(),
                actual=recorded.aggregate.aggregate_hash.hex() if recorded.aggregate else "none",
            )
        if set(recorded.aggregate.included) != set(included) or recorded.opened.base_hash != history.opened.base_hash:
            raise VerificationError(
                round_id,
                "inclusion (recorded)",
                expected=",".join(included),
                actual=",".join(recorded.aggregate.included),
            )
        submitted = {u.participant for u in recorded.updates}
        # who is registered and sent nothing: one call for the addresses, then an entry only for
        # those that did not submit (usually none)
        missing = tuple(
            a
            for a in self.ledger.participant_addresses()
            if a not in submitted and self.ledger.participant(a).registered
        )
        verdict = RoundVerdict(round_id, recorded.state.status, included, tuple(excluded), missing, digest)
        self._verdicts[round_id] = verdict
        logger.info(
            "round %d finalized: %d included, %d excluded, aggregate %s",
            round_id,
            len(valid),
            len(excluded),
            short(digest),
        )
        return RoundReport(round_id, verdict, digest, cid, tx.gas_used)

    def verify(self, round_id: int) -> RoundVerdict:
        """Verify a round against the ledger (see :mod:`fedchain.orchestrator.verify`)."""
        history = self.ledger.round_history(round_id)
        expected = self.ledger.expected_base(round_id)
        return verify_round(
            history,
            self.store,
            self.strategy,
            expected_base=expected,
            coordinator=self.signer.address,
            registered=tuple(p.address for p in self.ledger.participants() if p.registered),
            spec=self.settings.spec,
            max_blob_size=self.settings.max_blob_size,
            max_update_norm=self.settings.max_update_norm,
        )

    def wait_and_finalize(
        self, round_id: int, *, poll: float = 0.5, sleep: Callable[[float], None] = time.sleep
    ) -> RoundReport:
        """Wait until :meth:`ready_to_finalize`, then :meth:`finalize`."""
        while not self.ready_to_finalize(round_id):
            sleep(poll)
        return self.finalize(round_id)

    def _prepared(self, history: RoundHistory) -> _Prepared:
        """:func:`~fedchain.orchestrator.verify.screen_and_aggregate` of the round's recorded updates.

        The result is reused while the recorded updates stay the same (``ready_to_finalize``
        polls, then ``finalize``).
        """
        key = (int(history.state.round_id), tuple((u.participant, bytes(u.update_hash)) for u in history.updates))
        cached = self._prepared_cache
        if cached is not None and cached.key == key:
            return cached
        self._prepared_cache = None  # let the previous model go before building this one
        round_id = int(history.state.round_id)
        spec = self.settings.spec

        def load_base() -> dict[str, Tensor]:
            return load_model(
                self.store,
                history.opened.base_cid,
                history.opened.base_hash,
                spec=spec,
                max_blob_size=self.settings.max_blob_size,
                round_id=round_id,
                what="base model",
            )[1]

        valid, excluded, params = screen_and_aggregate(
            history,
            self.store,
            self.strategy,
            load_base,
            spec=spec,
            max_blob_size=self.settings.max_blob_size,
            max_update_norm=self.settings.max_update_norm,
        )
        prepared = _Prepared(key, spec, valid, excluded, params)
        self._prepared_cache = prepared
        return prepared


@dataclass(frozen=True)
class _Prepared:
    """One screening of a round's recorded updates, with the aggregate of the valid ones."""

    key: tuple[object, ...]
    spec: ModelSpec
    valid: list[UpdateRecord]
    excluded: list[Exclusion]
    params: dict[str, Tensor]


class Participant:
    """Trains on its own data and submits updates from its own account.

    Parameters
    ----------
    ledger, signer, store, strategy, settings:
        Injected backends and the federation's settings.
    shard:
        The participant's private training data. It never leaves this object.
    name:
        A label for logs (the hospital's name).
    """

    def __init__(
        self,
        ledger: Ledger,
        signer: Signer,
        store: BlobStore,
        strategy: Strategy,
        settings: FederationSettings,
        shard: Dataset,
        name: str,
    ) -> None:
        self.ledger = ledger
        self.signer = signer
        self.store = store
        self.strategy = strategy
        self.settings = settings
        self.shard = shard
        self.name = name
        self.gas_used = 0

    @property
    def address(self) -> Address:
        return self.signer.address

    def accept_base(self, round_id: int, *, expected: Digest | None = None) -> dict[str, Tensor]:
        """Fetch round ``round_id``'s base model, verifying the ledger first.

        For round r > 0 the whole of round r-1 is verified (every included update re-hashed,
        the aggregate recomputed bit for bit, the lineage checked) before the model is used.
        ``expected`` is the base digest the ledger requires for ``round_id``, if the caller
        has just read it (else it is read here).

        Raises
        ------
        VerificationError
            If the previous round or the base model does not verify.
        """
        history = self.ledger.round_history(round_id)
        if expected is None:
            expected = self.ledger.expected_base(round_id)
        if history.opened.base_hash != expected:
            raise VerificationError(round_id, "lineage", expected=expected.hex(), actual=history.opened.base_hash.hex())
        if round_id > 0:
            previous = self.ledger.round_history(round_id - 1)
            verdict, aggregate = verify_round_chained(
                previous,
                self.store,
                self.strategy,
                base=None,
                expected_base=self.ledger.expected_base(round_id - 1),
                coordinator=self.ledger.info().coordinator,
                spec=self.settings.spec,
                max_blob_size=self.settings.max_blob_size,
                max_update_norm=self.settings.max_update_norm,
            )
            verdict.raise_for_failure()
            # the previous round's aggregate, just read and checked against the chain: this
            # round's base if the round names that very blob (the contract links the digests;
            # the CID is the coordinator's word, so it is compared too)
            if aggregate is not None and aggregate.cid == history.opened.base_cid and aggregate.digest == expected:
                return dict(aggregate.params)
        _, params = load_model(
            self.store,
            history.opened.base_cid,
            expected,
            spec=self.settings.spec,
            max_blob_size=self.settings.max_blob_size,
            round_id=round_id,
            what="base model",
        )
        return params

    def has_submitted(self, round_id: int) -> bool:
        """Whether the chain already holds this participant's update for ``round_id``."""
        return self.ledger.update_hash(round_id, self.address) is not None

    def participate(self, round_id: int) -> TxResult | None:
        """Train on round ``round_id``'s verified base and submit the update.

        Returns ``None`` if the chain already has this participant's update (after a restart).

        Raises
        ------
        VerificationError
            If the base model does not verify; nothing is trained or submitted then.
        ContractRevertError
            If the ledger refuses the submission (e.g. the deadline passed).
        """
        if self.has_submitted(round_id):
            logger.info("%s: already submitted for round %d", self.name, round_id)
            return None
        base_hash = self.ledger.expected_base(round_id)
        params = self.accept_base(round_id, expected=base_hash)
        # Seeded by the participant's name, as plain FedAvg (fedchain.fl.simulate) seeds it, so a
        # ledger run and a plain run of the same federation train identically.
        update = local_round(
            params,
            self.shard,
            spec=self.settings.spec,
            strategy=self.strategy,
            default=self.settings.train,
            round_id=round_id,
            seed=self.settings.seed,
            participant=self.name,
        )
        blob = update_blob(
            update.delta, round_id=round_id, base_hash=base_hash, sender=self.address, num_samples=update.num_samples
        )
        digest = sha256(blob)
        cid = self.store.put(blob)
        self.store.pin(cid)
        del blob
        try:
            tx = self.ledger.submit_update(self.signer, round_id, digest, cid, update.num_samples)
        except ContractRevertError as err:
            if err.name == "FederatedLedgerAlreadySubmitted":
                return None
            raise
        self.gas_used += tx.gas_used
        logger.info(
            "%s: submitted round %d update %s (%d samples, gas %d)",
            self.name,
            round_id,
            short(digest),
            update.num_samples,
            tx.gas_used,
        )
        return tx


__all__ = ["Coordinator", "FederationSettings", "Participant", "RoundReport"]
