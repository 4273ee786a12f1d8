"""One factory for a federation, and one driver: the services stepped in one process.

:func:`make_manifest`, :func:`deploy` and :class:`Federation` wire a federation (keys,
genesis, manifest, deployment, registration) for the demo, the example, the tests and the
benchmarks. :meth:`Federation.run` steps the very :class:`CoordinatorService` and
:class:`ParticipantService` objects that run as separate processes in a real deployment, so the
demo exercises exactly the protocol the processes do: coordinator and participants share
nothing but the chain and the store.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedchain.chain import Chain, EmbeddedChain, Ledger, Signer, connect
from fedchain.config import Workdir
from fedchain.errors import ChainError, ConfigError
from fedchain.hashing import derive_seed, sha256
from fedchain.orchestrator._events import log_event
from fedchain.orchestrator._step import Step
from fedchain.orchestrator.coordinator import Coordinator, CoordinatorService, Registration, RoundReport
from fedchain.orchestrator.masked import MaskedMember, masking_key_for
from fedchain.orchestrator.participant import Participant, ParticipantService
from fedchain.protocol import (
    DEFAULT_MAX_BLOB_SIZE,
    DEFAULT_MAX_UPDATE_NORM,
    DEFAULT_ROUND_SECONDS,
    Manifest,
    Rules,
    load_model,
    load_rules,
)
from fedchain.protocol.blobs import genesis_blob
from fedchain.records import RoundStatus
from fedchain.storage import BlobStore, open_store
from fedchain.tasks.api import DemoParticipant, Task
from fedchain.types import Address, Cid, Digest

logger = logging.getLogger(__name__)

JOURNAL_FILE = "chain.jsonl"
STORE_DIR = "store"


def make_manifest(
    task: Task,
    *,
    seed: int = 0,
    min_updates: int = 1,
    round_seconds: int = DEFAULT_ROUND_SECONDS,
    aggregation: Mapping[str, Any] | None = None,
    max_update_norm: float = DEFAULT_MAX_UPDATE_NORM,
    max_blob_size: int = DEFAULT_MAX_BLOB_SIZE,
    privacy: Mapping[str, Any] | None = None,
    train: Mapping[str, Any] | None = None,
) -> Manifest:
    """The manifest of a federation of ``task``: its schema and model, and every rule given."""
    return Manifest(
        task_name=task.name,
        task_version=task.version,
        schema=task.schema(),
        model=task.describe(),
        aggregation=dict(aggregation or {"rule": "fedavg", "server_lr": 1.0}),
        max_update_norm=max_update_norm,
        max_blob_size=max_blob_size,
        min_updates=min_updates,
        round_seconds=round_seconds,
        train=dict(task.train_config() if train is None else train),
        seed=seed,
        privacy=dict(privacy or {"mode": "none"}),
        frozen=dict(task.frozen()),
    )


def genesis_params(task: Task, seed: int) -> dict[str, np.ndarray]:
    """The federation's initial model: ``task.init(derive_seed(seed, "genesis"))``."""
    return task.init(derive_seed(seed, "genesis"))


@dataclass(frozen=True)
class Deployment:
    """A deployed ledger and what was published for it."""

    ledger: Ledger
    manifest_cid: Cid
    genesis_hash: Digest
    genesis_cid: Cid
    gas_used: int
    reused: bool


def deploy(
    chain: Chain, signer: Signer, store: BlobStore, manifest: Manifest, genesis: Mapping[str, np.ndarray]
) -> Deployment:
    """Publish the manifest and the genesis model, then deploy a ledger with ``signer`` as coordinator.

    Idempotent: if ``signer`` already deployed a ledger with this manifest and genesis (a
    coordinator killed during deployment and restarted), that ledger is returned and nothing is
    deployed again.
    """
    manifest_bytes = manifest.to_bytes()
    manifest_cid = store.put(manifest_bytes)
    store.pin(manifest_cid)
    blob = genesis_blob(genesis, model=manifest.model, sender=signer.address)
    genesis_hash = sha256(blob)
    genesis_cid = store.put(blob)
    store.pin(genesis_cid)
    del blob
    _wait_for_pending(chain, signer.address)
    existing = Ledger.find_deployment(chain, signer.address, genesis_hash=genesis_hash, manifest_hash=manifest.digest)
    if existing is not None:
        log_event("ledger_found", ledger=existing.address, coordinator=signer.address)
        return Deployment(existing, manifest_cid, genesis_hash, genesis_cid, 0, True)
    ledger, tx = Ledger.deploy(chain, signer, genesis_hash, genesis_cid, manifest.digest, manifest_cid)
    log_event(
        "ledger_deployed",
        ledger=ledger.address,
        coordinator=signer.address,
        genesis=genesis_hash,
        manifest=manifest.digest,
        gas=tx.gas_used,
        tx=tx.tx_hash,
    )
    return Deployment(ledger, manifest_cid, genesis_hash, genesis_cid, tx.gas_used, False)


