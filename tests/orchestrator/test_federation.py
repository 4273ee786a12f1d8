"""The federation end to end on real chains and the real store, with attacks and faults.

A small slice of the real ICD-10-CM data and a small model keep each round well under a
second; the protocol exercised is exactly the demo's.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support.federation import (
    audit,
    crafted,
    finish,
    honest_round,
    make,
    run_small_demo,
    small_manifest,
    submit,
    zeros,
)

import fedchain
from fedchain.chain import Chain, EmbeddedChain, Signer
from fedchain.cli import main
from fedchain.errors import DeadlinePassedError, VerificationError
from fedchain.hashing import sha256
from fedchain.orchestrator.federation import Federation, open_workdir
from fedchain.orchestrator.participant import Participant
from fedchain.storage import LocalBlockStore
from fedchain.tasks.api import DemoData

ROOT = Path(fedchain.__file__).resolve().parents[1]


def _block_file(store_dir: Path, cid: str) -> Path:
    """The block file holding a single-block blob (small blobs are one block)."""
    blob = LocalBlockStore(store_dir).get(cid)
    for path in (store_dir / "blocks").rglob("*.data"):
        data = path.read_bytes()
        if blob[:256] in data and blob[-256:] in data:
            return path
    raise AssertionError(f"no block file for {cid}")


def test_three_rounds_audit_clean(chain: Chain, store: LocalBlockStore, demo: DemoData) -> None:
    fed = make(chain, store, demo)
    rounds = fed.run(3, test_data=demo.test)
    assert [(r.round_id, r.status, r.included, r.excluded) for r in rounds] == [
        (i, "finalized", 3, 0) for i in range(3)
    ]
    assert all(r.accuracy is not None and 0.0 < r.accuracy <= 1.0 for r in rounds)
    report = audit(fed)
    assert report.ok and len(report.rounds) == 3 and report.rounds_finalized == 3
    assert [v.aggregate_hash for v in report.rounds] == [r.aggregate_hash for r in rounds]


def test_a_demo_workdir_audits_clean_from_a_fresh_process(tmp_path: Path) -> None:
    result = run_small_demo(tmp_path / "demo", rounds=2)
    assert result.audit.ok
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-m", "fedchain", "audit", "--workdir", str(tmp_path / "demo")],
        capture_output=True,
        check=False,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    aggregate = result.rounds[1].aggregate_hash
    assert aggregate is not None
    assert f"round 1 finalized: 3 recorded, 3 valid, 3 included, aggregate 0x{aggregate.hex()}: ok" in proc.stdout
    assert main(["audit", "--workdir", str(tmp_path / "demo"), "--check-cids"]) == 0  # every block under its CID too


def test_a_flipped_byte_in_a_stored_update_fails_the_audit(tmp_path: Path) -> None:
    run_small_demo(tmp_path / "demo", rounds=2)
    chain, ledger, _, _ = open_workdir(tmp_path / "demo")
    victim = ledger.round_history(1).updates[1]
    chain.close()
    block = _block_file(tmp_path / "demo" / "store", victim.cid)
    data = bytearray(block.read_bytes())
    data[len(data) // 2] ^= 0x01
    block.write_bytes(bytes(data))
    assert main(["audit", "--workdir", str(tmp_path / "demo")]) == 1
    assert main(["audit", "--workdir", str(tmp_path / "demo"), "--json"]) == 1
    assert main(["audit", "--workdir", str(tmp_path / "demo"), "--check-cids"]) == 1


def test_audit_failure_names_round_and_participant(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_small_demo(tmp_path / "demo", rounds=1)
    chain, ledger, _, _ = open_workdir(tmp_path / "demo")
    victim = ledger.round_history(0).updates[0]
    chain.close()
    block = _block_file(tmp_path / "demo" / "store", victim.cid)
    raw = block.read_bytes()
    block.write_bytes(raw[:-1] + bytes([raw[-1] ^ 0xFF]))
    capsys.readouterr()
    assert main(["audit", "--workdir", str(tmp_path / "demo")]) == 1
    out = capsys.readouterr().out
    assert out.startswith("audit FAILED: 1 discrepancy")
    assert re.search(r"round 0 finalized: 3 recorded, 2 valid, 3 included, aggregate 0x[0-9a-f]{64}: FAILED", out)
    assert f"FAILED: round 0, participant {victim.participant}: store damage mismatch" in out
    assert f"block {victim.cid}" in out  # the damaged block is named


def test_a_copied_update_is_excluded_and_the_original_kept(
    chain: Chain, store: LocalBlockStore, demo: DemoData
) -> None:
    fed = make(chain, store, demo)
    free_rider = fed.attacker("free-rider")
    r = honest_round(fed)
    original = fed.ledger.round_history(r).updates[0]
    fed.ledger.submit_update(free_rider, r, original.update_hash, original.cid, original.num_samples)
    report = finish(fed, r)
    assert free_rider.address not in report.verdict.included and original.participant in report.verdict.included
    [exclusion] = report.verdict.excluded
    assert exclusion.participant == free_rider.address and exclusion.reason == "copied"
    assert audit(fed).ok


def _wrong_aggregate(fed: Federation, r: int) -> bytes:
    """A byzantine coordinator records some other model (the genesis, re-stored) as round ``r``'s aggregate."""
    bogus = bytes(fed.store.get(fed.ledger.genesis_cid()))
    included = [u.participant for u in fed.ledger.round_history(r).updates]
    fed.coordinator.close(r)
    fed.ledger.finalize_round(fed.coordinator.signer, r, sha256(bogus), fed.store.put(bogus), included)
    return bogus


