#!/usr/bin/env python
"""Attacks on a K=10 federation against each aggregation rule: final test accuracy beside FedAvg without attack.

Usage: OMP_NUM_THREADS=1 python benchmarks/attacks.py [--quick] [--json] [--workers 2] [--skip-icd] [--skip-ledger]

Tasks: ``digits`` (scikit-learn's digits, the Dirichlet(0.5) demo split over 10 participants, the
task's defaults, 20 rounds) and ``icd`` *reduced*: every 20th ICD-10-CM record (about 3.7k),
split non-IID over 10 participants (participant p specialises in the chapters c with c % 10 == p),
a 4096-bucket x 16 model instead of the shipped 16384 x 16, 10 rounds. The full icd task (75k
records, 262k parameters) times 96 federations does not fit this benchmark's budget.

Attackers are the first 1, 2 or 3 participants. Each still follows the protocol: it trains,
submits a blob of the manifest's schema with finite values, and its update is screened like any
other. An update over the manifest's norm bound (default 1000) would simply be *excluded* by the
protocol; the table's ``excl`` column counts such exclusions. Attacks on the update ``d``:

- ``sign-flip``: ``-4 * d`` of the attacker's honest update;
- ``scaling`` (model replacement, Bagdasaryan et al. 2020): ``K * d`` with ``d`` trained on
  flipped labels, so that FedAvg's ``1/K`` share replaces the global model by the attacker's;
- ``label-flip``: ``d`` trained on labels ``C - 1 - y``;
- ``noise``: Gaussian noise scaled to the norm of the attacker's honest update;
- ``alie`` ("a little is enough", Baruch et al. 2019): every attacker sends ``mu - z * sigma``,
  the coordinate-wise mean and standard deviation of all benign updates of the round (the
  attackers' own honest ones included; an omniscient attacker), with the paper's
  ``z = Phi^-1((K - s) / K)``, ``s = floor(K/2 + 1) - attackers`` (z = 0 for one attacker).

Rules: fedavg, fedavg with clipping, median, trimmed-mean (trim 0.2), krum (f=3), multi-krum
(f=3, m=7). The clipping norm is fixed before the federation starts (as a manifest fixes it):
twice the median norm of the honest updates of round 0 on the genesis model.

The grid runs as plain numpy federations: the task's own ``train``/``evaluate`` with the
participants' seeds (:func:`fedchain.tasks.participant_seed`), the update as the participant
service computes it (``fl32(submitted - base)``), the protocol's norm-bound screening, and
fedchain's exact rule functions (:class:`fedchain.fl.robust.RobustRule`), with the participants
ordered by the addresses of the demo's keys. One row (digits, multi-krum, sign-flip, 2 attackers)
also runs through the real protocol (:class:`Federation`, the in-process chain, the embedded
store, attacker participants behind a :class:`Task` wrapper), is audited, and its final
aggregate must equal the numpy federation's bit for bit.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fedchain.fl.robust import RobustRule, rule_from_config
from fedchain.orchestrator.federation import demo_signer, genesis_params
from fedchain.protocol import DEFAULT_MAX_UPDATE_NORM
from fedchain.tasks._seeds import derive_seed, participant_seed
from fedchain.tasks.api import DemoData, DemoParticipant, Task, TrainResult

Arrays = dict[str, np.ndarray]
K = 10
SEED = 0
ATTACKS = ("sign-flip", "scaling", "label-flip", "noise", "alie")
RULES = ("fedavg", "fedavg+clip", "median", "trimmed-mean", "krum", "multi-krum")
SIGN_FLIP_SCALE = 4.0


# --------------------------------------------------------------------------- tasks and data


@dataclass(frozen=True)
class Setup:
    """A task, its K participants (name, address, data, flipped data) and its test set."""

    name: str
    task: Task
    members: tuple[tuple[str, str, Any, Any], ...]
    test: Any
    rounds: int


def _digits(rounds: int) -> Setup:
    from fedchain.tasks.digits import DigitsTask
    from fedchain.tasks.digits.data import NUM_CLASSES, DigitsData

    task = DigitsTask()
    demo = task.demo(K, SEED)

    def flip(d: DigitsData) -> DigitsData:
        return DigitsData(d.name, d.x, (NUM_CLASSES - 1 - d.y).astype(np.int64))

    return _setup("digits", task, demo, flip, rounds)


def _icd(rounds: int) -> Setup:
    from fedchain.tasks.icd import IcdTask
    from fedchain.tasks.icd.data import Dataset, load_icd10, split_non_iid

    task = IcdTask(num_buckets=4096, dim=16)
    full = load_icd10()
    keep = range(0, len(full), 20)
    small = Dataset(
        name="icd-1/20",
        texts=tuple(full.texts[i] for i in keep),
        labels=tuple(full.labels[i] for i in keep),
        label_names=full.label_names,
    )
    classes = len(full.label_names)
    groups = [[c for c in range(classes) if c % K == p] for p in range(K)]
    split = split_non_iid(small, groups, names=[f"participant-{p}" for p in range(K)], seed=SEED)
    demo = DemoData(participants=[DemoParticipant(s.name, s) for s in split.shards], test=split.test)

    def flip(d: Dataset) -> Dataset:
        return Dataset(d.name, d.texts, tuple(classes - 1 - y for y in d.labels), d.label_names)

    return _setup("icd", task, demo, flip, rounds)


def _setup(name: str, task: Task, demo: DemoData, flip: Callable[[Any], Any], rounds: int) -> Setup:
    members = tuple((m.name, demo_signer(SEED, m.name).address, m.data, flip(m.data)) for m in demo.participants)
    return Setup(name, task, members, demo.test, rounds)


@lru_cache(maxsize=2)
def setup(name: str, rounds: int) -> Setup:
    return _digits(rounds) if name == "digits" else _icd(rounds)


# --------------------------------------------------------------------------- attacks


def norm(d: Mapping[str, np.ndarray]) -> float:
    return math.sqrt(
        sum(float(np.dot(a.reshape(-1).astype(np.float64), a.reshape(-1).astype(np.float64))) for a in d.values())
    )


def alie_z(k: int, attackers: int) -> float:
    """Baruch et al.'s z_max: ``Phi^-1((k - s) / k)`` with ``s = floor(k/2 + 1) - attackers``."""
    s = math.floor(k / 2 + 1) - attackers
    return statistics.NormalDist().inv_cdf((k - s) / k)


