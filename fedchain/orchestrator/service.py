"""The coordinator and a participant as long-running services over a real node.

Each service is a loop whose every iteration reads the chain and takes the one step the
chain's state calls for, so a process killed at any point and started again simply carries
on: nothing it needs lives only in its memory.

* coordinator: register the listed participants that are not registered yet; if the open
  round has its quorum or is past its deadline, aggregate and finalize it; if the last round
  is finalized and rounds remain, open the next one; stop when the configured rounds are
  finalized.
* participant: for the open round, if the chain has no update from this account and the
  deadline has not passed, verify the base model, train, upload and submit; stop when the
  configured rounds are finalized (after verifying the last one).

Every step is idempotent against the chain: a coordinator restarted between sending
``openRound`` and seeing its receipt finds the round open and does not open another (and if
two ever raced, the contract refuses the second with ``RoundOutOfSequence``); a participant
finds its update on the chain and does not submit again.

Unreachable nodes and stores are retried with capped exponential backoff for
``outage_seconds``. A transaction in flight when the node went away is re-broadcast with the
same signed bytes (hence the same hash and nonce) until its receipt arrives: it is neither
lost nor sent twice (:class:`ResilientRpcChain`).

Events are logged one line each on the ``fedchain.orchestrator.service`` logger, as
``event=NAME key=value ...``; the record also carries ``event`` and ``fields`` attributes so
a handler can format them as JSON.
"""

from __future__ import annotations

import enum
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hexbytes import HexBytes
from web3.exceptions import Web3Exception
from web3.types import TxReceipt

from fedchain.chain import Ledger, RpcChain, Signer
from fedchain.errors import (
    BlobNotFoundError,
    ChainConnectionError,
    ChainError,
    ConfigError,
    ContractRevertError,
    StoreUnavailableError,
    TransactionError,
)
from fedchain.fl import Dataset, ModelSpec, TrainConfig
from fedchain.hashing import to_hex
from fedchain.orchestrator.actors import Coordinator, FederationSettings, Participant
from fedchain.records import RoundStatus
from fedchain.storage import BlobStore
from fedchain.types import Address

logger = logging.getLogger(__name__)

#: Errors a service rides out by waiting and reading the chain again.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    ChainError,  # connection lost, transaction not mined yet, refused in a race, ledger not there yet
    StoreUnavailableError,
    BlobNotFoundError,
    OSError,  # requests' connection errors, refused sockets
    Web3Exception,  # node-side errors while it restarts (e.g. "header not found")
)


def log_event(event: str, **fields: Any) -> None:
    """Log one event as a single ``event=NAME key=value ...`` line."""
    text = " ".join(f"{k}={_fmt(v)}" for k, v in fields.items())
    logger.info("event=%s%s%s", event, " " if text else "", text, extra={"event": event, "fields": fields})


def _fmt(value: Any) -> str:
    if isinstance(value, bytes):
        return to_hex(value)
    if isinstance(value, float):
        return f"{value:.3f}"
    text = str(value)
    return f'"{text}"' if (" " in text or not text) else text


# --------------------------------------------------------------------------- pacing


@dataclass(frozen=True)
class Pacing:
    """How a service waits.

    Attributes
    ----------
    poll_seconds:
        Pause between reads of the chain when there is nothing to do.
    backoff_max:
        Longest pause between retries while the node or store is unreachable.
    outage_seconds:
        How long to keep retrying through failures before giving up.
    """

    poll_seconds: float = 2.0
    backoff_max: float = 8.0
    outage_seconds: float = 600.0


class Step(enum.Enum):
    """What one iteration of a service did."""

    DONE = "done"
    WORKED = "worked"
    IDLE = "idle"


