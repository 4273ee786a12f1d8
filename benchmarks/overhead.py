"""The ledger's overhead: the same federation with the ledger and without it, timed on the critical path.

The ledger arm is :meth:`fedchain.orchestrator.federation.Federation.run` (the coordinator's and
the participants' services, chain, store and every verification), told of every step through
its ``on_step`` hook. The plain arm is the same task, data, seeds and participant order
trained in memory and aggregated with the same strategy (nothing recorded, nothing verified);
both arms end on the same model, bit for bit (checked).

A round is timed as a deployment runs it: the coordinator opens it, the participants work at
the same time on their own machines (the slowest counts), the coordinator closes and
finalizes it. The one-process serial sum is shown beside it. From the two arms follows the
training time per round at which the ratio would be 1.10 (``T = (L - 1.1 A) / 0.1``, with ``L``
and ``A`` the ledger's and the plain arm's critical path besides training).

Tasks: the shipped ``icd`` task (its demo split) and :class:`benchmarks._task.SyntheticTask`
(P parameters, training for a set time).
"""

from __future__ import annotations

import gc
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import TimedStore, Verdict, chain_label, measure_cells, median, open_chain, part_main
from benchmarks._task import SyntheticTask, TimedTask
from fedchain.fl import participant_order
from fedchain.orchestrator._step import Step
from fedchain.orchestrator.federation import Federation, demo_signer, genesis_params, make_manifest
from fedchain.orchestrator.participant import participant_seed
from fedchain.protocol import load_model
from fedchain.storage import open_store
from fedchain.tasks.api import DemoParticipant, Task

SEED = 7
#: The issue's target for the critical path's ratio.
TARGET = 1.10


@dataclass(frozen=True)
class Cell:
    """One federation measured: ``task`` (``icd`` or ``synthetic``), K, P (synthetic), train seconds, chain, rounds."""

    task: str
    k: int
    chain: str
    rounds: int
    p: int = 0
    train_seconds: float = 0.0

    def make_task(self) -> Task:
        if self.task == "icd":
            from fedchain.tasks.icd import IcdTask

            return IcdTask()
        return SyntheticTask(self.p, train_seconds=self.train_seconds)

    @property
    def label(self) -> str:
        if self.task == "icd":
            return f"icd K={self.k} ({chain_label(self.chain)})"
        return f"synthetic K={self.k} P={self.p:,} train {self.train_seconds:g} s ({chain_label(self.chain)})"


FULL = (
    Cell("icd", 3, "embedded", 3),
    Cell("icd", 3, "anvil", 3),
    Cell("synthetic", 10, "embedded", 3, p=1_000_000),
    Cell("synthetic", 10, "anvil", 3, p=1_000_000),
    Cell("synthetic", 3, "anvil", 3, p=100_000),
    Cell("synthetic", 30, "anvil", 2, p=100_000),
    Cell("synthetic", 3, "anvil", 2, p=10_000_000),
    Cell("synthetic", 10, "anvil", 2, p=1_000_000, train_seconds=2.0),
)
QUICK = (Cell("synthetic", 3, "embedded", 2, p=100_000),)


