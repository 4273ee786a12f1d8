"""The benchmark harness of issue 7: where fedchain stands against plain federated learning.

Five parts, each selectable, every comparison measured side by side in the same run and
reported as a ratio (absolute times are printed too, but on a shared machine only the ratios
mean much):

``gas``
    median gas of deployment, registration, ``openRound``, ``submitUpdate`` and
    ``finalizeRound`` (at least 20 calls each), whole rounds of 3 and 10 participants, and the
    floor for recording one 32-byte digest, on anvil and on the in-process chain.
``overhead``
    the same federation (data, model, rounds, seeds and participant keys) with the ledger
    (chain + store + verification, through :class:`~fedchain.orchestrator.actors.Coordinator`
    and :class:`~fedchain.orchestrator.actors.Participant`) and without it (in-memory FedAvg),
    for several participant counts K and model sizes P; per-round time split and the ratio.
``aggregation``
    fedchain's FedAvg against Flower's ``aggregate`` and against a plain numpy sum of the same
    K arrays (the memory-bandwidth floor).
``audit``
    :func:`fedchain.audit.audit_ledger` throughput (MB of blobs verified per second) against
    ``hashlib.sha256`` over the same bytes, and audit time as the history grows.
``scale``
    peak RSS of the coordinator's aggregation of K updates of P parameters, measured in a fresh
    interpreter, as a multiple of one model's size above the interpreter's baseline.

This module is what ``fedchain bench`` and ``scripts/bench.py`` run; it prints nothing
itself except through :func:`main`. Flower is optional (``pip install fedchain[bench]``, or
``--flower-python`` naming an interpreter that has it); without it the part says so.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import hashlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

PARTS = ("gas", "overhead", "aggregation", "audit", "scale")

#: The issue's targets, as (figure, comparison, bound).
TARGETS: dict[str, tuple[str, float]] = {
    "gas.submitUpdate": ("<=", 55_000),
    "gas.round3": ("<=", 300_000),
    "overhead.ratio_k10_p1m_anvil": ("<=", 1.10),
    "aggregation.vs_flower": (">=", 1.0),
    "aggregation.vs_floor": (">=", 0.5),
    "audit.vs_sha256": (">=", 0.5),
    "scale.rss_model_multiple": ("<=", 4.0),
}

MB = 1024 * 1024


@dataclass(frozen=True)
class Grid:
    """The sizes one run measures (``--quick`` shrinks them)."""

    gas_calls: int = 20
    gas_round10_calls: int = 5
    gas_chains: tuple[str, ...] = ("anvil", "embedded")
    #: (chain, K participants, P parameters, rounds) of each cell measured
    overhead_cells: tuple[tuple[str, int, int, int], ...] = (
        ("anvil", 3, 100_000, 3),
        ("anvil", 10, 100_000, 3),
        ("anvil", 30, 100_000, 3),
        ("anvil", 3, 1_000_000, 3),
        ("anvil", 10, 1_000_000, 3),
        ("anvil", 30, 1_000_000, 2),
        ("anvil", 3, 10_000_000, 2),
        ("anvil", 10, 10_000_000, 2),
        ("embedded", 3, 100_000, 3),
        ("embedded", 10, 1_000_000, 3),
        ("embedded", 3, 10_000_000, 2),
    )
    overhead_records: int = 2000
    aggregation_k: tuple[int, ...] = (10, 100)
    aggregation_p: int = 1_000_000
    aggregation_repeats: int = 15
    audit_rounds: tuple[int, ...] = (10, 50, 200)
    #: a 4 MB model, as in the overhead and scale parts (at 100k parameters a round's 1.6 MB
    #: hash in about a millisecond, and the audit's fixed per-round costs decide the ratio)
    audit_p: int = 1_000_000
    audit_k: int = 3
    audit_repeats: int = 3
    audit_chains: tuple[str, ...] = ("embedded", "anvil")
    scale_k: int = 100
    scale_p: int = 1_000_000


QUICK = Grid(
    gas_calls=20,
    gas_round10_calls=3,
    gas_chains=("anvil",),
    overhead_cells=(("embedded", 3, 100_000, 3),),
    overhead_records=500,
    aggregation_k=(10,),
    aggregation_p=1_000_000,
    aggregation_repeats=3,
    audit_rounds=(5, 10),
    audit_p=1_000_000,
    audit_k=3,
    audit_repeats=1,
    audit_chains=("embedded",),
    scale_k=10,
    scale_p=1_000_000,
)

TINY = replace(
    QUICK,
    gas_calls=3,
    gas_round10_calls=1,
    gas_chains=("embedded",),
    overhead_cells=(("embedded", 3, 10_000, 2),),
    overhead_records=60,
    aggregation_k=(3,),
    aggregation_p=10_000,
    audit_rounds=(2, 4),
    audit_p=10_000,
    scale_k=3,
    scale_p=10_000,
)


# =========================================================================== helpers


def _deterministic_signer(label: str) -> Any:
    from fedchain.chain import Signer

    return Signer.from_key(hashlib.sha256(f"fedchain bench {label}".encode()).digest(), label)


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


@contextlib.contextmanager
def _chain(kind: str, anvil: str | None) -> Iterator[Any]:
    """An empty chain of ``kind`` (``embedded`` or ``anvil``), closed (and stopped) after."""
    from fedchain.chain import EmbeddedChain, connect
    from fedchain.chain.anvil import AnvilNode

    chain: Any
    if kind == "embedded":
        chain = EmbeddedChain()
        try:
            yield chain
        finally:
            chain.close()
        return
    with AnvilNode(binary=anvil) as node:
        chain = connect(node.url)
        try:
            yield chain
        finally:
            chain.close()


def _anvil_available(anvil: str | None) -> str | None:
    """None if anvil can be found, else why not."""
    from fedchain.chain.anvil import find_anvil
    from fedchain.errors import FedchainError

    try:
        find_anvil(anvil)
    except FedchainError as err:
        return str(err)
    return None


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak_rss() -> bool:
    """Reset the kernel's high-water mark of this process's RSS (Linux: ``clear_refs`` 5)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def _peak_rss_bytes() -> int:
    """This process's peak RSS since start or the last :func:`_reset_peak_rss`."""
    with contextlib.suppress(OSError), open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def machine() -> dict[str, Any]:
    """Where the figures were taken."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) * 1024
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gb": round(mem / 1e9, 1),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }


# =========================================================================== 1. gas


TX_BASE = 21_000
COLD_SSTORE_SET = 22_100  # 20,000 zero-to-nonzero + 2,100 cold slot access
LOG_BASE, LOG_TOPIC, LOG_BYTE = 375, 375, 8


def _calldata_gas(data: bytes) -> int:
    return sum(4 if b == 0 else 16 for b in data)


def bench_gas(grid: Grid, anvil: str | None) -> dict[str, Any]:
    """Median gas of each ledger operation through :class:`~fedchain.chain.Ledger`."""
    out: dict[str, Any] = {"chains": {}}
    for kind in grid.gas_chains:
        if kind == "anvil" and (why := _anvil_available(anvil)):
            out["chains"][kind] = {"skipped": why}
            continue
        with _chain(kind, anvil) as chain:
            out["chains"][kind] = _gas_on(chain, grid)
    return out


def _gas_on(chain: Any, grid: Grid) -> dict[str, Any]:
    from fedchain.chain import Ledger
    from fedchain.hashing import sha256

    calls = grid.gas_calls
    coordinator = _deterministic_signer("gas coordinator")
    chain.fund(coordinator.address)
    participants = sorted(
        (_deterministic_signer(f"gas participant {i}") for i in range(10)), key=lambda s: int(s.address, 16)
    )
    for p in participants:
        chain.fund(p.address)
    gas: dict[str, list[int]] = {
        k: []
        for k in (
            "deploy",
            "registerParticipant",
            "openRound",
            "submitUpdate",
            "finalizeRound3",
            "round3",
            "finalizeRound10",
            "round10",
        )
    }

    def digest(label: str) -> Any:
        return sha256(label.encode())

    def cid(label: str) -> Any:
        # a CIDv0 string of the usual length (46 characters), as the store records
        return "Qm" + hashlib.sha256(label.encode()).hexdigest()[:44]

    ledger = None
    for i in range(calls):
        deployed, tx = Ledger.deploy(chain, coordinator, digest("genesis"), cid("genesis"))
        gas["deploy"].append(tx.gas_used)
        ledger = ledger or deployed
    assert ledger is not None
    others = [_deterministic_signer(f"gas other {i}").address for i in range(max(0, calls - len(participants)))]
    for address in [p.address for p in participants] + others:
        gas["registerParticipant"].append(ledger.register_participant(coordinator, address, 1_000_000).gas_used)
    base = digest("genesis")
    last_submit = None
    round_id = 0

    def one_round(members: list[Any], key3: str, key_round: str) -> None:
        nonlocal base, round_id, last_submit
        deadline = chain.now() + 3600
        total: int
        total = opened = ledger.open_round(
            coordinator, round_id, base, cid(f"base {round_id}"), deadline, len(members)
        ).gas_used
        gas["openRound"].append(opened)
        for p in members:
            label = f"update {round_id} {p.address}"
            last_submit = ledger.submit_update(p, round_id, digest(label), cid(label), 1000)
            gas["submitUpdate"].append(last_submit.gas_used)
            total += last_submit.gas_used
        base = digest(f"aggregate {round_id}")
        fin = ledger.finalize_round(
            coordinator, round_id, base, cid(f"aggregate {round_id}"), [p.address for p in members]
        ).gas_used
        gas[key3].append(fin)
        gas[key_round].append(total + fin)
        round_id += 1

    for _ in range(calls):
        one_round(participants[:3], "finalizeRound3", "round3")
    for _ in range(grid.gas_round10_calls):
        one_round(participants, "finalizeRound10", "round10")

    # the floor for recording one 32-byte digest, from the last submitUpdate as sent
    assert last_submit is not None
    w3 = chain.w3
    tx = w3.eth.get_transaction(last_submit.tx_hash)
    receipt = w3.eth.get_transaction_receipt(last_submit.tx_hash)
    log = receipt["logs"][0]
    calldata = bytes(tx["input"])
    log_gas = LOG_BASE + LOG_TOPIC * len(log["topics"]) + LOG_BYTE * len(bytes(log["data"]))
    floor = TX_BASE + COLD_SSTORE_SET + _calldata_gas(calldata) + log_gas
    median = {k: int(_median(v)) for k, v in gas.items()}
    return {
        "client": str(w3.client_version),
        "calls": {k: len(v) for k, v in gas.items()},
        "median": median,
        "max": {k: max(v) for k, v in gas.items()},
        "floor": {
            "total": floor,
            "transaction": TX_BASE,
            "storage": COLD_SSTORE_SET,
            "calldata": _calldata_gas(calldata),
            "calldata_bytes": len(calldata),
            "log": log_gas,
        },
        "submit_vs_floor": median["submitUpdate"] / floor,
    }


# =========================================================================== 2. ledger overhead


class Profile:
    """Exclusive wall-clock time per category: a nested timed call is charged to its own category only."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._stack: list[list[float]] = []  # [start, time spent in nested timed calls]

    def wrap(self, category: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            frame = [time.perf_counter(), 0.0]
            self._stack.append(frame)
            try:
                return fn(*args, **kwargs)
            finally:
                self._stack.pop()
                elapsed = time.perf_counter() - frame[0]
                self.seconds[category] = self.seconds.get(category, 0.0) + elapsed - frame[1]
                if self._stack:
                    self._stack[-1][1] += elapsed

        return timed


class _TimedStore:
    """A blob store whose every call is charged to ``store``."""

    def __init__(self, inner: Any, profile: Profile) -> None:
        self._inner = inner
        self._profile = profile

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        return self._profile.wrap("store", attr) if callable(attr) else attr


class _TimedStrategy:
    def __init__(self, inner: Any, profile: Profile) -> None:
        self._inner = inner
        self.name = inner.name
        self.configure = inner.configure
        self.aggregate = profile.wrap("aggregate", inner.aggregate)


@contextlib.contextmanager
def _instrumented(profile: Profile) -> Iterator[None]:
    """Charge the orchestrator's steps to categories by wrapping the names its modules call.

    Benchmark-only: the library has no timing hooks, so the module globals that
    :mod:`fedchain.orchestrator.actors` and :mod:`fedchain.orchestrator.verify` call are
    replaced for the duration, then restored.
    """
    from fedchain.orchestrator import actors, verify

    patches: list[tuple[Any, str, Any]] = []

    def patch(module: Any, name: str, category: str) -> None:
        original = getattr(module, name)  # a name the module no longer uses fails here, loudly
        patches.append((module, name, original))
        setattr(module, name, profile.wrap(category, original))

    patch(actors, "local_round", "train")
    patch(actors, "update_blob", "encode")
    for module in (actors, verify):
        patch(module, "aggregate_blob", "encode")
        patch(module, "sha256", "hash")
    patch(verify, "read_update", "encode")
    patch(verify, "read_model", "encode")
    patch(actors, "verify_round", "verify")
    patch(actors, "verify_round_chained", "verify")
    patch(actors, "screen_and_aggregate", "verify")
    patch(actors, "load_model", "verify")
    try:
        yield
    finally:
        for module, name, original in reversed(patches):
            setattr(module, name, original)


def _timed_ledger(ledger: Any, profile: Profile) -> Any:
    for name in (
        "open_round",
        "submit_update",
        "finalize_round",
        "round_history",
        "round_state",
        "next_round",
        "expected_base",
        "participants",
        "participant",
        "info",
        "genesis_cid",
        "update_hash",
    ):
        setattr(ledger, name, profile.wrap("chain", getattr(ledger, name)))
    return ledger


def _shards(k: int, records: int, seed: int) -> list[Any]:
    """``k`` disjoint shards of ``records`` ICD-10-CM records each (dealt round-robin, so every class is everywhere)."""
    from fedchain.fl import Dataset, load_icd10

    full = load_icd10()
    n = len(full)
    step = max(1, n // (k * records))
    shards = []
    for i in range(k):
        idx = [(j * k + i) * step % n for j in range(records)]
        shards.append(
            Dataset(
                name=f"p{i:03d}",
                texts=tuple(full.texts[j] for j in idx),
                labels=tuple(full.labels[j] for j in idx),
                label_names=full.label_names,
            )
        )
    return shards


def _plain_run(
    shards: list[Any], keys: list[str], settings: Any, strategy: Any, rounds: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The same federation in memory: train each participant, aggregate; nothing recorded.

    ``keys`` are the participants' addresses (the aggregation order of the ledger arm). Each
    round is timed two ways: ``serial`` (everything one after the other, as this one process
    runs it) and ``critical`` (the participants' training in parallel, as on separate machines:
    the slowest participant, then the aggregation).
    """
    from fedchain.fl.simulate import genesis_params, local_round

    profile = Profile()
    train = profile.wrap("train", local_round)
    aggregate = profile.wrap("aggregate", strategy.aggregate)
    order = sorted(range(len(shards)), key=lambda i: keys[i].lower())
    total = sum(len(s) for s in shards)
    params = genesis_params(settings.spec, settings.seed)
    serial: list[float] = []
    critical: list[float] = []
    for r in range(rounds):
        trained = []
        train_seconds = []
        for i in order:
            started = time.perf_counter()
            # seeded by the participant's name and ordered by its address, as Participant does
            update = train(
                params,
                shards[i],
                spec=settings.spec,
                strategy=strategy,
                default=settings.train,
                round_id=r,
                seed=settings.seed,
                participant=shards[i].name,
            )
            train_seconds.append(time.perf_counter() - started)
            trained.append((keys[i], update.num_samples, update.delta))
            del update
        started = time.perf_counter()
        params = aggregate(params, trained, total_samples=total)
        aggregate_seconds = time.perf_counter() - started
        del trained
        serial.append(sum(train_seconds) + aggregate_seconds)
        critical.append(max(train_seconds) + aggregate_seconds)
    result: dict[str, Any] = {
        "round_seconds": _median(serial),
        "critical_seconds": _median(critical),
        "split": {k: v / rounds for k, v in profile.seconds.items()},
    }
    return result, params


def _ledger_run(
    chain: Any, store: Any, shards: list[Any], signers: list[Any], settings: Any, strategy: Any, rounds: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    from fedchain.chain import Ledger
    from fedchain.orchestrator.actors import Coordinator, Participant
    from fedchain.orchestrator.verify import load_model

    coordinator_key = _deterministic_signer("overhead coordinator")
    chain.fund(coordinator_key.address)
    for s in signers:
        chain.fund(s.address)
    genesis_hash, genesis_cid = Coordinator.publish_genesis(store, settings, coordinator_key.address)
    ledger, _ = Ledger.deploy(chain, coordinator_key, genesis_hash, genesis_cid)
    for s, shard in zip(signers, shards, strict=True):
        ledger.register_participant(coordinator_key, s.address, len(shard))

    profile = Profile()
    tledger = _timed_ledger(Ledger(chain, ledger.address), profile)
    tstore = _TimedStore(store, profile)
    tstrategy = _TimedStrategy(strategy, profile)
    coordinator = Coordinator(tledger, coordinator_key, tstore, tstrategy, settings)  # type: ignore[arg-type,unused-ignore]
    participants = [
        Participant(tledger, s, tstore, tstrategy, settings, shard, shard.name)
        for s, shard in zip(signers, shards, strict=True)
    ]  # type: ignore[arg-type,unused-ignore]
    serial: list[float] = []
    critical: list[float] = []
    gas = 0
    last = None

    critical_split: dict[str, float] = {}

    def timed(fn: Callable[[], Any]) -> tuple[Any, float, dict[str, float]]:
        """``fn()``, its seconds, and the categories' seconds it added to the profile."""
        before = dict(profile.seconds)
        started = time.perf_counter()
        value = fn()
        seconds = time.perf_counter() - started
        return value, seconds, {k: v - before.get(k, 0.0) for k, v in profile.seconds.items()}

    with _instrumented(profile):
        for _ in range(rounds):
            # Each actor's step is timed on its own: in a real federation the participants run
            # on their own machines at the same time, so the round's critical path is the
            # coordinator's opening, the slowest participant, then the coordinator's finalization.
            round_id, open_seconds, open_split = timed(coordinator.open_round)
            steps = [timed(lambda p=p, r=round_id: p.participate(r)) for p in participants]
            slowest = max(steps, key=lambda step: step[1])
            last, finalize_seconds, finalize_split = timed(
                lambda r=round_id: coordinator.wait_and_finalize(r, poll=0.0)
            )
            serial.append(open_seconds + sum(step[1] for step in steps) + finalize_seconds)
            critical.append(open_seconds + slowest[1] + finalize_seconds)
            for split in (open_split, slowest[2], finalize_split):
                for k, v in split.items():
                    critical_split[k] = critical_split.get(k, 0.0) + v / rounds
        gas = coordinator.gas_used + sum(p.gas_used for p in participants)
    assert last is not None
    _, params = load_model(
        store,
        last.aggregate_cid,
        last.aggregate_hash,
        spec=settings.spec,
        max_blob_size=settings.max_blob_size,
        round_id=last.round_id,
        what="aggregate",
    )
    return {
        "round_seconds": _median(serial),
        "critical_seconds": _median(critical),
        "split": {k: v / rounds for k, v in profile.seconds.items()},
        "critical_split": critical_split,
        "gas_per_round": gas // rounds,
    }, params


def bench_overhead(grid: Grid, anvil: str | None, workdir: Path, progress: Callable[[str], None]) -> dict[str, Any]:
    """The same federation with and without the ledger, per K, P and chain kind."""
    import torch

    from fedchain.fl import FedAvg, ModelSpec, TrainConfig
    from fedchain.orchestrator.actors import FederationSettings
    from fedchain.storage import LocalBlockStore

    cells: list[dict[str, Any]] = []
    strategy = FedAvg()
    for kind, k, p, rounds in grid.overhead_cells:
        if kind == "anvil" and (why := _anvil_available(anvil)):
            cells.append({"chain": kind, "k": k, "p": p, "skipped": why})
            continue
        spec = ModelSpec.sized(p)
        blob = spec.num_parameters * 4 + 4096
        settings = FederationSettings(
            spec=spec,
            train=TrainConfig(epochs=1, batch_size=64),
            seed=7,
            round_seconds=3600,
            min_updates=k,
            max_blob_size=max(blob, 1 << 20),
        )
        shards = _shards(k, grid.overhead_records, seed=7)
        signers = [_deterministic_signer(f"overhead participant {i}") for i in range(k)]
        keys = [s.address for s in signers]
        progress(f"overhead: {kind} K={k} P={p:,} ({rounds} rounds)")
        _plain_run(shards[:1], keys[:1], settings, strategy, 1)  # warm-up: first-call costs land in neither arm
        plain, plain_params = _plain_run(shards, keys, settings, strategy, rounds)
        store_dir = workdir / f"overhead-{kind}-{k}-{p}"
        with _chain(kind, anvil) as chain:
            ledgered, ledger_params = _ledger_run(
                chain,
                LocalBlockStore(store_dir, max_blob_size=settings.max_blob_size),
                shards,
                signers,
                settings,
                strategy,
                rounds,
            )
        shutil.rmtree(store_dir, ignore_errors=True)
        same = all(torch.equal(plain_params[n], ledger_params[n]) for n in plain_params)
        cells.append(
            {
                "chain": kind,
                "k": k,
                "p": spec.num_parameters,
                "rounds": rounds,
                "records_per_participant": grid.overhead_records,
                "plain": plain,
                "ledger": ledgered,
                "same_model": same,
                # the target's figure: both arms timed as a deployment runs them (participants in parallel)
                "ratio": ledgered["critical_seconds"] / plain["critical_seconds"],
                # both arms timed as this one process runs them (every participant one after the other)
                "serial_ratio": ledgered["round_seconds"] / plain["round_seconds"],
                # training time per round (critical path) at which the ratio would be 1.10
                "train_for_1_10": _train_for(plain, ledgered, 1.10),
            }
        )
        del plain_params, ledger_params
        gc.collect()
    return {"cells": cells}


def _train_for(plain: dict[str, Any], ledgered: dict[str, Any], ratio: float) -> float:
    """Seconds of training per round (critical path) at which ledger/plain would be ``ratio``.

    With ``T`` the training, ``L`` the rest of the ledger arm's critical path and ``A`` the rest
    of the plain arm's (its aggregation): ``(T + L) / (T + A) = ratio`` when
    ``T = (L - ratio * A) / (ratio - 1)``.
    """
    train = float(plain["critical_seconds"]) - float(plain["split"].get("aggregate", 0.0))
    rest_plain = float(plain["critical_seconds"]) - train
    rest_ledger = float(ledgered["critical_seconds"]) - train
    return max(0.0, (rest_ledger - ratio * rest_plain) / (ratio - 1))


# =========================================================================== 3. aggregation

_FLOWER_SNIPPET = r"""
import json, sys, time
import numpy as np
from flwr.server.strategy.aggregate import aggregate
import flwr
paths, counts, repeats = json.loads(sys.argv[1])
results = [([np.load(p)], n) for p, n in zip(paths, counts)]
times = []
for _ in range(repeats):
    t = time.perf_counter(); out = aggregate(results); times.append(time.perf_counter() - t)
print(json.dumps({"version": flwr.__version__, "seconds": sorted(times)[len(times) // 2]}))
"""


def _flower_inprocess() -> Callable[..., Any] | None:
    try:
        from flwr.server.strategy.aggregate import aggregate
    except Exception:  # noqa: BLE001 - optional dependency: any import failure means "not installed"
        return None
    return aggregate  # type: ignore[no-any-return,unused-ignore]


def bench_aggregation(grid: Grid, flower_python: str | None, workdir: Path) -> dict[str, Any]:
    """fedchain's FedAvg, Flower's ``aggregate`` and a plain numpy sum over the same K arrays."""
    rows = []
    p = grid.aggregation_p
    rng = np.random.default_rng(0)
    for k in grid.aggregation_k:
        arrays = [rng.standard_normal(p, dtype=np.float32) * 1e-3 for _ in range(k)]
        base = rng.standard_normal(p, dtype=np.float32)
        counts = [int(100 + 7 * i) for i in range(k)]
        row = _aggregation_row(arrays, base, counts, grid.aggregation_repeats, flower_python, workdir)
        row["vs_floor"] = row["floor_seconds"] / row["fedchain_seconds"]
        row["list_vs_floor"] = row["floor_seconds"] / row["fedchain_list_seconds"]
        if "flower_seconds" in row:
            row["vs_flower"] = row["flower_seconds"] / row["fedchain_seconds"]
            row["list_vs_flower"] = row["flower_seconds"] / row["fedchain_list_seconds"]
        rows.append(row)
        del arrays
        gc.collect()
    return {"rows": rows}


def _time_of(fn: Callable[[], Any], repeats: int) -> float:
    """Median seconds of ``repeats`` calls of ``fn`` after one warm-up call (first-touch page faults)."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return _median(times)


def _aggregation_row(
    arrays: list[np.ndarray],
    base: np.ndarray,
    counts: list[int],
    repeats: int,
    flower_python: str | None,
    workdir: Path,
) -> dict[str, Any]:
    import torch

    from fedchain.fl import FedAvg

    k, p = len(arrays), arrays[0].size
    total = sum(counts)
    updates = [(f"0x{i:040x}", counts[i], {"w": torch.from_numpy(arrays[i])}) for i in range(k)]
    strategy = FedAvg()

    def fedchain_once() -> None:
        # streamed, one update at a time, as the coordinator aggregates what it reads from the store
        strategy.aggregate({"w": torch.from_numpy(base)}, iter(updates), total_samples=total)

    def fedchain_list_once() -> None:
        # every update in memory at once, as Flower's aggregate takes them
        strategy.aggregate({"w": torch.from_numpy(base)}, updates, total_samples=total)

    def floor_once() -> None:
        acc = arrays[0].copy()
        for a in arrays[1:]:
            np.add(acc, a, out=acc)

    row: dict[str, Any] = {"k": k, "p": p, "bytes": k * p * 4}
    row["fedchain_seconds"] = _time_of(fedchain_once, repeats)
    row["fedchain_list_seconds"] = _time_of(fedchain_list_once, repeats)
    row["floor_seconds"] = _time_of(floor_once, repeats)
    flower = _flower_inprocess()
    if flower is not None:
        results = [([a], n) for a, n in zip(arrays, counts, strict=True)]
        row["flower_seconds"] = _time_of(lambda: flower(results), repeats)
        import flwr

        row["flower"] = f"flwr {flwr.__version__} (in process)"
    elif flower_python:
        paths = []
        for i, a in enumerate(arrays):
            path = workdir / f"agg-{k}-{i}.npy"
            np.save(path, a)
            paths.append(str(path))
        proc = subprocess.run(
            [flower_python, "-c", _FLOWER_SNIPPET, json.dumps([paths, counts, repeats])],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        for path_str in paths:
            Path(path_str).unlink()
        if proc.returncode == 0:
            answer = json.loads(proc.stdout.strip().splitlines()[-1])
            row["flower_seconds"] = answer["seconds"]
            row["flower"] = f"flwr {answer['version']} (subprocess {flower_python})"
        else:
            row["flower"] = (
                f"not run: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}"
            )
    else:
        row["flower"] = "not installed"
    return row


# =========================================================================== 4. audit


def _build_history(chain: Any, store: Any, rounds: int, k: int, p: int, *, start: Any = None) -> Any:
    """A ledger with ``rounds`` finalized rounds of ``k`` synthetic updates (no training: only the audit is measured).

    ``start`` continues an existing ledger (as returned) so histories can grow.
    """
    import torch

    from fedchain.chain import Ledger
    from fedchain.fl import FedAvg, ModelSpec, TrainConfig
    from fedchain.hashing import sha256
    from fedchain.orchestrator._blobs import aggregate_blob, update_blob
    from fedchain.orchestrator.actors import Coordinator, FederationSettings

    spec = ModelSpec.sized(p)
    settings = FederationSettings(
        spec=spec, train=TrainConfig(), seed=11, max_blob_size=spec.num_parameters * 4 + (1 << 20)
    )
    strategy = FedAvg()
    if start is None:
        coordinator = _deterministic_signer("audit coordinator")
        members = sorted(
            (_deterministic_signer(f"audit participant {i}") for i in range(k)), key=lambda s: int(s.address, 16)
        )
        for s in (coordinator, *members):
            chain.fund(s.address)
        genesis_hash, genesis_cid = Coordinator.publish_genesis(store, settings, coordinator.address)
        ledger, _ = Ledger.deploy(chain, coordinator, genesis_hash, genesis_cid)
        for s in members:
            ledger.register_participant(coordinator, s.address, 1_000_000)
        from fedchain.fl.simulate import genesis_params

        state = {
            "ledger": ledger,
            "coordinator": coordinator,
            "members": members,
            "params": genesis_params(spec, settings.seed),
            "base": (genesis_hash, genesis_cid),
            "next": 0,
            "settings": settings,
        }
    else:
        state = start
    ledger, coordinator, members = state["ledger"], state["coordinator"], state["members"]
    gen = torch.Generator().manual_seed(state["next"])
    for _ in range(rounds):
        r = state["next"]
        base_hash, base_cid = state["base"]
        ledger.open_round(coordinator, r, base_hash, base_cid, chain.now() + 3600, k)
        deltas = []
        for s in members:
            delta = {name: torch.randn(t.shape, generator=gen) * 1e-3 for name, t in state["params"].items()}
            blob = update_blob(delta, round_id=r, base_hash=base_hash, sender=s.address, num_samples=100)
            cid = store.put(blob)
            ledger.submit_update(s, r, sha256(blob), cid, 100)
            deltas.append((s.address, 100, delta))
        params = strategy.aggregate(state["params"], deltas, total_samples=100 * k)
        blob = aggregate_blob(
            params,
            spec=spec,
            strategy=strategy,
            round_id=r,
            base_hash=base_hash,
            sender=coordinator.address,
            num_samples=100 * k,
        )
        cid = store.put(blob)
        ledger.finalize_round(coordinator, r, sha256(blob), cid, [s.address for s in members])
        state.update(params=params, base=(sha256(blob), cid), next=r + 1)
    return state


def bench_audit(grid: Grid, anvil: str | None, workdir: Path, progress: Callable[[str], None]) -> dict[str, Any]:
    """Audit throughput against sha256 over the same bytes, and audit time against history length."""
    from fedchain.audit import audit_ledger
    from fedchain.fl import FedAvg
    from fedchain.storage import LocalBlockStore

    out: dict[str, Any] = {"chains": {}}
    for kind in grid.audit_chains:
        if kind == "anvil" and (why := _anvil_available(anvil)):
            out["chains"][kind] = {"skipped": why}
            continue
        store_dir = workdir / f"audit-{kind}"
        points = []
        with _chain(kind, anvil) as chain:
            store = LocalBlockStore(store_dir)
            state = None
            built = 0
            for n in sorted(grid.audit_rounds):
                progress(f"audit: {kind}, building a history of {n} rounds")
                state = _build_history(chain, store, n - built, grid.audit_k, grid.audit_p, start=state)
                built = n
                ledger, settings = state["ledger"], state["settings"]
                # the bytes the audit verifies: every update and aggregate blob (and the genesis model)
                blobs = [ledger.genesis_cid()]
                t = time.perf_counter()
                # the chain reads the audit makes: each round from its own blocks
                histories = [ledger.round_history(r) for r in range(ledger.next_round())]
                chain_seconds = time.perf_counter() - t
                for h in histories:
                    blobs += [u.cid for u in h.updates]
                    assert h.aggregate is not None
                    blobs.append(h.aggregate.cid)
                nbytes, sha_seconds = _sha256_floor(store, blobs)
                progress(f"audit: {kind}, auditing {n} rounds")
                audit_times = []
                for _ in range(grid.audit_repeats):
                    gc.collect()  # not the history builder's garbage, collected inside the timed audit
                    t = time.perf_counter()
                    report = audit_ledger(
                        ledger, store, FedAvg(), spec=settings.spec, max_blob_size=settings.max_blob_size
                    )
                    audit_times.append(time.perf_counter() - t)
                    if not report.ok:
                        raise RuntimeError(
                            f"the benchmark's own history failed its audit: {report.failures or [v.failures for v in report.rounds if not v.ok]}"
                        )
                audit_seconds = _median(audit_times)
                points.append(
                    {
                        "rounds": n,
                        "mb": nbytes / MB,
                        "audit_seconds": audit_seconds,
                        "sha256_seconds": sha_seconds,
                        "chain_read_seconds": chain_seconds,
                        "mb_per_s": nbytes / MB / audit_seconds,
                        "sha256_mb_per_s": nbytes / MB / sha_seconds,
                        "vs_sha256": sha_seconds / audit_seconds,
                        "seconds_per_round": audit_seconds / n,
                    }
                )
        shutil.rmtree(store_dir, ignore_errors=True)
        first, last = points[0], points[-1]
        out["chains"][kind] = {
            "points": points,
            # linear: seconds per round stays flat as the history grows
            "per_round_growth": last["seconds_per_round"] / first["seconds_per_round"],
        }
    return out


def _sha256_floor(store: Any, cids: list[str]) -> tuple[int, float]:
    """Bytes of the blobs at ``cids`` and the seconds ``hashlib.sha256`` takes over them in memory.

    Each blob is read, then hashed three times; its median time counts (one blob in memory at a time).
    """
    nbytes = 0
    seconds = 0.0
    for cid in cids:
        data = store.get(cid)
        nbytes += len(data)
        times = []
        for _ in range(3):
            t = time.perf_counter()
            hashlib.sha256(data).digest()
            times.append(time.perf_counter() - t)
        seconds += _median(times)
        del data
    return nbytes, seconds


# =========================================================================== 5. scale

_SCALE_CHILD = r"""
import json, sys
from fedchain.bench import _scale_child
print(json.dumps(_scale_child(sys.argv[1], sys.argv[2])))
"""


def _scale_child(manifest_path: str, phase: str) -> dict[str, Any]:
    """Run in a fresh interpreter: the coordinator's aggregation (``phase`` ``aggregate``) or the
    verification of its result that participants and auditors run (``verify``), with peak RSS."""
    import torch  # noqa: F401 - part of the baseline: every coordinator imports it

    from fedchain.fl import FedAvg, ModelSpec
    from fedchain.hashing import sha256
    from fedchain.orchestrator._blobs import aggregate_blob
    from fedchain.orchestrator.verify import (
        load_model,
        screen_and_aggregate,
        verify_round,
    )
    from fedchain.records import (
        AggregateRecord,
        RoundHistory,
        RoundOpened,
        RoundState,
        RoundStatus,
        UpdateRecord,
    )
    from fedchain.storage import LocalBlockStore
    from fedchain.types import Address, Cid, Digest, RoundId

    m = json.loads(Path(manifest_path).read_text())
    spec = ModelSpec(**m["spec"])
    store = LocalBlockStore(m["store"], create=False)
    base_hash = Digest(bytes.fromhex(m["base_hash"]))
    updates = tuple(
        UpdateRecord(
            RoundId(0), Address(u["participant"]), Digest(bytes.fromhex(u["hash"])), Cid(u["cid"]), u["n"], 1, "0x"
        )
        for u in m["updates"]
    )
    state = RoundState(RoundId(0), RoundStatus.OPEN, 0, len(updates), 0, 1, 0, None)
    opened = RoundOpened(RoundId(0), base_hash, Cid(m["base_cid"]), 0, len(updates), 1, "0x")
    history = RoundHistory(state=state, opened=opened, updates=updates, aggregate=None)
    strategy = FedAvg()
    # The interpreter's baseline: torch, numpy and the codec initialise themselves on first use
    # (about 2 MiB here, the same at any model size), so one model of 256 parameters goes
    # through the read path before the baseline is taken.
    from fedchain.orchestrator._blobs import genesis_blob

    tiny = ModelSpec(num_buckets=64, dim=4, num_classes=spec.num_classes, ngram=spec.ngram)
    warm = genesis_blob(tiny, seed=1, sender=Address(m["coordinator"]))
    load_model(
        store, store.put(warm), sha256(warm), spec=tiny, max_blob_size=m["max_blob"], round_id=0, what="warm-up model"
    )
    del warm
    gc.collect()
    baseline = _rss_bytes()
    peak_before = _peak_rss_bytes()
    if not _reset_peak_rss():
        raise RuntimeError("cannot reset the peak RSS (/proc/self/clear_refs): the scale part needs Linux")
    coordinator = Address(m["coordinator"])
    t = time.perf_counter()
    if phase == "aggregate":
        # what Coordinator.ready_to_finalize and finalize do: load the base, screen and
        # stream-aggregate in one pass, encode, hash, store
        def load_base() -> dict[str, Any]:
            return load_model(
                store, m["base_cid"], base_hash, spec=spec, max_blob_size=m["max_blob"], round_id=0, what="base"
            )[1]

        valid, _, params = screen_and_aggregate(
            history, store, strategy, load_base, spec=spec, max_blob_size=m["max_blob"], max_update_norm=None
        )
        total = sum(u.num_samples for u in valid)
        blob = aggregate_blob(
            params, spec=spec, strategy=strategy, round_id=0, base_hash=base_hash, sender=coordinator, num_samples=total
        )
        digest = sha256(blob)
        cid = store.put(blob)
        del params, blob
        return {
            "baseline": baseline,
            "peak_before": peak_before,
            "peak": _peak_rss_bytes(),
            "seconds": time.perf_counter() - t,
            "included": [u.participant for u in valid],
            "digest": digest.hex(),
            "cid": cid,
        }
    # the verification everyone runs before accepting the aggregate
    a = m["aggregate"]
    agg = AggregateRecord(
        RoundId(0), Digest(bytes.fromhex(a["digest"])), Cid(a["cid"]), tuple(Address(p) for p in a["included"]), 2, "0x"
    )
    final = replace(
        history, state=replace(state, status=RoundStatus.FINALIZED, aggregate_hash=agg.aggregate_hash), aggregate=agg
    )
    verdict = verify_round(
        final, store, strategy, expected_base=base_hash, coordinator=coordinator, spec=spec, max_blob_size=m["max_blob"]
    )
    return {
        "baseline": baseline,
        "peak_before": peak_before,
        "peak": _peak_rss_bytes(),
        "seconds": time.perf_counter() - t,
        "verified": verdict.ok,
    }


def bench_scale(grid: Grid, workdir: Path, progress: Callable[[str], None]) -> dict[str, Any]:
    """Peak RSS of the coordinator aggregating K updates of P parameters, in a fresh interpreter."""
    import torch

    from fedchain.fl import ModelSpec
    from fedchain.hashing import sha256
    from fedchain.orchestrator._blobs import genesis_blob, update_blob

    spec = ModelSpec.sized(grid.scale_p)
    store_dir = workdir / "scale-store"
    from fedchain.storage import LocalBlockStore

    store = LocalBlockStore(store_dir)
    coordinator = _deterministic_signer("scale coordinator").address
    base_blob = genesis_blob(spec, seed=1, sender=coordinator)
    base_hash = sha256(base_blob)
    base_cid = store.put(base_blob)
    model_bytes = len(base_blob)
    del base_blob
    progress(f"scale: writing {grid.scale_k} updates of {spec.num_parameters:,} parameters")
    gen = torch.Generator().manual_seed(5)
    from fedchain.fl import param_shapes

    shapes = param_shapes(spec)
    signers = sorted(
        (_deterministic_signer(f"scale participant {i}").address for i in range(grid.scale_k)), key=lambda a: int(a, 16)
    )
    updates = []
    for a in signers:
        delta = {name: torch.randn(shape, generator=gen) * 1e-3 for name, shape in shapes.items()}
        blob = update_blob(delta, round_id=0, base_hash=base_hash, sender=a, num_samples=50)
        updates.append({"participant": a, "hash": sha256(blob).hex(), "cid": store.put(blob), "n": 50})
        del blob, delta
    manifest = {
        "spec": {
            "num_buckets": spec.num_buckets,
            "dim": spec.dim,
            "num_classes": spec.num_classes,
            "ngram": spec.ngram,
        },
        "store": str(store_dir),
        "base_hash": base_hash.hex(),
        "base_cid": base_cid,
        "updates": updates,
        "coordinator": coordinator,
        "max_blob": model_bytes + (1 << 20),
    }
    path = workdir / "scale.json"
    path.write_text(json.dumps(manifest))

    def child(phase: str) -> dict[str, Any]:
        progress(f"scale: {'aggregating' if phase == 'aggregate' else 'verifying'} in a fresh interpreter")
        proc = subprocess.run(
            [sys.executable, "-c", _SCALE_CHILD, str(path), phase],
            capture_output=True,
            text=True,
            timeout=3600,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"scale child ({phase}) failed: {proc.stderr.strip()[-2000:]}")
        return dict(json.loads(proc.stdout.strip().splitlines()[-1]))

    try:
        aggregated = child("aggregate")
        manifest["aggregate"] = {k: aggregated[k] for k in ("digest", "cid", "included")}
        path.write_text(json.dumps(manifest))
        verified = child("verify")
    finally:
        shutil.rmtree(store_dir, ignore_errors=True)
    return {
        "k": grid.scale_k,
        "p": spec.num_parameters,
        "model_bytes": model_bytes,
        "baseline_rss": aggregated["baseline"],
        "peak_aggregate": aggregated["peak"],
        "aggregate_seconds": aggregated["seconds"],
        "baseline_verify_rss": verified["baseline"],
        "peak_verify": verified["peak"],
        "verify_seconds": verified["seconds"],
        "verified": verified["verified"],
        "included": len(aggregated["included"]),
        # the target's figure: the coordinator aggregating
        "rss_model_multiple": (aggregated["peak"] - aggregated["baseline"]) / model_bytes,
        "aggregate_model_multiple": (aggregated["peak"] - aggregated["baseline"]) / model_bytes,
        "verify_model_multiple": (verified["peak"] - verified["baseline"]) / model_bytes,
    }


# =========================================================================== running and reporting


def run(
    parts: Sequence[str],
    grid: Grid,
    *,
    anvil: str | None = None,
    flower_python: str | None = None,
    progress: Callable[[str], None] = lambda s: None,
) -> dict[str, Any]:
    """Run the selected ``parts`` on ``grid``; return the JSON-ready results."""
    results: dict[str, Any] = {"machine": machine(), "parts": {}}
    with tempfile.TemporaryDirectory(prefix="fedchain-bench-") as tmp:
        workdir = Path(tmp)
        for part in parts:
            started = time.perf_counter()
            progress(f"{part}: starting")
            if part == "gas":
                res = bench_gas(grid, anvil)
            elif part == "overhead":
                res = bench_overhead(grid, anvil, workdir, progress)
            elif part == "aggregation":
                res = bench_aggregation(grid, flower_python, workdir)
            elif part == "audit":
                res = bench_audit(grid, anvil, workdir, progress)
            elif part == "scale":
                res = bench_scale(grid, workdir, progress)
            else:
                raise ValueError(f"unknown part {part!r}")
            res["seconds"] = time.perf_counter() - started
            results["parts"][part] = res
    results["targets"] = check_targets(results)
    return results


def check_targets(results: dict[str, Any]) -> dict[str, Any]:
    """Each target's measured figure and whether it is met (absent parts are left out)."""
    parts = results["parts"]
    figures: dict[str, float] = {}
    if "gas" in parts:
        chains = {k: v for k, v in parts["gas"]["chains"].items() if "median" in v}
        if chains:
            g = chains.get("anvil") or next(iter(chains.values()))
            figures["gas.submitUpdate"] = g["median"]["submitUpdate"]
            figures["gas.round3"] = g["median"]["round3"]
    if "overhead" in parts:
        for c in parts["overhead"]["cells"]:
            if c.get("chain") == "anvil" and c.get("k") == 10 and 900_000 <= c.get("p", 0) <= 1_100_000:
                figures["overhead.ratio_k10_p1m_anvil"] = c["ratio"]
    if "aggregation" in parts:
        rows = parts["aggregation"]["rows"]
        # the same K arrays in memory that the floor sums and Flower averages: fedchain's
        # in-memory path (the streamed one, the coordinator's, is reported beside it)
        figures["aggregation.vs_floor"] = min(r["list_vs_floor"] for r in rows)
        if all("list_vs_flower" in r for r in rows):
            figures["aggregation.vs_flower"] = min(r["list_vs_flower"] for r in rows)
    if "audit" in parts:
        vs = [
            pt["vs_sha256"]
            for c in parts["audit"]["chains"].values()
            for pt in c.get("points", [])
            if pt["rounds"] >= 50
        ]
        if vs:
            figures["audit.vs_sha256"] = min(vs)
    if "scale" in parts:
        figures["scale.rss_model_multiple"] = parts["scale"]["rss_model_multiple"]
    out = {}
    for name, value in figures.items():
        op, bound = TARGETS[name]
        out[name] = {
            "value": value,
            "target": f"{op} {bound:g}",
            "met": value <= bound if op == "<=" else value >= bound,
        }
    return out


def _fmt_s(s: float) -> str:
    return f"{s * 1000:.1f} ms" if s < 1 else f"{s:.2f} s"


def render(results: dict[str, Any]) -> str:
    """The readable tables."""
    lines: list[str] = []
    m = results["machine"]
    lines.append(
        f"fedchain bench, {m['date']}, {m['nproc']} x {m['cpu']}, {m['memory_gb']} GB, Python {m['python']}, numpy {m['numpy']}"
    )
    parts = results["parts"]
    if "gas" in parts:
        lines += ["", "1. Gas (median)"]
        for kind, g in parts["gas"]["chains"].items():
            if "skipped" in g:
                lines.append(f"  {kind}: skipped ({g['skipped']})")
                continue
            med, calls = g["median"], g["calls"]
            lines.append(f"  {kind} ({g['client']})")
            for key, label in (
                ("deploy", "deploy"),
                ("registerParticipant", "registerParticipant"),
                ("openRound", "openRound"),
                ("submitUpdate", "submitUpdate  [target <= 55,000]"),
                ("finalizeRound3", "finalizeRound, 3 included"),
                ("finalizeRound10", "finalizeRound, 10 included"),
                ("round3", "one round of 3  [target <= 300,000]"),
                ("round10", "one round of 10"),
            ):
                lines.append(f"    {label:<40}{med[key]:>10,}   ({calls[key]} calls)")
            f = g["floor"]
            lines.append(
                f"    floor for one 32-byte digest: {f['total']:,} = 21,000 + 22,100 + calldata {f['calldata']:,} ({f['calldata_bytes']} B) + log {f['log']:,};  submitUpdate = {g['submit_vs_floor']:.2f}x the floor"
            )
    if "overhead" in parts:
        lines += [
            "",
            "2. Ledger overhead (median round. critical: participants in parallel, as deployed; serial: one after the other, as this process ran them;",
            "   split: the ledger arm's mean seconds per round on its critical path, exclusive; train@1.10: training per round at which the critical ratio would be 1.10)",
        ]
        cats = ("train", "encode", "hash", "store", "chain", "verify", "aggregate")
        lines.append(
            f"  {'chain':<9}{'K':>4}{'P':>12}{'rounds':>7}{'plain':>9}{'ledger':>9}{'ratio':>7}{'serial':>9}{'ledger':>9}{'ratio':>7}  "
            + "".join(f"{c:>10}" for c in cats)
            + f"{'train@1.10':>12}  same model"
        )
        for c in parts["overhead"]["cells"]:
            if "skipped" in c:
                lines.append(f"  {c['chain']}: skipped ({c['skipped']})")
                continue
            split = c["ledger"]["critical_split"]
            pl, le = c["plain"], c["ledger"]
            lines.append(
                f"  {c['chain']:<9}{c['k']:>4}{c['p']:>12,}{c['rounds']:>7}{pl['critical_seconds']:>8.2f}s{le['critical_seconds']:>8.2f}s{c['ratio']:>7.2f}"
                f"{pl['round_seconds']:>8.2f}s{le['round_seconds']:>8.2f}s{c['serial_ratio']:>7.2f}  "
                + "".join(f"{split.get(k, 0.0):>10.3f}" for k in cats)
                + f"{c['train_for_1_10']:>11.2f}s  {'yes' if c['same_model'] else 'NO'}"
            )
    if "aggregation" in parts:
        lines += [
            "",
            "3. Aggregation (median of repeats; ratio > 1: fedchain faster; in memory: all K updates given at once, as the floor and Flower have them (the targets);",
            "   streamed: one at a time, the coordinator's O(model) path)",
        ]
        for r in parts["aggregation"]["rows"]:
            fl = (
                f"flower {_fmt_s(r['flower_seconds'])}, fedchain/flower speed {r['vs_flower']:.2f}x"
                if "flower_seconds" in r
                else f"flower: {r['flower']}"
            )
            lines.append(
                f"  K={r['k']}, P={r['p']:,}: fedchain streamed {_fmt_s(r['fedchain_seconds'])}, numpy floor {_fmt_s(r['floor_seconds'])} -> {r['vs_floor']:.2f}x the floor; {fl}"
            )
            in_memory = f", {r['list_vs_flower']:.2f}x Flower's speed [target >= 1]" if "list_vs_flower" in r else ""
            lines.append(
                f"  K={r['k']}, P={r['p']:,}: fedchain in memory {_fmt_s(r['fedchain_list_seconds'])} -> {r['list_vs_floor']:.2f}x the floor [target >= 0.5]{in_memory}"
            )
    if "audit" in parts:
        lines += ["", "4. Audit (throughput vs sha256 over the same bytes; target >= 0.5x and linear)"]
        for kind, c in parts["audit"]["chains"].items():
            if "skipped" in c:
                lines.append(f"  {kind}: skipped ({c['skipped']})")
                continue
            for pt in c["points"]:
                lines.append(
                    f"  {kind:<9} {pt['rounds']:>4} rounds, {pt['mb']:8.1f} MB: audit {pt['audit_seconds']:7.2f} s ({pt['mb_per_s']:6.1f} MB/s, {pt['seconds_per_round'] * 1000:6.1f} ms/round; chain reads {pt['chain_read_seconds']:.2f} s), sha256 {pt['sha256_mb_per_s']:7.1f} MB/s -> {pt['vs_sha256']:.2f}x"
                )
            lines.append(
                f"  {kind}: seconds per round, largest history / smallest = {c['per_round_growth']:.2f} (1.0 = linear)"
            )
    if "scale" in parts:
        s = parts["scale"]
        lines += ["", "5. Scale (coordinator in a fresh interpreter)"]
        lines.append(
            f"  K={s['k']}, P={s['p']:,} (model {s['model_bytes'] / MB:.1f} MB): baseline RSS {s['baseline_rss'] / MB:.0f} MB; peak while aggregating {s['peak_aggregate'] / MB:.0f} MB "
            f"(+{s['aggregate_model_multiple']:.1f}x model, {s['aggregate_seconds']:.2f} s), while verifying {s['peak_verify'] / MB:.0f} MB (+{s['verify_model_multiple']:.1f}x, {s['verify_seconds']:.2f} s) [target <= 4x]"
        )
    if results.get("targets"):
        lines += ["", "Targets"]
        for name, t in results["targets"].items():
            lines.append(f"  {name:<34}{t['value']:>14,.2f}  {t['target']:<12}{'met' if t['met'] else 'NOT MET'}")
    return "\n".join(lines)


def render_markdown(results: dict[str, Any]) -> str:
    """The README's table: each target's figure, plus the run's context."""
    m = results["machine"]
    names = {
        "gas.submitUpdate": "`submitUpdate` gas (median, anvil)",
        "gas.round3": "one round of 3 participants, gas (open + 3 submits + finalize)",
        "overhead.ratio_k10_p1m_anvil": "ledger overhead, K=10, P=1M, anvil (round time with / without, critical path)",
        "aggregation.vs_flower": "aggregation speed / Flower's `aggregate`, updates in memory (worst K)",
        "aggregation.vs_floor": "aggregation speed / numpy sum floor, updates in memory (worst K)",
        "audit.vs_sha256": "audit throughput / sha256 over the same bytes (>= 50 rounds, worst chain)",
        "scale.rss_model_multiple": "coordinator peak RSS above baseline, K=100, P=1M, in model sizes",
    }
    lines = [
        f"Benchmarks ({results.get('grid', 'full')} run of `python scripts/bench.py`, {m['date']}, {m['nproc']} x {m['cpu']}, {m['memory_gb']} GB RAM, Python {m['python']}):",
        "",
        "| figure | measured | target | |",
        "| --- | ---: | --- | --- |",
    ]
    for name, t in results.get("targets", {}).items():
        value = f"{t['value']:,.0f}" if t["value"] >= 1000 else f"{t['value']:.2f}"
        lines.append(f"| {names.get(name, name)} | {value} | {t['target']} | {'met' if t['met'] else '**not met**'} |")
    parts = results["parts"]
    if "overhead" in parts:
        lines += [
            "",
            (
                "Ledger overhead per cell: seconds per round on the critical path (participants in parallel, as deployed) and one after the other "
                "(as the benchmark's one process runs them); the last column is the training time per round at which the critical-path ratio would reach 1.10."
            ),
            "",
            "| chain | K | P | plain s/round | ledger s/round | ratio | serial plain | serial ledger | serial ratio | training for 1.10 |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for c in parts["overhead"]["cells"]:
            if "ratio" in c:
                pl, le = c["plain"], c["ledger"]
                lines.append(
                    f"| {c['chain']} | {c['k']} | {c['p']:,} | {pl['critical_seconds']:.2f} | {le['critical_seconds']:.2f} | {c['ratio']:.2f} "
                    f"| {pl['round_seconds']:.2f} | {le['round_seconds']:.2f} | {c['serial_ratio']:.2f} | {c['train_for_1_10']:.2f} s |"
                )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``scripts/bench.py`` / ``fedchain bench``: run, print, exit 0 (targets are reported, not enforced)."""
    parser = build_parser(argparse.ArgumentParser(prog="bench", description="fedchain benchmarks (issue 7)"))
    args = parser.parse_args(argv)
    return run_from_args(args)


def build_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the harness's options to ``parser``."""
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="parts to run (default: all)")
    parser.add_argument("--quick", action="store_true", help="a reduced grid that runs in under two minutes")
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # the test suite's smoke run
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument(
        "--markdown",
        type=Path,
        default=None,
        help="render a JSON results file (from --output) as the README's table, and exit",
    )
    parser.add_argument("--anvil", default=None, help="anvil executable (default: found as the chain tests find it)")
    parser.add_argument(
        "--flower-python", default=None, help="a Python interpreter with flwr installed, when it is not installed here"
    )
    parser.add_argument("--output", type=Path, default=None, help="also write the JSON results to this file")
    parser.add_argument("--progress", action="store_true", help="print progress to stderr")
    return parser


def run_from_args(args: argparse.Namespace) -> int:
    """Run what ``args`` (from :func:`build_parser`) ask for; print the results."""
    if args.markdown is not None:
        print(render_markdown(json.loads(args.markdown.read_text())))
        return 0
    grid = TINY if args.tiny else QUICK if args.quick else Grid()
    progress = (
        (lambda s: print(f"[{time.strftime('%H:%M:%S')}] {s}", file=sys.stderr, flush=True))
        if args.progress
        else (lambda s: None)
    )
    results = run(args.parts, grid, anvil=args.anvil, flower_python=args.flower_python, progress=progress)
    results["grid"] = "tiny" if args.tiny else "quick" if args.quick else "full"
    if args.output is not None:
        args.output.write_text(json.dumps(results, indent=2, sort_keys=True, default=str))
    print(json.dumps(results, indent=2, sort_keys=True, default=str) if args.json else render(results))
    return 0


__all__ = [
    "PARTS",
    "QUICK",
    "TARGETS",
    "Grid",
    "build_parser",
    "check_targets",
    "main",
    "render",
    "render_markdown",
    "run",
    "run_from_args",
]