def _wait_for_pending(chain: Chain, address: str, *, timeout: float = 120.0, poll: float = 0.5) -> None:
    """Wait until none of ``address``'s transactions is pending.

    A deploy transaction sent by a run killed before its receipt may still be pending: its
    ledger has no code yet, so :meth:`Ledger.find_deployment` would miss it and a second ledger
    would be deployed. (On a development node :meth:`Chain.prepare` mines the block.)

    Raises
    ------
    ChainError
        If a transaction is still pending after ``timeout`` seconds (the caller's retry loop waits on).
    """
    started = time.monotonic()
    while chain.has_pending(address):
        if time.monotonic() - started > timeout:
            raise ChainError(f"{address} still has a pending transaction after {timeout:.0f}s")
        log_event("waiting_for_pending", account=address)
        chain.prepare()
        time.sleep(poll)


def demo_signer(seed: int, name: str) -> Signer:
    """A demo key derived from ``seed`` and ``name``: the same seed gives the same accounts, hence the same digests."""
    key = sha256(f"fedchain/demo-key\x1f{seed}\x1f{name}".encode())
    return Signer.from_key(bytes(key), name)


@dataclass(frozen=True)
class RoundSummary:
    """One line of the demo's table."""

    round_id: int
    status: str
    included: int
    excluded: int
    metrics: Mapping[str, float]
    gas_used: int
    aggregate_hash: Digest | None
    aggregate_cid: Cid | None
    seconds: float

    @property
    def accuracy(self) -> float | None:
        value = self.metrics.get("accuracy")
        return None if value is None else float(value)


Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``: called while long work runs."""

StepHook = Callable[[str, Step, float], None]
"""``on_step(actor, step, seconds)``: called after every step of a service that :meth:`Federation.run` takes.

