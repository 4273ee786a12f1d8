"""Peak memory of the coordinator's aggregation and of a verifier, at K updates of P parameters.

The parent writes one round (K synthetic updates, closed, aggregated and finalized) on an
embedded chain kept as a journal, and a store on disk. Then each measured role runs in a fresh
interpreter (``python -m benchmarks.scale --child DIR ROLE``) that replays the journal, warms
the read path up on a tiny model (numpy, the codec and the thread pool initialise themselves
on first use, at any model size), takes its RSS as the baseline, resets the kernel's peak
and runs:

- ``aggregate``: what the coordinator runs to finalize, :func:`fedchain.protocol.prepare_aggregate`
  over the recorded updates (streamed from the store), then the aggregate blob, its digest
  and its storing; the digest must be the one the parent finalized (deterministic across
  processes);
- ``verify``: :func:`fedchain.protocol.verify_round`, what every participant and auditor
  runs before accepting the aggregate.

The figure is the peak above the baseline as a multiple of one model's blob (target <= 4).
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import Verdict, part_main, peak_rss_bytes, reset_peak_rss, rss_bytes, signer
from benchmarks._task import SyntheticTask

TARGET = 4.0
JOURNAL = "chain.jsonl"


def write_round(workdir: Path, k: int, p: int) -> dict[str, Any]:
    """One finalized round of ``k`` updates of ``p`` parameters under ``workdir`` (journal + store)."""
    from fedchain.chain import connect
    from fedchain.hashing import sha256
    from fedchain.orchestrator.federation import deploy, genesis_params, make_manifest
    from fedchain.protocol import load_rules
    from fedchain.protocol.blobs import aggregate_blob, update_blob
    from fedchain.storage import open_store

    task = SyntheticTask(p)
    chain = connect(None, journal=workdir / JOURNAL)
    try:
        store = open_store(str(workdir / "store"), max_blob_size=task.schema().nbytes + (1 << 21))
        coordinator = signer("scale coordinator")
        members = sorted((signer(f"scale participant {i}") for i in range(k)), key=lambda s: int(s.address, 16))
        for s in (coordinator, *members):
            chain.fund(s.address)
        manifest = make_manifest(
            task, seed=5, min_updates=k, round_seconds=3600, max_blob_size=task.schema().nbytes + (1 << 21)
        )
        params = genesis_params(task, manifest.seed)
        d = deploy(chain, coordinator, store, manifest, params)
        ledger = d.ledger
        for s in members:
            ledger.register_participant(coordinator, s.address, 1_000_000)
        rules = load_rules(ledger, store)
        ledger.open_round(coordinator, 0, d.genesis_hash, d.genesis_cid, chain.now() + 3600, k)
        rng = np.random.default_rng(9)
        for s in members:
            delta = {n: rng.standard_normal(a.shape, dtype=np.float32) * np.float32(1e-3) for n, a in params.items()}
            blob = update_blob(delta, round_id=0, base_hash=d.genesis_hash, sender=s.address, num_samples=50)
            ledger.submit_update(s, 0, sha256(blob), store.put(blob), 50)
            del blob, delta
        ledger.close_round(coordinator, 0)
        history = ledger.round_history(0)
        from fedchain.protocol import prepare_aggregate

        prepared = prepare_aggregate(history, store, rules, lambda: dict(params))
        assert prepared.params is not None
        blob = aggregate_blob(prepared.params, rules, round_id=0, base_hash=d.genesis_hash, num_samples=50 * k)
        digest = sha256(blob)
        ledger.finalize_round(coordinator, 0, digest, store.put(blob), [s.address for s in members])
        model_bytes = len(blob)
        return {"ledger": ledger.address, "digest": digest.hex(), "model_bytes": model_bytes}
    finally:
        chain.close()


def child(workdir: Path, role: str) -> dict[str, Any]:
    """Run in a fresh interpreter: one role, its peak RSS above a warm baseline."""
    from fedchain.chain import Ledger, connect
    from fedchain.fl import ModelMeta, Schema, decode_model, encode_model, fedavg_stream
    from fedchain.hashing import sha256
    from fedchain.protocol import load_rules, prepare_aggregate, verify_round
    from fedchain.protocol.blobs import aggregate_blob
    from fedchain.storage import open_store
    from fedchain.types import Digest, RoundId

    info = json.loads((workdir / "round.json").read_text())
    chain = connect(None, journal=workdir / JOURNAL, read_only=role == "verify")
    ledger = Ledger(chain, info["ledger"])
    store = open_store(str(workdir / "store"), create=False)
    rules = load_rules(ledger, store)
    history = ledger.round_history(0)
    genesis = ledger.info().genesis_hash
    # warm-up: the read, aggregate and encode paths on a tiny model (first-use costs, any size)
    tiny = {"b": np.zeros(64, np.float32), "w": np.zeros(192, np.float32)}
    meta = ModelMeta(
        round_id=RoundId(0),
        base=Digest(bytes(32)),
        sender=signer("scale coordinator").address,
        samples=1,
        strategy="fedavg:server_lr=1.0",
        model="warm",
    )
    warm = encode_model(tiny, meta)
    decode_model(warm, schema=Schema.of(tiny))
    fedavg_stream(tiny, iter([("0x" + "11" * 20, 1, tiny)]), total_samples=1, threads=2)
    sha256(warm)
    del warm, tiny
    gc.collect()
    baseline = rss_bytes()
    if not reset_peak_rss():
        raise RuntimeError("cannot reset the peak RSS (/proc/self/clear_refs): the scale part needs Linux")
    started = time.perf_counter()
    out: dict[str, Any] = {"baseline": baseline}
    if role == "aggregate":
        from fedchain.protocol import load_model

        def load_base() -> dict[str, np.ndarray]:
            return load_model(store, rules, history.opened.base_cid, history.opened.base_hash, round_id=0, what="base")

        prepared = prepare_aggregate(history, store, rules, load_base)
        assert prepared.params is not None
        blob = aggregate_blob(
            prepared.params,
            rules,
            round_id=0,
            base_hash=history.opened.base_hash,
            num_samples=sum(u.num_samples for u in prepared.valid),
        )
        del prepared
        digest = sha256(blob)
        store.put(blob)
        del blob
        out["same_digest"] = digest.hex() == info["digest"]
    else:
        verdict, verified = verify_round(history, store, rules, expected_base=genesis)
        out["verified"] = verdict.ok
        del verified
    out["peak"] = peak_rss_bytes()
    out["seconds"] = time.perf_counter() - started
    chain.close()
    return out


def measure(k: int, p: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="fedchain-bench-scale-") as tmp:
        workdir = Path(tmp)
        print(f"scale: writing {k} updates of {p:,} parameters", file=sys.stderr, flush=True)
        info = write_round(workdir, k, p)
        (workdir / "round.json").write_text(json.dumps(info))
        roles = {}
        for role in ("aggregate", "verify"):
            print(f"scale: {role} in a fresh interpreter", file=sys.stderr, flush=True)
            proc = subprocess.run(
                [sys.executable, "-m", "benchmarks.scale", "--child", str(workdir), role],
                capture_output=True,
                text=True,
                timeout=3600,
                check=False,
                cwd=Path(__file__).resolve().parents[1],
            )
            if proc.returncode != 0:
                raise RuntimeError(f"scale child ({role}) failed: {proc.stderr.strip()[-2000:]}")
            roles[role] = json.loads(proc.stdout.strip().splitlines()[-1])
    model = info["model_bytes"]
    a, v = roles["aggregate"], roles["verify"]
    return {
        "k": k,
        "p": p,
        "model_bytes": model,
        "aggregate": a,
        "verify": v,
        "aggregate_multiple": (a["peak"] - a["baseline"]) / model,
        "verify_multiple": (v["peak"] - v["baseline"]) / model,
        "ok": bool(a["same_digest"] and v["verified"]),
    }


def run(quick: bool) -> dict[str, Any]:
    cells = ((3, 100_000),) if quick else ((100, 1_000_000), (30, 10_000_000))
    return {"cells": [measure(k, p) for k, p in cells]}


def verdicts(result: dict[str, Any]) -> list[Verdict]:
    out = []
    for c in result["cells"]:
        where = f"K={c['k']}, P={c['p']:,}"
        out.append(Verdict(f"coordinator peak RSS / model, {where}", c["aggregate_multiple"], "<=", TARGET))
        out.append(Verdict(f"verifier peak RSS / model, {where}", c["verify_multiple"], "<=", TARGET))
        out.append(
            Verdict(f"aggregate recomputed bit for bit in a fresh process, {where}", 1.0 if c["ok"] else 0.0, ">=", 1.0)
        )
    return out


def table(result: dict[str, Any]) -> str:
    lines = [
        "## scale (peak RSS above a warm baseline, fresh interpreters)",
        "",
        "| K | P | model MB | coordinator | s | verifier | s | same digest, verified |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for c in result["cells"]:
        lines.append(
            f"| {c['k']} | {c['p']:,} | {c['model_bytes'] / 2**20:.1f} | {c['aggregate_multiple']:.2f}x | {c['aggregate']['seconds']:.2f} "
            f"| {c['verify_multiple']:.2f}x | {c['verify']['seconds']:.2f} | {'yes' if c['ok'] else 'NO'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    def extra(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--child", nargs=2, metavar=("DIR", "ROLE"), help=argparse.SUPPRESS)

    def special(args: argparse.Namespace) -> int | None:
        if not args.child:
            return None
        print(json.dumps(child(Path(args.child[0]), args.child[1])))
        return 0

    return part_main(__doc__, run, table, argv, extra=extra, special=special)


if __name__ == "__main__":
    sys.exit(main())