def craft(
    attack: str,
    own: Arrays,
    flipped: Arrays | None,
    benign: Sequence[Arrays],
    attackers: int,
    rng: np.random.Generator,
) -> Arrays:
    """The attacker's update (float32) from its honest update ``own`` and, for ALIE, every benign update."""
    if attack == "sign-flip":
        return {k: (-SIGN_FLIP_SCALE * v).astype(np.float32) for k, v in own.items()}
    if attack == "scaling":
        assert flipped is not None
        return {k: (float(K) * v).astype(np.float32) for k, v in flipped.items()}
    if attack == "label-flip":
        assert flipped is not None
        return flipped
    if attack == "noise":
        noise = {k: rng.standard_normal(v.shape) for k, v in own.items()}
        scale = norm(own) / max(norm(noise), 1e-30)
        return {k: (v * scale).astype(np.float32) for k, v in noise.items()}
    if attack == "alie":
        z = alie_z(K, attackers)
        out: Arrays = {}
        for k in own:
            stack = np.stack([b[k].astype(np.float64) for b in benign])
            out[k] = (stack.mean(axis=0) - z * stack.std(axis=0)).astype(np.float32)
        return out
    raise ValueError(attack)


def rule_for(name: str, clip: float) -> RobustRule:
    table: dict[str, dict[str, Any]] = {
        "fedavg": {"rule": "fedavg"},
        "fedavg+clip": {"rule": "fedavg", "clip": clip},
        "median": {"rule": "median"},
        "trimmed-mean": {"rule": "trimmed-mean", "trim": 0.2},
        "krum": {"rule": "krum", "f": 3},
        "multi-krum": {"rule": "multi-krum", "f": 3, "m": 7},
    }
    agg = dict(table[name])
    return rule_from_config(str(agg.pop("rule")), {"server_lr": 1.0, **agg})