``actor`` is ``"coordinator"`` or the participant's name; ``seconds`` is the step's wall-clock
time (``time.perf_counter``). The benchmarks build a round's critical path from it.
"""


def _noop(stage: str, done: int, total: int) -> None:
    return None


@dataclass
class Federation:
    """A coordinator and its participants on one chain and one store, as separate objects with separate keys."""

    chain: Chain
    store: BlobStore
    task: Task
    rules: Rules
    deployment: Deployment
    coordinator: Coordinator
    participants: list[Participant]
    registrations: list[Registration]
    names: dict[Address, str] = field(default_factory=dict)

    @property
    def ledger(self) -> Ledger:
        return self.deployment.ledger

    @classmethod
    def create(
        cls,
        chain: Chain,
        store: BlobStore,
        task: Task,
        members: Sequence[DemoParticipant],
        manifest: Manifest,
        *,
        key: Callable[[str], Signer] | None = None,
        register: bool = True,
    ) -> Federation:
        """Fund keys, publish the genesis and the manifest, deploy, and (by default) register every member.

        ``key(name)`` makes each actor's key (default: fresh random keys; the demo derives them from its seed).
        """
        make_key = key or Signer.create
        coordinator_key = make_key("coordinator")
        keys = [make_key(m.name) for m in members]
        for signer in (coordinator_key, *keys):
            chain.fund(signer.address)
        deployment = deploy(chain, coordinator_key, store, manifest, genesis_params(task, manifest.seed))
        rules = load_rules(deployment.ledger, store)  # read back from the chain, as every party does
        coordinator = Coordinator(deployment.ledger, coordinator_key, store, rules)
        coordinator.gas_used += deployment.gas_used
        participants = [
            Participant(deployment.ledger, k, store, rules, task, m.data, m.name)
            for k, m in zip(keys, members, strict=True)
        ]
        if rules.manifest.private:
            for p in participants:
                p.masking = MaskedMember(masking_key_for(p.signer))
        registrations = [Registration(p.address, p.num_samples, p.name) for p in participants]
        fed = cls(
            chain,
            store,
            task,
            rules,
            deployment,
            coordinator,
            participants,
            registrations,
            {p.address: p.name for p in participants},
        )
        if register:
            for reg in registrations:
                coordinator.register(reg.address, reg.max_samples)
        return fed

    def attacker(self, name: str = "mallory", max_samples: int = 10_000) -> Signer:
        """A registered, funded account that does not follow the protocol (for tests)."""
        signer = Signer.create(name)
        self.chain.fund(signer.address)
        self.coordinator.register(signer.address, max_samples)
        return signer

    def run(
        self,
        rounds: int,
        *,
        test_data: Any = None,
        on_round: Callable[[RoundSummary], None] | None = None,
        progress: Progress = _noop,
        active: Sequence[Participant] | None = None,
        poll_seconds: float = 0.05,
        on_step: StepHook | None = None,
    ) -> list[RoundSummary]:
        """Step the coordinator's and the participants' services until ``rounds`` rounds have ended.

        ``active`` are the participants that take part (default: all). When every service is
        idle (waiting for a deadline), an in-process chain's clock is moved to the deadline; on
        a real node the driver sleeps ``poll_seconds``. ``on_step``, if given, is told of every
        step and its time (see :data:`StepHook`).
        """
        service = CoordinatorService(self.coordinator, self.registrations, rounds=rounds)
        members = [ParticipantService(p, rounds=rounds) for p in (self.participants if active is None else active)]
        done: set[int] = set()
        coordinator_done = False
        summaries: list[RoundSummary] = []
        started = time.perf_counter()
        gas_mark = self._gas()
        while True:
            worked = False
            if not coordinator_done:
                step_started = time.perf_counter()
                step = service.step()
                if on_step is not None:
                    on_step("coordinator", step, time.perf_counter() - step_started)
                coordinator_done = step is Step.DONE
                worked = step is Step.WORKED
            for i, m in enumerate(members):
                if i in done:
                    continue
                step_started = time.perf_counter()
                step = m.step()
                if on_step is not None:
                    on_step(m.participant.name, step, time.perf_counter() - step_started)
                if step is Step.DONE:
                    done.add(i)
                worked = worked or step is Step.WORKED
            while len(summaries) < len(service.reports):
                report = service.reports[len(summaries)]
                gas = self._gas()
                summary = self._summary(report, test_data, gas - gas_mark, time.perf_counter() - started)
                gas_mark, started = gas, time.perf_counter()
                summaries.append(summary)
                progress(f"round {report.round_id + 1}/{rounds}", report.round_id + 1, rounds)
                if on_round is not None:
                    on_round(summary)
            if coordinator_done and len(done) == len(members):
                return summaries
            if not worked:
                self._wait(poll_seconds)

    def _gas(self) -> int:
        return self.coordinator.gas_used + sum(p.gas_used for p in self.participants)

    def _wait(self, poll_seconds: float) -> None:
        r = self.ledger.next_round()
        if isinstance(self.chain, EmbeddedChain) and r > 0:
            state = self.ledger.round_state(r - 1)
            if self.coordinator.masking is not None and state.status is RoundStatus.CLOSED:
                phase_deadline = self.coordinator.masking.phase_deadline(r - 1)
                if phase_deadline is not None and phase_deadline >= self.chain.now():
                    self.chain.advance_time(phase_deadline - self.chain.now() + 1)
                    return
            gap = state.deadline - self.chain.now()
            if gap >= 0:
                self.chain.advance_time(gap + 1)
                return
        time.sleep(poll_seconds)

    def _summary(self, report: RoundReport, test_data: Any, gas: int, seconds: float) -> RoundSummary:
        metrics: Mapping[str, float] = {}
        if test_data is not None and report.aggregate_cid is not None and report.aggregate_hash is not None:
            params = load_model(
                self.store,
                self.rules,
                report.aggregate_cid,
                report.aggregate_hash,
                round_id=report.round_id,
                what="aggregate",
            )
            metrics = dict(self.task.evaluate(params, test_data))
        v = report.verdict
        return RoundSummary(
            report.round_id,
            v.status.name.lower(),
            len(v.included),
            len(v.excluded),
            metrics,
            gas,
            report.aggregate_hash,
            report.aggregate_cid,
            seconds,
        )


@dataclass(frozen=True)
class FederationResult:
    """What a demo run produced."""

    ledger: str
    rounds: tuple[RoundSummary, ...]
    audit: Any
    setup_gas: int
    seconds: float
    names: Mapping[str, str]


def prepare_workdir(workdir: Path, *, overwrite: bool) -> None:
    """Check that ``workdir`` can hold a new federation (before any slow work), clearing an old one if asked.

    Raises
    ------
    ConfigError
        If it is not a directory, holds a federation and ``overwrite`` is not set, or cannot be written.
    """
    if workdir.exists() and not workdir.is_dir():
        raise ConfigError("--workdir", f"{workdir} exists and is not a directory")
    if (workdir / "federation.json").exists() or (workdir / JOURNAL_FILE).exists():
        if not overwrite:
            raise ConfigError(
                "--workdir",
                f"{workdir} already holds a federation; pass --overwrite to replace it or choose another --workdir",
            )
        for name in (JOURNAL_FILE, STORE_DIR, "federation.json"):
            target = workdir / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        probe = workdir / ".fedchain-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ConfigError("--workdir", f"cannot write to {workdir}: {err.strerror or err}") from None


def run_demo(
    workdir: Path,
    task: Task,
    manifest: Manifest,
    *,
    members: Sequence[DemoParticipant],
    test_data: Any = None,
    rounds: int = 5,
    rpc: str | None = None,
    seed: int = 0,
    task_app: str = "icd",
    task_settings: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    progress: Progress = _noop,
    on_round: Callable[[RoundSummary], None] | None = None,
    audit: Callable[[Ledger, BlobStore, Mapping[str, str]], Any] | None = None,
) -> FederationResult:
    """Run a demo federation, persisting everything an auditor needs under ``workdir``.

    With no ``rpc`` the embedded chain's journal is kept in ``workdir/chain.jsonl``; the store is
    ``workdir/store``; ``workdir/federation.json`` says where everything is and names the
    participants. Keys derive from ``seed`` (:func:`demo_signer`). ``audit``, if given, is run on
    the finished ledger and its result returned.
    """
    started = time.perf_counter()
    workdir = Path(workdir)
    prepare_workdir(workdir, overwrite=overwrite)
    embedded = rpc is None or rpc == "embedded"
    chain = connect(rpc, journal=workdir / JOURNAL_FILE if embedded else None)
    store = open_store(str(workdir / STORE_DIR), max_blob_size=manifest.max_blob_size)
    try:
        fed = Federation.create(chain, store, task, members, manifest, key=lambda name: demo_signer(seed, name))
        names: dict[str, str] = {fed.coordinator.signer.address: "coordinator"}
        names.update((str(a), n) for a, n in fed.names.items())
        Workdir(
            rpc="embedded" if embedded else str(rpc),
            ledger=fed.ledger.address,
            store=STORE_DIR,
            participants=dict(names),
            task={"app": task_app, "settings": dict(task_settings or {})},
        ).save(workdir)
        setup_gas = fed._gas()
        summaries = fed.run(rounds, test_data=test_data, on_round=on_round, progress=progress)
        report = audit(fed.ledger, store, names) if audit is not None else None
    finally:
        chain.close()
    return FederationResult(
        fed.ledger.address, tuple(summaries), report, setup_gas, time.perf_counter() - started, names
    )


def open_workdir(workdir: Path) -> tuple[Chain, Ledger, BlobStore, Workdir]:
    """Open a working directory written by :func:`run_demo`, read-only, for auditing.

    Raises
    ------
    ConfigError
        If it is not a fedchain working directory (nothing is created).
    """
    config = Workdir.load(workdir)
    if config.rpc == "embedded":
        chain = connect(None, journal=workdir / JOURNAL_FILE, read_only=True)
    else:
        chain = connect(config.rpc)
    try:
        ledger = Ledger(chain, config.ledger)
        store = open_store(config.store_location(workdir), create=False)
    except BaseException:
        chain.close()
        raise
    return chain, ledger, store, config


__all__ = [
    "Deployment",
    "Federation",
    "FederationResult",
    "RoundSummary",
    "StepHook",
    "demo_signer",
    "deploy",
    "genesis_params",
    "make_manifest",
    "open_workdir",
    "prepare_workdir",
    "run_demo",
]