def test_a_wrong_aggregate_is_refused_by_participants_and_the_audit(
    chain: Chain, store: LocalBlockStore, demo: DemoData
) -> None:
    fed = make(chain, store, demo)
    r = honest_round(fed)
    bogus = _wrong_aggregate(fed, r)
    fed.ledger.open_round(
        fed.coordinator.signer, r + 1, sha256(bogus), fed.ledger.round_history(r).aggregate.cid, chain.now() + 600, 3
    )  # type: ignore[union-attr]
    with pytest.raises(VerificationError, match=f"round {r}: aggregate") as err:
        fed.participants[0].participate(r + 1)
    assert err.value.round_id == r
    assert fed.ledger.update_hash(r + 1, fed.participants[0].address) is None
    with pytest.raises(VerificationError) as coordinator_err:  # the honest coordinator refuses to build on it too
        fed.coordinator.checkpoint(r + 1)
    assert coordinator_err.value.round_id == r
    report = audit(fed)
    assert not report.ok
    assert report.rounds[0].failures[0].round_id == r
    assert report.rounds[0].failures[0].what == "aggregate (recomputed)"


def test_an_aggregate_omitting_a_valid_update_fails_verification(
    chain: Chain, store: LocalBlockStore, demo: DemoData
) -> None:
    fed = make(chain, store, demo, small_manifest(min_updates=2))
    r = honest_round(fed)
    history = fed.ledger.round_history(r)
    fed.coordinator.close(r)
    fed.ledger.finalize_round(
        fed.coordinator.signer,
        r,
        sha256(b"whatever"),
        history.opened.base_cid,
        [u.participant for u in history.updates[:2]],
    )
    [verdict] = audit(fed).rounds
    assert not verdict.ok
    [failure] = verdict.failures
    assert failure.participant == history.updates[2].participant
    assert failure.what == "inclusion (valid update omitted)"


def test_a_participant_missing_the_deadline_is_excluded_and_the_round_finalizes(
    chain: Chain, store: LocalBlockStore, demo: DemoData
) -> None:
    fed = make(chain, store, demo, small_manifest(round_seconds=60, min_updates=3))
    r = fed.coordinator.open_round()
    for p in fed.participants[:2]:
        p.participate(r)
    assert not fed.coordinator.ready_to_close(r)
    chain.advance_time(120)
    with pytest.raises(DeadlinePassedError, match="FederatedLedgerDeadlinePassed"):
        fed.participants[2].participate(r)
    assert fed.coordinator.ready_to_close(r)
    report = finish(fed, r)
    assert len(report.verdict.included) == 2 and report.verdict.finalized
    [verdict] = audit(fed).rounds
    assert verdict.ok and verdict.missing == (fed.participants[2].address,)