def _plain(
    task: Task, members: list[DemoParticipant], addresses: dict[str, str], manifest: Any, rounds: int, strategy: Any
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The same federation in memory: each participant trains, the strategy aggregates; nothing else."""
    params = genesis_params(task, manifest.seed)
    order = sorted(members, key=lambda m: participant_order(addresses[m.name]))
    critical, serial, aggregate_s, train_max = [], [], [], []
    for r in range(rounds):
        updates = []
        train_times = []
        for m in order:
            started = time.perf_counter()
            result = task.train(
                {k: np.array(v, dtype=np.float32, copy=True) for k, v in params.items()},
                m.data,
                dict(manifest.train),
                seed=participant_seed(manifest.seed, r, m.name),
            )
            delta = {
                k: np.subtract(np.asarray(result.arrays[k], dtype=np.float32), params[k], dtype=np.float32)
                for k in sorted(params)
            }
            train_times.append(time.perf_counter() - started)
            updates.append((addresses[m.name], result.num_samples, delta))
            del result
        started = time.perf_counter()
        params = strategy.aggregate(params, updates, total_samples=sum(n for _, n, _ in updates))
        agg = time.perf_counter() - started
        del updates
        aggregate_s.append(agg)
        train_max.append(max(train_times))
        critical.append(max(train_times) + agg)
        serial.append(sum(train_times) + agg)
    return {
        "critical_seconds": median(critical),
        "serial_seconds": median(serial),
        "train_seconds": median(train_max),
        "aggregate_seconds": median(aggregate_s),
    }, params


def _ledger(
    cell: Cell, task: Task, members: list[DemoParticipant], manifest: Any, workdir: Path
) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, str]]:
    """The federation with the ledger, through ``Federation.run`` and its ``on_step`` hook."""
    timed_task = TimedTask(task)
    steps: list[tuple[str, Step, float, float, float]] = []  # actor, step, seconds, store seconds, train seconds
    with open_chain(cell.chain) as chain:
        store = TimedStore(open_store(str(workdir / "store"), max_blob_size=manifest.max_blob_size))
        fed = Federation.create(chain, store, timed_task, members, manifest, key=lambda name: demo_signer(SEED, name))
        addresses = {p.name: str(p.address) for p in fed.participants}
        data_of = {p.name: id(p.data) for p in fed.participants}
        mark = [store.seconds]

        def on_step(actor: str, step: Step, seconds: float) -> None:
            store_s = store.seconds - mark[0]
            mark[0] = store.seconds
            train_s = timed_task.trained.pop(data_of[actor], 0.0) if actor in data_of else 0.0
            steps.append((actor, step, seconds, store_s, train_s))

        gas_before = fed._gas()
        summaries = fed.run(cell.rounds, on_step=on_step, poll_seconds=0.01)
        gas = fed._gas() - gas_before
        last = summaries[-1]
        assert last.aggregate_cid is not None and last.aggregate_hash is not None
        final = load_model(
            store.inner, fed.rules, last.aggregate_cid, last.aggregate_hash, round_id=last.round_id, what="aggregate"
        )
    coordinator = [s for s in steps if s[0] == "coordinator" and s[1] is Step.WORKED]
    if len(coordinator) != 3 * cell.rounds:
        raise RuntimeError(
            f"expected open, close and finish per round, got {len(coordinator)} coordinator steps for {cell.rounds} rounds"
        )
    worked = {m.name: [s for s in steps if s[0] == m.name and s[1] is Step.WORKED] for m in members}
    critical, serial = [], []
    split = {
        "coordinator open": 0.0,
        "slowest participant (training)": 0.0,
        "slowest participant (verify, encode, store, submit)": 0.0,
        "coordinator close + finalize": 0.0,
        "store (on the path)": 0.0,
    }
    for r in range(cell.rounds):
        opened, closed, finished = coordinator[3 * r : 3 * r + 3]
        participants = [w[r] for w in worked.values()]
        slowest = max(participants, key=lambda s: s[2])
        critical.append(opened[2] + slowest[2] + closed[2] + finished[2])
        serial.append(opened[2] + sum(s[2] for s in participants) + closed[2] + finished[2])
        split["coordinator open"] += opened[2] / cell.rounds
        split["slowest participant (training)"] += slowest[4] / cell.rounds
        split["slowest participant (verify, encode, store, submit)"] += (slowest[2] - slowest[4]) / cell.rounds
        split["coordinator close + finalize"] += (closed[2] + finished[2]) / cell.rounds
        split["store (on the path)"] += (opened[3] + slowest[3] + closed[3] + finished[3]) / cell.rounds
    return (
        {
            "critical_seconds": median(critical),
            "serial_seconds": median(serial),
            "critical_split": split,
            "gas_per_round": gas // cell.rounds,
        },
        final,
        addresses,
    )


def measure(cell: Cell) -> dict[str, Any]:
    """Both arms of one cell, and their ratios."""
    task = cell.make_task()
    members = list(task.demo(cell.k, SEED).participants)
    schema = task.schema()
    manifest = make_manifest(
        task, seed=SEED, min_updates=cell.k, round_seconds=3600, max_blob_size=max(schema.nbytes + (1 << 20), 1 << 22)
    )
    with tempfile.TemporaryDirectory(prefix="fedchain-bench-overhead-") as tmp:
        ledger, ledger_params, addresses = _ledger(cell, task, members, manifest, Path(tmp))
    from fedchain.protocol import strategy_for

    strategy = strategy_for(manifest.aggregation)
    _plain(task, members[:1], addresses, manifest, 1, strategy)  # warm-up: first-call costs land in neither arm
    plain, plain_params = _plain(task, members, addresses, manifest, cell.rounds, strategy)
    same = sorted(plain_params) == sorted(ledger_params) and all(
        np.array_equal(plain_params[k], ledger_params[k]) for k in plain_params
    )
    rest_ledger = ledger["critical_seconds"] - plain["train_seconds"]
    rest_plain = plain["aggregate_seconds"]
    out = {
        "task": cell.task,
        "label": cell.label,
        "chain": cell.chain,
        "k": cell.k,
        "p": schema.size,
        "train_setting_seconds": cell.train_seconds,
        "rounds": cell.rounds,
        "plain": plain,
        "ledger": ledger,
        "same_model": same,
        "ratio": ledger["critical_seconds"] / plain["critical_seconds"],
        "serial_ratio": ledger["serial_seconds"] / plain["serial_seconds"],
        "train_for_1_10": max(0.0, (rest_ledger - TARGET * rest_plain) / (TARGET - 1)),
    }
    del plain_params, ledger_params
    gc.collect()
    return out


def run(quick: bool, cells: tuple[Cell, ...] | None = None) -> dict[str, Any]:
    return {"cells": measure_cells("overhead", cells or (QUICK if quick else FULL), measure)}


def verdicts(result: dict[str, Any]) -> list[Verdict]:
    out = []
    for c in result["cells"]:
        if "ratio" not in c:
            continue
        note = f"training {c['plain']['train_seconds']:.2f} s/round; 1.10 reached at {c['train_for_1_10']:.2f} s"
        out.append(Verdict(f"ledger overhead, critical path, {c['label']}", c["ratio"], "<=", TARGET, note))
        out.append(
            Verdict(f"same model with and without the ledger, {c['label']}", 1.0 if c["same_model"] else 0.0, ">=", 1.0)
        )
    return out


def table(result: dict[str, Any]) -> str:
    lines = [
        "## ledger overhead (seconds per round; critical path: open + slowest participant + close + finalize)",
        "",
        "| cell | P | plain | ledger | ratio | serial plain | serial ledger | serial ratio | training for 1.10 | same model |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for c in result["cells"]:
        if "ratio" not in c:
            lines.append(f"| {c['label']} | skipped: {c['skipped']} |")
            continue
        lines.append(
            f"| {c['label']} | {c['p']:,} | {c['plain']['critical_seconds']:.3f} | {c['ledger']['critical_seconds']:.3f} "
            f"| {c['ratio']:.2f} | {c['plain']['serial_seconds']:.3f} | {c['ledger']['serial_seconds']:.3f} "
            f"| {c['serial_ratio']:.2f} | {c['train_for_1_10']:.2f} s | {'yes' if c['same_model'] else 'NO'} |"
        )
    lines.append("")
    lines.append("Critical path split of the ledger arm (seconds per round):")
    for c in result["cells"]:
        if "ledger" in c:
            parts = ", ".join(f"{k} {v:.3f}" for k, v in c["ledger"]["critical_split"].items())
            lines.append(f"- {c['label']}: {parts}; gas {c['ledger']['gas_per_round']:,}/round")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return part_main(__doc__, run, table, argv)


if __name__ == "__main__":
    sys.exit(main())
