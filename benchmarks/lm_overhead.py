"""The ledger's overhead on the critical path for the ``lm`` task, against plain federated learning.

Issue 13's figure: the ledger overhead on the critical path for ``lm`` at K=3 and K=10 against
plain federated learning on the same task, target <= 1.10. Run from the repository root::

    OMP_NUM_THREADS=1 python -m benchmarks.lm_overhead --k 3 10 --rounds 2 --repeats 2 [--chain anvil]

Both arms run the ``lm`` task with its default settings (K=10 is ``LmTask().demo(10, seed)``)
and the same seeds, interleaved in one process (plain, ledger, plain, ledger, ...), so a busy
spell of the machine hits both alike:

- plain: :func:`fedchain.tasks._baselines.plain_fedavg` (each participant trains, FedAvg in
  memory; its per-round test evaluation is timed and left out);
- ledger: ``Federation.create(...).run(rounds, on_step=hook)`` (the coordinator's and the
  participants' services, the chain, the store, every verification).

A round's critical path is what a deployment waits for: the coordinator opens it, the
participants work at the same time on their own machines (the slowest counts), the coordinator
closes and finalizes it. For plain FL it is the slowest participant's training plus the
aggregation. The ledger's share of its path is split into the store (blob reads and writes),
the chain (every JSON-RPC request and transaction, timed at the chain object), and the rest
(encoding, hashing, the verifications the services run, aggregation).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import TimedStore, median
from benchmarks._task import TimedTask
from fedchain.chain import Chain, EmbeddedChain, connect
from fedchain.fl.schema import Arrays
from fedchain.orchestrator._step import Step
from fedchain.orchestrator.federation import Federation, demo_signer, make_manifest
from fedchain.protocol import load_model
from fedchain.storage import open_store
from fedchain.tasks._baselines import plain_fedavg
from fedchain.tasks.api import Config, DemoData, Task, TrainResult

SEED = 7
#: The issue's target for the critical path's ratio.
TARGET = 1.10


# --------------------------------------------------------------------------- clocks


class Clock:
    """Accumulated seconds of the outermost timed sections (a section inside another is not counted twice)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0
        self._depth = 0

    @contextlib.contextmanager
    def timed(self) -> Iterator[None]:
        self._depth += 1
        started = time.perf_counter()
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0:
                self.seconds += time.perf_counter() - started
                self.calls += 1


def time_requests(chain: Chain, clock: Clock) -> None:
    """Time every JSON-RPC request ``chain``'s web3 makes (a middleware on the chain object the benchmark made)."""
    from web3.middleware import Web3Middleware

    class _Timed(Web3Middleware):
        def wrap_make_request(self, make_request: Any) -> Any:
            def middleware(method: Any, params: Any) -> Any:
                with clock.timed():
                    return make_request(method, params)

            return middleware

    chain.w3.middleware_onion.add(_Timed, name="fedchain-bench-chain-clock")