def _bad_blobs(fed: Federation, r: int, signer: Signer) -> dict[str, bytes]:
    shapes = fed.rules.schema.shapes
    good = zeros(fed.rules)
    marked = dict(good, **{"fc.bias": np.full(shapes["fc.bias"], 3.0, dtype=np.float32)})
    wrong_shape = dict(good, **{"fc.bias": np.zeros(shapes["fc.bias"][0] + 1, dtype=np.float32)})
    missing = {k: v for k, v in good.items() if k != "fc.bias"}
    valid = crafted(fed, signer, r, good)
    buf = io.BytesIO()
    pickle.dump({"fc.bias": [0.0]}, buf)
    inf = crafted(fed, signer, r, marked).replace(struct.pack("<f", 3.0), struct.pack("<f", float("inf")), 1)
    return {
        # The encoder refuses NaN, so an attacker patches the bytes of a valid blob.
        "nan": crafted(fed, signer, r, marked).replace(struct.pack("<f", 3.0), struct.pack("<f", float("nan")), 1),
        "inf": inf,
        "shape": crafted(fed, signer, r, wrong_shape),
        "missing-tensor": crafted(fed, signer, r, missing),
        "dtype": valid.replace(b'"F32"', b'"F64"', 1),
        "truncated": valid[:-7],
        "not-safetensors": buf.getvalue(),
        "round": crafted(fed, signer, r, good, round_id=r + 7),
        "header": struct.pack("<Q", 1 << 40) + b"{}",
        "oversized": valid + bytes(fed.rules.max_blob_size),
    }


def test_malformed_updates_are_excluded_with_a_reason_and_the_round_completes(
    chain: Chain, store: LocalBlockStore, demo: DemoData
) -> None:
    fed = make(chain, store, demo, small_manifest(max_blob_size=200_000))
    r = fed.coordinator.open_round()
    kinds = list(_bad_blobs(fed, r, fed.participants[0].signer))
    attackers = {kind: fed.attacker(kind) for kind in kinds}
    for kind, signer in attackers.items():
        submit(fed, signer, r, _bad_blobs(fed, r, signer)[kind])
    for p in fed.participants:
        p.participate(r)
    report = finish(fed, r)
    assert report.verdict.finalized
    assert sorted(report.verdict.included) == sorted(p.address for p in fed.participants)
    reasons = {e.participant: e.reason for e in report.verdict.excluded}
    assert set(reasons) == {signer.address for signer in attackers.values()}
    assert all(reasons.values()) and all(e.detail for e in report.verdict.excluded)
    assert reasons[attackers["round"].address] == "round"
    assert reasons[attackers["nan"].address] == reasons[attackers["inf"].address] == "non-finite"
    report_after = audit(fed)
    assert report_after.ok
    assert {e.participant: e.reason for e in report_after.rounds[0].excluded} == reasons


def test_a_restarted_participant_does_not_submit_twice(chain: Chain, store: LocalBlockStore, demo: DemoData) -> None:
    fed = make(chain, store, demo)
    r = fed.coordinator.open_round()
    p = fed.participants[0]
    assert p.participate(r) is not None
    again = Participant(fed.ledger, p.signer, store, fed.rules, fed.task, p.data, p.name)
    assert again.participate(r) is None
    assert len(fed.ledger.round_history(r).updates) == 1


def test_the_embedded_chain_runs_the_same_federation_to_the_same_digests(tmp_path: Path, demo: DemoData) -> None:
    """Demo keys derive from the seed: two runs give the same aggregates, bit for bit."""
    from fedchain.orchestrator.federation import demo_signer

    digests = []
    for i in range(2):
        fed = make(EmbeddedChain(), LocalBlockStore(tmp_path / f"s{i}"), demo, key=lambda name: demo_signer(0, name))
        digests.append([s.aggregate_hash for s in fed.run(2)])
    assert digests[0] == digests[1] and None not in digests[0]