def aggregation_table(name: str, clip: float) -> dict[str, Any]:
    rule = rule_for(name, clip)
    return {"rule": rule.rule, **rule.params()}


# --------------------------------------------------------------------------- the numpy federation


def _train(s: Setup, base: Arrays, data: Any, r: int, name: str) -> Arrays:
    res = s.task.train(
        {k: v.copy() for k, v in base.items()}, data, s.task.train_config(), seed=participant_seed(SEED, r, name)
    )
    return {
        k: np.subtract(np.asarray(res.arrays[k], dtype=np.float32), base[k], dtype=np.float32) for k in sorted(base)
    }


def submitted(base: Arrays, delta: Arrays) -> Arrays:
    """The update as the participant service computes it from the arrays a train returned: fl32(fl32(base + d) - base)."""
    return {
        k: np.subtract(np.add(base[k], delta[k], dtype=np.float32), base[k], dtype=np.float32) for k in sorted(base)
    }


def clip_norm(s: Setup) -> float:
    """Twice the median honest update norm of round 0 on the genesis model (fixed before the federation)."""
    base = genesis_params(s.task, SEED)
    return 2.0 * statistics.median(norm(_train(s, base, d, 0, n)) for n, _, d, _ in s.members)


def federate(
    task_name: str, rounds: int, rule_name: str, attack: str | None, attackers: int, clip: float
) -> dict[str, Any]:
    """One federation; returns its final accuracy, exclusions, and the final parameters' digest."""
    s = setup(task_name, rounds)
    rule = rule_for(rule_name, clip)
    params = genesis_params(s.task, SEED)
    bad = {n for n, _, _, _ in s.members[:attackers]} if attack else set()
    started = time.perf_counter()
    excluded = discarded_attackers = selected_rounds = 0
    for r in range(s.rounds):
        benign: dict[str, Arrays] = {}
        flipped: dict[str, Arrays] = {}
        for name, _, data, flip in s.members:
            if name not in bad or attack in ("sign-flip", "noise", "alie"):
                benign[name] = _train(s, params, data, r, name)
            if name in bad and attack in ("scaling", "label-flip"):
                flipped[name] = _train(s, params, flip, r, name)
        updates = []
        for name, address, data, _ in s.members:
            if name in bad:
                assert attack is not None
                rng = np.random.default_rng(derive_seed(SEED, "attack-noise", r, name))
                delta = submitted(
                    params,
                    craft(attack, benign.get(name, {}), flipped.get(name), list(benign.values()), attackers, rng),
                )
            else:
                delta = benign[name]
            # the protocol's screening: finite values within the manifest's norm bound
            if not all(np.isfinite(a).all() for a in delta.values()) or norm(delta) > DEFAULT_MAX_UPDATE_NORM:
                excluded += 1
                continue
            updates.append((address, s.task.num_samples(data), delta))
        result = rule.aggregate(params, updates)
        params = result.params
        addr_bad = {a for n, a, _, _ in s.members if n in bad}
        discarded_attackers += sum(1 for a in result.discarded if a in addr_bad)
        selected_rounds += 1
    metrics = s.task.evaluate(params, s.test)
    digest = _digest(params)
    return {
        "task": task_name,
        "rule": rule_name,
        "attack": attack or "none",
        "attackers": attackers,
        "accuracy": float(metrics["accuracy"]),
        "excluded": excluded,
        "attackers_discarded": discarded_attackers,
        "rounds": s.rounds,
        "digest": digest,
        "seconds": time.perf_counter() - started,
    }


def _digest(params: Mapping[str, np.ndarray]) -> str:
    import hashlib

    h = hashlib.sha256()
    for k in sorted(params):
        h.update(k.encode())
        h.update(np.ascontiguousarray(params[k], dtype=np.float32).tobytes())
    return h.hexdigest()


def _job(args: tuple[str, int, str, str | None, int, float]) -> dict[str, Any]:
    return federate(*args)


# --------------------------------------------------------------------------- one row through the real protocol