def run_loop(
    step: Callable[[], Step],
    pacing: Pacing,
    *,
    endpoint: str,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Call ``step`` until it returns :attr:`Step.DONE`, riding out transient failures.

    Raises
    ------
    ChainConnectionError
        If failures go on for longer than ``pacing.outage_seconds``.
    """
    failing_since: float | None = None
    delay = pacing.poll_seconds
    while True:
        try:
            result = step()
        except TRANSIENT_ERRORS as err:
            now = clock()
            if failing_since is None:
                failing_since = now
            if now - failing_since > pacing.outage_seconds:
                raise ChainConnectionError(
                    endpoint, f"still failing after {now - failing_since:.0f}s; last error: {_describe(err)}"
                ) from err
            log_event("retrying", error=type(err).__name__, detail=_describe(err, 160), in_seconds=delay)
            sleep(delay)
            delay = min(max(delay, 0.1) * 2, pacing.backoff_max)
            continue
        if failing_since is not None:
            log_event("recovered", after_seconds=clock() - failing_since)
            failing_since = None
            delay = pacing.poll_seconds
        if result is Step.DONE:
            return
        if result is Step.IDLE:
            sleep(pacing.poll_seconds)


def retrying(
    fn: Callable[[], Any], pacing: Pacing, *, endpoint: str, what: str, sleep: Callable[[float], None] = time.sleep
) -> Any:
    """Call ``fn`` once successfully, retrying transient failures like :func:`run_loop`."""
    box: list[Any] = []

    def step() -> Step:
        box.append(fn())
        return Step.DONE

    logger.debug("waiting for %s", what)
    run_loop(step, pacing, endpoint=endpoint, sleep=sleep)
    return box[0]


def _describe(err: BaseException, limit: int = 300) -> str:
    text = " ".join((str(err) or type(err).__name__).split())
    return text if len(text) <= limit else text[:limit] + "..."


# --------------------------------------------------------------------------- the chain connection


class ResilientRpcChain(RpcChain):
    """An :class:`RpcChain` that keeps a transaction alive through node restarts.

    The signed bytes of every transaction sent are kept until its receipt arrives. While
    waiting, connection failures are retried with backoff, and the same bytes are
    re-broadcast (same hash, same nonce) in case the node lost them when it restarted; a
    node that already has them answers "already known", and one that mined them answers
    with the receipt. So a transaction in flight across a restart is mined exactly once.

    Parameters
    ----------
    url, retries, backoff, timeout:
        As for :class:`RpcChain`.
    pacing:
        Backoff cap and how long to keep trying.
    dev:
        A development node that mines only on demand (anvil): before each transaction, mine
        an empty block if the last one is from an earlier second, so the simulation and the
        contract see the current time (a deadline that passed by the wall clock has passed
        on the chain too). Real chains produce blocks on their own.
    receipt_attempt_seconds:
        Longest wait for a receipt before the same bytes are broadcast again (default: 15 s,
        3 s on a development node, which mines at once).
    """

    def __init__(
        self,
        url: str,
        *,
        retries: int = 6,
        backoff: float = 0.25,
        timeout: float = 30.0,
        pacing: Pacing = Pacing(),
        dev: bool = False,
        receipt_attempt_seconds: float | None = None,
    ) -> None:
        super().__init__(url, retries=retries, backoff=backoff, timeout=timeout)
        self._pacing = pacing
        self._dev = dev
        self._receipt_attempt = receipt_attempt_seconds if receipt_attempt_seconds is not None else 3.0 if dev else 15.0
        self._in_flight: dict[bytes, bytes] = {}

    def prepare(self) -> None:
        if self._dev and int(self.w3.eth.get_block("latest")["timestamp"]) < int(time.time()):
            self.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]

    def send_raw_transaction(self, raw: bytes) -> HexBytes:
        started = time.monotonic()
        delay = max(self._pacing.poll_seconds, 0.1)
        while True:
            try:
                tx_hash = super().send_raw_transaction(raw)
                self._in_flight[bytes(tx_hash)] = bytes(raw)
                return tx_hash
            except (OSError, ChainConnectionError) as err:
                # Not reached the node: the same bytes again once it answers.
                if time.monotonic() - started > self._pacing.outage_seconds:
                    raise
                log_event("resending_transaction", error=type(err).__name__, in_seconds=delay)
                time.sleep(delay)
                delay = min(delay * 2, self._pacing.backoff_max)

    def wait_for_receipt(self, tx_hash: HexBytes, timeout: float = 120.0) -> TxReceipt:
        raw = self._in_flight.get(bytes(tx_hash))
        started = time.monotonic()
        delay = max(self._pacing.poll_seconds, 0.1)
        while True:
            try:
                receipt = super().wait_for_receipt(tx_hash, timeout=min(timeout, self._receipt_attempt))
                self._in_flight.pop(bytes(tx_hash), None)
                return receipt
            except TransactionError as err:
                if time.monotonic() - started > max(timeout, self._pacing.outage_seconds):
                    self._in_flight.pop(bytes(tx_hash), None)
                    raise
                log_event(
                    "awaiting_receipt",
                    tx=tx_hash.to_0x_hex(),
                    error=_describe(err.__cause__ or err, 120),
                    in_seconds=delay,
                )
                time.sleep(delay)
                delay = min(delay * 2, self._pacing.backoff_max)
                if raw is not None:
                    self._rebroadcast(raw, tx_hash)

    def _rebroadcast(self, raw: bytes, tx_hash: HexBytes) -> None:
        try:
            HexBytes(self.w3.eth.send_raw_transaction(raw))
            log_event("transaction_rebroadcast", tx=tx_hash.to_0x_hex())
        except Exception as err:  # "already known", "nonce too low" (mined), or still down
            logger.debug("rebroadcast of %s: %s", tx_hash.to_0x_hex(), _describe(err))


# --------------------------------------------------------------------------- settings


def settings_from_config(rounds_table: Any) -> FederationSettings:
    """The :class:`FederationSettings` of a ``[federation]`` table (:class:`fedchain.config.FederationConfig`).

    Raises
    ------
    ConfigError
        Naming ``federation.model`` or ``federation.train`` if their values do not make a model.
    """
    f = rounds_table
    try:
        spec = ModelSpec(**f.model)
    except (TypeError, ValueError) as err:
        raise ConfigError("federation.model", str(err)) from err
    try:
        train = TrainConfig(**f.train)
    except (TypeError, ValueError) as err:
        raise ConfigError("federation.train", str(err)) from err
    return FederationSettings(
        spec=spec,
        train=train,
        seed=f.seed,
        round_seconds=f.round_seconds,
        min_updates=f.min_updates,
        max_blob_size=f.max_blob_size,
        max_update_norm=f.max_update_norm,
        server_lr=f.server_lr,
    )


def resolve_ledger(
    chain: RpcChain,
    *,
    address: str | None,
    address_file: Path | None,
    pacing: Pacing,
    sleep: Callable[[float], None] = time.sleep,
) -> Ledger | None:
    """The configured ledger: by address, or from ``address_file`` once it exists.

    Returns ``None`` if ``address_file`` does not exist yet (the caller decides whether to
    deploy or wait).
    """
    if address is None:
        assert address_file is not None
        try:
            address = address_file.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        except OSError as err:
            raise ConfigError("ledger.address_file", f"cannot read {address_file}: {err.strerror or err}") from err
        if not address:
            return None
    ledger: Ledger = retrying(
        lambda: Ledger(chain, address), pacing, endpoint=chain.endpoint, what="the ledger contract", sleep=sleep
    )
    return ledger


def write_address_file(path: Path, address: str) -> None:
    """Write the ledger address atomically (a reader never sees half of it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(address + "\n", encoding="utf-8")
    os.replace(tmp, path)


# --------------------------------------------------------------------------- coordinator


@dataclass(frozen=True)
class Registration:
    """A participant the coordinator registers."""

    address: Address
    max_samples: int
    name: str


class CoordinatorService:
    """The coordinator's loop (see the module docstring).

    Parameters
    ----------
    coordinator:
        The coordinator role, with its ledger, key, store and strategy.
    participants:
        Who to register (already registered ones are skipped).
    rounds:
        Rounds to run; the service stops when that many are finalized.
    """

    def __init__(self, coordinator: Coordinator, participants: Sequence[Registration], *, rounds: int) -> None:
        self.coordinator = coordinator
        self.participants = tuple(participants)
        self.rounds = rounds
        self._registered: set[str] = set()
        self._waiting_logged: int | None = None

    @property
    def ledger(self) -> Ledger:
        return self.coordinator.ledger

    def step(self) -> Step:
        """Take the one step the chain's state calls for."""
        ledger, c = self.ledger, self.coordinator
        # After a node restart or a failed send, the cached nonce may be stale.
        c.signer.forget_nonce(ledger.chain.chain_id)
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
                if not c.ready_to_finalize(r - 1):
                    if self._waiting_logged != r - 1:
                        log_event(
                            "waiting_for_updates", round=r - 1, min_updates=state.min_updates, deadline=state.deadline
                        )
                        self._waiting_logged = r - 1
                    return Step.IDLE
                before = ledger.round_history(r - 1, state)
                report = c.finalize(r - 1)
                log_event(
                    "round_finalized",
                    round=r - 1,
                    updates=len(before.updates),
                    included=len(report.verdict.included),
                    excluded=len(report.verdict.excluded),
                    aggregate=report.aggregate_hash,
                    cid=report.aggregate_cid,
                    gas=report.gas_used,
                    after_deadline=ledger.chain.now() > state.deadline,
                )
                log_event("round_verified", round=r - 1, ok=report.verdict.ok, by="coordinator")
                return Step.WORKED
        if r >= self.rounds:
            log_event("federation_finished", rounds=r, ledger=ledger.address)
            return Step.DONE
        gas_before = c.gas_used
        opened = c.open_round()
        state = ledger.round_state(opened)
        log_event(
            "round_opened",
            round=opened,
            deadline=state.deadline,
            min_updates=state.min_updates,
            base=ledger.expected_base(opened),
            gas=c.gas_used - gas_before,
        )
        return Step.WORKED


# --------------------------------------------------------------------------- participant


class ParticipantService:
    """A participant's loop (see the module docstring).

    Parameters
    ----------
    participant:
        The participant role, with its ledger, key, store, strategy and data.
    rounds:
        Rounds of the federation; the service stops when that many are finalized.
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
        if len(p.shard) > entry.max_samples:
            raise ConfigError(
                "participant.data",
                f"{len(p.shard)} records, above the {entry.max_samples} the coordinator registered for {p.address}",
            )
        r = ledger.next_round()
        if r == 0:
            self._once("waiting_for_round", 0)
            return Step.IDLE
        current = r - 1
        state = ledger.round_state(current)
        if state.status is RoundStatus.FINALIZED:
            if r >= self.rounds:
                self._verify_final(current)
                log_event("federation_finished", rounds=r, ledger=ledger.address)
                return Step.DONE
            self._once("waiting_for_round", r)
            return Step.IDLE
        if p.has_submitted(current):
            self._once("update_on_chain", current, participant=p.address)
            return Step.IDLE
        if ledger.chain.now() > state.deadline:
            self._once("round_missed", current, deadline=state.deadline)
            return Step.IDLE
        self._once("round_seen", current, deadline=state.deadline)
        try:
            tx = p.participate(current)
        except ContractRevertError as err:
            if err.name == "FederatedLedgerDeadlinePassed":
                self._once("round_missed", current, deadline=state.deadline)
                return Step.IDLE
            raise
        if tx is None:
            self._once("update_on_chain", current, participant=p.address)
        else:
            if current > 0:  # participate() verified the previous round before training on it
                log_event("round_verified", round=current - 1, ok=True, by=p.name)
            log_event(
                "update_submitted",
                round=current,
                participant=p.address,
                name=p.name,
                update=ledger.update_hash(current, p.address),
                samples=len(p.shard),
                gas=tx.gas_used,
                tx=tx.tx_hash,
            )
        return Step.WORKED

    def _verify_final(self, round_id: int) -> None:
        from fedchain.orchestrator.verify import verify_round

        ledger, p = self.ledger, self.participant
        verdict = verify_round(
            ledger.round_history(round_id),
            p.store,
            p.strategy,
            expected_base=ledger.expected_base(round_id),
            coordinator=ledger.info().coordinator,
            spec=p.settings.spec,
            max_blob_size=p.settings.max_blob_size,
            max_update_norm=p.settings.max_update_norm,
        )
        log_event("round_verified", round=round_id, ok=verdict.ok, by=p.name)
        verdict.raise_for_failure()


def load_participant_data(path: Path, label_names: Sequence[str], name: str) -> Dataset:
    """The participant's local shard (JSON Lines of ``{"text", "label"}``; see :mod:`fedchain.fl.data`)."""
    from fedchain.fl import load_shard

    return load_shard(path, label_names, name=name)


def deploy_ledger(chain: RpcChain, signer: Signer, store: BlobStore, settings: FederationSettings) -> Ledger:
    """Publish the genesis model and deploy a ledger with ``signer`` as coordinator."""
    genesis_hash, genesis_cid = Coordinator.publish_genesis(store, settings, signer.address)
    ledger, tx = Ledger.deploy(chain, signer, genesis_hash, genesis_cid)
    log_event(
        "ledger_deployed",
        ledger=ledger.address,
        coordinator=signer.address,
        genesis=genesis_hash,
        gas=tx.gas_used,
        tx=tx.tx_hash,
    )
    return ledger


__all__ = [
    "TRANSIENT_ERRORS",
    "CoordinatorService",
    "Pacing",
    "ParticipantService",
    "Registration",
    "ResilientRpcChain",
    "Step",
    "deploy_ledger",
    "load_participant_data",
    "log_event",
    "resolve_ledger",
    "retrying",
    "run_loop",
    "settings_from_config",
    "write_address_file",
]