class TimedEmbeddedChain(EmbeddedChain):
    """The in-process chain with its own entry points timed (it reaches eth-tester without web3 for some)."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock
        time_requests(self, clock)

    def prepare(self) -> None:
        with self.clock.timed():
            super().prepare()

    def send_raw_transaction(self, raw: bytes) -> Any:
        with self.clock.timed():
            return super().send_raw_transaction(raw)

    def wait_for_receipt(self, tx_hash: Any, timeout: float = 120.0) -> Any:
        with self.clock.timed():
            return super().wait_for_receipt(tx_hash, timeout)

    def get_logs(self, params: dict[str, Any]) -> list[Any]:
        with self.clock.timed():
            return super().get_logs(params)

    def revert_data(self, tx_hash: Any, call: dict[str, Any], block_number: int) -> bytes | None:
        with self.clock.timed():
            return super().revert_data(tx_hash, call, block_number)


class ClockedTask(TimedTask):
    """:class:`TimedTask` that also keeps every training's and evaluation's seconds, in order."""

    def __init__(self, inner: Task) -> None:
        super().__init__(inner)
        self.trainings: list[float] = []
        self.evaluations: list[float] = []

    def train(self, arrays: Arrays, data: Any, config: Config, *, seed: int) -> TrainResult:
        result = super().train(arrays, data, config, seed=seed)
        self.trainings.append(self.trained[id(data)])
        return result

    def evaluate(self, arrays: Arrays, data: Any) -> Mapping[str, float]:
        started = time.perf_counter()
        try:
            return super().evaluate(arrays, data)
        finally:
            self.evaluations.append(time.perf_counter() - started)


# --------------------------------------------------------------------------- the two arms


@dataclass
class Arm:
    """Per-round figures of one arm over every repetition."""

    critical: list[float] = field(default_factory=list)
    train: list[float] = field(default_factory=list)
    split: dict[str, list[float]] = field(default_factory=dict)

    def add(self, **parts: float) -> None:
        for k, v in parts.items():
            self.split.setdefault(k, []).append(v)

    def summary(self) -> dict[str, Any]:
        return {
            "critical_seconds": median(self.critical),
            "train_seconds": median(self.train),
            "split": {k: median(v) for k, v in self.split.items()},
        }


def plain_arm(task: Task, demo: DemoData, rounds: int, arm: Arm) -> Arrays:
    """Plain FedAvg; per round: slowest training + aggregation (its test evaluation left out)."""
    clocked = ClockedTask(task)
    # aggregated under the ledger arm's addresses, so in its order: the two arms' models must be the same bits
    addresses = {p.name: str(demo_signer(SEED, p.name).address) for p in demo.participants}
    run = plain_fedavg(clocked, demo, rounds, SEED, aggregate_as=addresses)
    k = len(demo.participants)
    for r, stats in enumerate(run.rounds):
        trains = clocked.trainings[r * k : (r + 1) * k]
        aggregate = stats.seconds - sum(trains) - clocked.evaluations[r]
        arm.critical.append(max(trains) + aggregate)
        arm.train.append(max(trains))
        arm.add(training=max(trains), aggregation=aggregate)
    return run.arrays


def open_timed_chain(kind: str, clock: Clock, stack: contextlib.ExitStack) -> Chain:
    if kind == "embedded":
        chain: Chain = TimedEmbeddedChain(clock)
    else:
        from fedchain.chain.anvil import AnvilNode

        node = stack.enter_context(AnvilNode())
        chain = connect(node.url)
        time_requests(chain, clock)
    stack.callback(chain.close)
    return chain


#: One step of the ledger arm: actor, step, seconds, store seconds, chain seconds, training seconds, chain calls
#: (the chain's outermost timed entries: on a node, its JSON-RPC requests).
_StepRow = tuple[str, Step, float, float, float, float, int]


def ledger_arm(task: Task, demo: DemoData, rounds: int, chain_kind: str, workdir: Path, arm: Arm) -> tuple[Arrays, int]:
    """``Federation.run`` with the ``on_step`` hook; per round: open + slowest participant + close + finish."""
    clocked = ClockedTask(task)
    members = list(demo.participants)
    manifest = make_manifest(task, seed=SEED, min_updates=len(members), round_seconds=3600)
    clock = Clock()
    steps: list[_StepRow] = []
    with contextlib.ExitStack() as stack:
        chain = open_timed_chain(chain_kind, clock, stack)
        store = TimedStore(open_store(str(workdir / "store"), max_blob_size=manifest.max_blob_size))
        fed = Federation.create(chain, store, clocked, members, manifest, key=lambda name: demo_signer(SEED, name))
        data_of = {p.name: id(p.data) for p in fed.participants}
        marks = [store.seconds, clock.seconds, clock.calls]

        def on_step(actor: str, step: Step, seconds: float) -> None:
            store_s, chain_s, calls = store.seconds - marks[0], clock.seconds - marks[1], clock.calls - marks[2]
            marks[:] = [store.seconds, clock.seconds, clock.calls]
            train_s = clocked.trained.pop(data_of[actor], 0.0) if actor in data_of else 0.0
            steps.append((actor, step, seconds, store_s, chain_s, train_s, int(calls)))

        gas_before = fed._gas()
        summaries = fed.run(rounds, on_step=on_step, poll_seconds=0.01)
        gas = (fed._gas() - gas_before) // rounds
        last = summaries[-1]
        assert last.aggregate_cid is not None and last.aggregate_hash is not None
        final = load_model(
            store.inner, fed.rules, last.aggregate_cid, last.aggregate_hash, round_id=last.round_id, what="aggregate"
        )
    coordinator = [s for s in steps if s[0] == "coordinator" and s[1] is Step.WORKED]
    if len(coordinator) != 3 * rounds:
        raise RuntimeError(f"expected open, close and finish per round, got {len(coordinator)} coordinator steps")
    worked = {m.name: [s for s in steps if s[0] == m.name and s[1] is Step.WORKED] for m in members}
    for name, w in worked.items():
        if len(w) != rounds:
            raise RuntimeError(f"expected one working step per round of {name}, got {len(w)}")
    for r in range(rounds):
        opened, closed, finished = coordinator[3 * r : 3 * r + 3]
        slowest = max((w[r] for w in worked.values()), key=lambda s: s[2])
        path = (opened, slowest, closed, finished)
        total = sum(s[2] for s in path)
        store_s, chain_s = sum(s[3] for s in path), sum(s[4] for s in path)
        arm.critical.append(total)
        arm.train.append(slowest[5])
        arm.add(
            training=slowest[5],
            store=store_s,
            chain=chain_s,
            rest=total - slowest[5] - store_s - chain_s,
            coordinator=opened[2] + closed[2] + finished[2],
            participant_besides_training=slowest[2] - slowest[5],
            chain_calls=sum(s[6] for s in path),
        )
    return final, gas


# --------------------------------------------------------------------------- one cell


def measure(k: int, rounds: int, repeats: int, chain: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """Both arms of ``lm`` at K=k, ``repeats`` times each, interleaved."""
    from fedchain.tasks.lm import LmTask

    task = LmTask(**settings)
    demo = task.demo(k, SEED)
    task.train(task.init(SEED), demo.participants[0].data, task.train_config(), seed=0)  # warm-up: base, threads
    plain, ledger = Arm(), Arm()
    same: list[bool] = []
    diff = 0.0
    gas = 0
    for rep in range(repeats):
        print(f"lm overhead: K={k} ({chain}), repetition {rep + 1}/{repeats}", file=sys.stderr, flush=True)
        plain_final = plain_arm(task, demo, rounds, plain)
        with tempfile.TemporaryDirectory(prefix="fedchain-bench-lm-") as tmp:
            ledger_final, gas = ledger_arm(task, demo, rounds, chain, Path(tmp), ledger)
        same.append(
            sorted(plain_final) == sorted(ledger_final)
            and all(np.array_equal(plain_final[n], ledger_final[n]) for n in plain_final)
        )
        diff = max(diff, max(float(np.max(np.abs(plain_final[n] - ledger_final[n]))) for n in plain_final))
    p, lg = plain.summary(), ledger.summary()
    return {
        "k": k,
        "chain": chain,
        "rounds": rounds,
        "repeats": repeats,
        "parameters": task.schema().size,
        "update_bytes": task.schema().nbytes,
        "plain": p,
        "ledger": lg,
        "ratio": lg["critical_seconds"] / p["critical_seconds"],
        "gas_per_round": gas,
        "same_model": all(same),
        "max_abs_difference": diff,
        "ratio_at_plain_training": (p["critical_seconds"] + lg["critical_seconds"] - lg["train_seconds"])
        / p["critical_seconds"],
        "training_for_target": max(
            0.0, (lg["critical_seconds"] - lg["train_seconds"] - TARGET * p["split"]["aggregation"]) / (TARGET - 1)
        ),
    }


def table(cells: list[dict[str, Any]]) -> str:
    lines = [
        "## lm: ledger overhead on the critical path (seconds per round, median over rounds and repetitions)",
        "",
        (
            "| K | chain | P (exchanged) | plain s/round | ledger s/round | raw ratio | ratio at the plain arm's "
            "training | target | training (slowest) | ledger: store | chain | rest | same model |"
        ),
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for c in cells:
        s = c["ledger"]["split"]
        lines.append(
            f"| {c['k']} | {c['chain']} | {c['parameters']:,} | {c['plain']['critical_seconds']:.3f} "
            f"| {c['ledger']['critical_seconds']:.3f} | {c['ratio']:.3f} | {c['ratio_at_plain_training']:.3f} "
            f"| <= {TARGET} "
            f"| {c['ledger']['train_seconds']:.3f} | {s['store']:.3f} | {s['chain']:.3f} | {s['rest']:.3f} "
            f"| {'yes' if c['same_model'] else 'no'} |"
        )
    lines.append("")
    for c in cells:
        s = c["ledger"]["split"]
        lines.append(
            f"- K={c['k']} ({c['chain']}): plain aggregation {c['plain']['split']['aggregation']:.4f} s; ledger "
            f"coordinator (open + close + finish) {s['coordinator']:.3f} s, slowest participant besides training "
            f"{s['participant_besides_training']:.3f} s; gas {c['gas_per_round']:,}/round; ratio with the plain "
            f"arm's training and the ledger's path besides training {c['ratio_at_plain_training']:.3f}; training "
            f"for {TARGET}: {c['training_for_target']:.1f} s/round; chain calls on the path "
            f"{s['chain_calls']:.0f}/round; largest difference of the final models "
            f"{c['max_abs_difference']:.2e}"
        )
    lines.append(
        "\nThe raw ratio divides the two arms' paths as measured, so it moves with how fast each arm's "
        "training happened to run (the same work: only the machine's noise differs); the ratio at the plain "
        "arm's training adds the ledger's path besides training to the plain arm's path, which is the ledger's "
        f"overhead alone, and is the figure the target ({TARGET}) is for."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--k", type=int, nargs="+", default=[3, 10], help="participants (default: 3 10)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per run (default: 2)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each arm, interleaved (default: 2)")
    parser.add_argument("--chain", choices=("embedded", "anvil"), default="embedded")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    from fedchain.cli._demo import parse_settings

    cells = [measure(k, args.rounds, args.repeats, args.chain, parse_settings(args.settings)) for k in args.k]
    print(json.dumps(cells, indent=2) if args.json else table(cells))
    return 0


__all__: list[str] = ["Clock", "ClockedTask", "TimedEmbeddedChain", "measure", "time_requests"]


if __name__ == "__main__":
    sys.exit(main())