class AttackerTask(Task):
    """A participant's task that trains honestly, then sends ``-4 * d`` (sign flip): still a valid blob."""

    def __init__(self, inner: Task) -> None:
        self.inner = inner
        self.name = inner.name
        self.version = inner.version

    def schema(self) -> Any:
        return self.inner.schema()

    def frozen(self) -> Mapping[str, str]:
        return self.inner.frozen()

    def describe(self) -> str:
        return self.inner.describe()

    def train_config(self) -> Any:
        return self.inner.train_config()

    def init(self, seed: int) -> Arrays:
        return self.inner.init(seed)

    def load_data(self, source: str) -> Any:
        return self.inner.load_data(source)

    def evaluate(self, arrays: Arrays, data: Any) -> Mapping[str, float]:
        return self.inner.evaluate(arrays, data)

    def num_samples(self, data: Any) -> int:
        return self.inner.num_samples(data)

    def demo(self, num_participants: int, seed: int) -> DemoData:
        return self.inner.demo(num_participants, seed)

    def train(self, arrays: Arrays, data: Any, config: Any, *, seed: int) -> TrainResult:
        base = {k: np.array(v, dtype=np.float32, copy=True) for k, v in arrays.items()}
        honest = self.inner.train(arrays, data, config, seed=seed)
        own = {k: np.subtract(np.asarray(honest.arrays[k], dtype=np.float32), base[k], dtype=np.float32) for k in base}
        bad = craft("sign-flip", own, None, [], 0, np.random.default_rng(0))
        return TrainResult(
            {k: np.add(base[k], bad[k], dtype=np.float32) for k in base}, honest.num_samples, honest.metrics
        )


def ledger_row(rounds: int, rule_name: str, attackers: int, clip: float) -> dict[str, Any]:
    """digits, ``rule_name``, sign flip: through Federation.create + run, audited."""
    from fedchain.audit import audit_ledger
    from fedchain.chain import EmbeddedChain
    from fedchain.orchestrator.federation import Federation, make_manifest
    from fedchain.protocol import load_model
    from fedchain.storage import open_store

    s = setup("digits", rounds)
    manifest = make_manifest(s.task, seed=SEED, min_updates=K, aggregation=aggregation_table(rule_name, clip))
    members = [DemoParticipant(n, d) for n, _, d, _ in s.members]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        chain = EmbeddedChain()
        try:
            store = open_store(str(Path(tmp) / "store"))
            fed = Federation.create(chain, store, s.task, members, manifest, key=lambda n: demo_signer(SEED, n))
            for p in fed.participants[:attackers]:
                p.task = AttackerTask(s.task)
            summaries = fed.run(s.rounds)
            last = summaries[-1]
            assert last.aggregate_cid is not None and last.aggregate_hash is not None
            params = load_model(
                store, fed.rules, last.aggregate_cid, last.aggregate_hash, round_id=last.round_id, what="aggregate"
            )
            report = audit_ledger(fed.ledger, store)
            discarded = sum(1 for v in report.rounds for o in v.outcomes if o.status.value == "discarded")
        finally:
            chain.close()
    return {
        "rule": rule_name,
        "attack": "sign-flip",
        "attackers": attackers,
        "accuracy": float(s.task.evaluate(params, s.test)["accuracy"]),
        "digest": _digest(params),
        "audit_ok": report.ok,
        "discarded": discarded,
        "seconds": time.perf_counter() - started,
    }


# --------------------------------------------------------------------------- main


