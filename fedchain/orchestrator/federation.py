"""A whole federation in one process: the demo, and the example a user starts from.

Coordinator and participants are separate objects with separate keys; they share nothing
but the chain and the store, exactly as separate processes would.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fedchain.audit import AuditReport, audit_ledger
from fedchain.chain import Chain, Ledger, Signer, connect
from fedchain.config import Workdir
from fedchain.errors import ConfigError
from fedchain.fl import FederatedSplit, Strategy, evaluate
from fedchain.hashing import sha256
from fedchain.orchestrator.actors import (
    Coordinator,
    FederationSettings,
    Participant,
    RoundReport,
)
from fedchain.orchestrator.settings import (
    settings_from_json,
    settings_to_json,
    strategy_from_settings,
)
from fedchain.storage import BlobStore, open_store

logger = logging.getLogger(__name__)

JOURNAL_FILE = "chain.jsonl"
STORE_DIR = "store"


@dataclass(frozen=True)
class RoundSummary:
    """One line of the demo's table."""

    round_id: int
    included: int
    excluded: int
    accuracy: float
    gas_used: int
    aggregate_hash: bytes
    seconds: float


@dataclass(frozen=True)
class FederationResult:
    """What a federation run produced."""

    ledger: str
    rounds: tuple[RoundSummary, ...]
    audit: AuditReport
    setup_gas: int
    seconds: float


Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``: called while long work runs."""


def _noop(stage: str, done: int, total: int) -> None:
    return None


def run_federation(
    chain: Chain,
    store: BlobStore,
    split: FederatedSplit,
    settings: FederationSettings,
    strategy: Strategy,
    *,
    rounds: int,
    progress: Progress = _noop,
    on_round: Callable[[RoundSummary], None] | None = None,
) -> tuple[Ledger, list[RoundSummary], int]:
    """Deploy a ledger and run ``rounds`` rounds with one participant per shard of ``split``.

    Returns the ledger, a summary per round, and the gas spent on setup (deploy + registry).
    """
    coordinator_key = Signer.create("coordinator")
    hospital_keys = [Signer.create(shard.name) for shard in split.shards]
    for signer in (coordinator_key, *hospital_keys):
        chain.fund(signer.address)

    genesis_hash, genesis_cid = Coordinator.publish_genesis(store, settings, coordinator_key.address)
    ledger, deploy_tx = Ledger.deploy(chain, coordinator_key, genesis_hash, genesis_cid)
    coordinator = Coordinator(ledger, coordinator_key, store, strategy, settings)
    coordinator.gas_used += deploy_tx.gas_used
    participants = []
    for signer, shard in zip(hospital_keys, split.shards, strict=True):
        coordinator.register(signer.address, max_samples=len(shard))
        participants.append(Participant(ledger, signer, store, strategy, settings, shard, shard.name))
    setup_gas = coordinator.gas_used

    summaries: list[RoundSummary] = []
    steps_per_round = len(participants) + 2
    for r in range(rounds):
        started = time.perf_counter()
        gas_before = coordinator.gas_used + sum(p.gas_used for p in participants)
        progress(f"round {r + 1}/{rounds}: opening", r * steps_per_round, rounds * steps_per_round)
        round_id = coordinator.open_round()
        for i, p in enumerate(participants):
            progress(
                f"round {r + 1}/{rounds}: {p.name} training", r * steps_per_round + 1 + i, rounds * steps_per_round
            )
            p.participate(round_id)
        progress(
            f"round {r + 1}/{rounds}: aggregating and verifying",
            r * steps_per_round + 1 + len(participants),
            rounds * steps_per_round,
        )
        report: RoundReport = coordinator.wait_and_finalize(round_id)
        _, params = _load_params(store, report, settings)
        accuracy = evaluate(params, split.test, spec=settings.spec)
        gas = coordinator.gas_used + sum(p.gas_used for p in participants) - gas_before
        summary = RoundSummary(
            round_id,
            len(report.verdict.included),
            len(report.verdict.excluded),
            accuracy,
            gas,
            report.aggregate_hash,
            time.perf_counter() - started,
        )
        summaries.append(summary)
        if on_round is not None:
            on_round(summary)
    progress("done", rounds * steps_per_round, rounds * steps_per_round)
    return ledger, summaries, setup_gas


def _load_params(store: BlobStore, report: RoundReport, settings: FederationSettings):  # type: ignore[no-untyped-def]
    from fedchain.orchestrator.verify import load_model

    return load_model(
        store,
        report.aggregate_cid,
        report.aggregate_hash,
        spec=settings.spec,
        max_blob_size=settings.max_blob_size,
        round_id=report.round_id,
        what="aggregate",
    )


def run_demo(
    workdir: Path,
    split: FederatedSplit,
    settings: FederationSettings,
    *,
    rounds: int = 5,
    rpc: str | None = None,
    overwrite: bool = False,
    progress: Progress = _noop,
    on_round: Callable[[RoundSummary], None] | None = None,
) -> FederationResult:
    """Run the demo federation, persisting everything an auditor needs under ``workdir``.

    With no ``rpc`` the embedded chain's journal is kept in ``workdir/chain.jsonl``; the
    store is ``workdir/store``; ``workdir/federation.json`` says where everything is.
    """
    started = time.perf_counter()
    workdir = Path(workdir)
    if (workdir / "federation.json").exists() or (workdir / JOURNAL_FILE).exists():
        if not overwrite:
            raise ConfigError(
                str(workdir), "already holds a federation; pass --overwrite to replace it or choose another --workdir"
            )
        for name in (JOURNAL_FILE, STORE_DIR, "federation.json"):
            target = workdir / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    workdir.mkdir(parents=True, exist_ok=True)
    embedded = rpc is None or rpc == "embedded"
    chain = connect(rpc, journal=workdir / JOURNAL_FILE if embedded else None)
    store = open_store(str(workdir / STORE_DIR), max_blob_size=settings.max_blob_size)
    strategy = strategy_from_settings(settings)
    try:
        ledger, summaries, setup_gas = run_federation(
            chain, store, split, settings, strategy, rounds=rounds, progress=progress, on_round=on_round
        )
        Workdir(
            rpc="embedded" if embedded else str(rpc),
            ledger=ledger.address,
            store=STORE_DIR,
            participants={p.address: p.address for p in ledger.participants()},
            settings=settings_to_json(settings),
        ).save(workdir)
        progress("auditing", 0, rounds)
        report = audit_ledger(
            ledger,
            store,
            strategy,
            spec=settings.spec,
            max_blob_size=settings.max_blob_size,
            max_update_norm=settings.max_update_norm,
            on_round=lambda v: progress("auditing", v.round_id + 1, rounds),
        )
    finally:
        chain.close()
    return FederationResult(ledger.address, tuple(summaries), report, setup_gas, time.perf_counter() - started)


def open_workdir(workdir: Path) -> tuple[Chain, Ledger, BlobStore, FederationSettings]:
    """Open a working directory written by :func:`run_demo`, read-only, for auditing."""
    config = Workdir.load(workdir)
    settings = settings_from_json(config.settings)
    if config.rpc == "embedded":
        chain = connect(None, journal=workdir / JOURNAL_FILE, read_only=True)
    else:
        chain = connect(config.rpc)
    ledger = Ledger(chain, config.ledger)
    store = open_store(config.store_location(workdir), max_blob_size=settings.max_blob_size)
    return chain, ledger, store, settings


__all__ = ["FederationResult", "RoundSummary", "open_workdir", "run_demo", "run_federation", "sha256"]