def machine() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        model = next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "")
    except OSError:
        model = ""
    return f"{model or platform.processor()}, {len(__import__('os').sched_getaffinity(0))} CPUs, Python {platform.python_version()}"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="digits only, 2 attackers, 8 rounds, no ledger row")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--workers", type=int, default=2, help="processes for the grid (default 2)")
    ap.add_argument("--digits-rounds", type=int, default=20)
    ap.add_argument("--icd-rounds", type=int, default=10)
    ap.add_argument("--attackers", type=int, nargs="+", default=[1, 2, 3], help="attacker counts (default 1 2 3)")
    ap.add_argument("--skip-icd", action="store_true")
    ap.add_argument("--skip-ledger", action="store_true")
    args = ap.parse_args(argv)
    tasks = [("digits", 8 if args.quick else args.digits_rounds)]
    if not (args.quick or args.skip_icd):
        tasks.append(("icd", args.icd_rounds))
    counts = (2,) if args.quick else tuple(args.attackers)
    started = time.perf_counter()
    clips = {name: clip_norm(setup(name, rounds)) for name, rounds in tasks}
    jobs: list[tuple[str, int, str, str | None, int, float]] = []
    for name, rounds in tasks:
        for rule in RULES:
            jobs.append((name, rounds, rule, None, 0, clips[name]))
            jobs.extend((name, rounds, rule, attack, n, clips[name]) for attack in ATTACKS for n in counts)
    rows: list[dict[str, Any]] = []
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for row in pool.map(_job, jobs):
            rows.append(row)
            print(
                f"[{len(rows)}/{len(jobs)}] {row['task']} {row['rule']} {row['attack']} x{row['attackers']}: {row['accuracy']:.3f} ({row['seconds']:.0f}s)",
                file=sys.stderr,
                flush=True,
            )
    ledger = None
    if not (args.quick or args.skip_ledger):
        rounds = tasks[0][1]
        ledger = ledger_row(rounds, "multi-krum", 2, clips["digits"])
        sim = next(
            r
            for r in rows
            if r["task"] == "digits"
            and r["rule"] == "multi-krum"
            and r["attack"] == "sign-flip"
            and r["attackers"] == 2
        )
        ledger["numpy_digest"] = sim["digest"]
        ledger["bit_identical"] = sim["digest"] == ledger["digest"]
    result = {
        "date": date.today().isoformat(),
        "machine": machine(),
        "k": K,
        "clip": clips,
        "alie_z": {n: alie_z(K, n) for n in (1, 2, 3)},
        "rows": rows,
        "ledger_row": ledger,
        "seconds": time.perf_counter() - started,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result, counts)
    return 0


def print_table(result: dict[str, Any], counts: Sequence[int]) -> None:
    rows = result["rows"]
    print(
        f"# {result['date']}, {result['machine']}; K={result['k']}, clip norms { ({k: round(v, 3) for k, v in result['clip'].items()}) }"
    )
    for task in sorted({r["task"] for r in rows}, key=["digits", "icd"].index):
        mine = [r for r in rows if r["task"] == task]
        base = next(r for r in mine if r["rule"] == "fedavg" and r["attack"] == "none")
        print(f"\n## {task} ({base['rounds']} rounds): FedAvg without attack {base['accuracy']:.1%}")
        header = f"| {'rule':<13} | {'no attack':>9} |" + "".join(f" {a} x{n:<1} |" for a in ATTACKS for n in counts)
        print(header)
        print("|" + "---|" * (2 + len(ATTACKS) * len(counts)))
        for rule in RULES:
            cells = []
            none = next(r for r in mine if r["rule"] == rule and r["attack"] == "none")
            for a in ATTACKS:
                for n in counts:
                    r = next(x for x in mine if x["rule"] == rule and x["attack"] == a and x["attackers"] == n)
                    mark = f"{r['accuracy']:.1%}" + (f" ({r['excluded']} excl)" if r["excluded"] else "")
                    cells.append(f" {mark:>{len(a) + 3}} |")
            print(f"| {rule:<13} | {none['accuracy']:>9.1%} |" + "".join(cells))
    ledger = result.get("ledger_row")
    if ledger:
        print(
            f"\nthrough the ledger: digits, {ledger['rule']}, {ledger['attack']} x{ledger['attackers']}: accuracy "
            f"{ledger['accuracy']:.1%}, audit {'passed' if ledger['audit_ok'] else 'FAILED'}, {ledger['discarded']} updates "
            f"discarded, final aggregate {'bit-identical to' if ledger['bit_identical'] else 'DIFFERENT from'} the numpy federation's "
            f"({ledger['seconds']:.0f}s)"
        )
    print(f"\n{result['seconds']:.0f}s in all")


if __name__ == "__main__":
    raise SystemExit(main())
