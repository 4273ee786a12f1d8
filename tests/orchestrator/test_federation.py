"""The federation end to end on real chains and the real store, with attacks and faults.

A small slice of the real ICD-10-CM data and a small model keep each round well under a
second; the protocol exercised is exactly the demo's.
"""

from __future__ import annotations

import io
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from support.federation import SETTINGS, SPEC, Federation

from fedchain.audit import audit_ledger
from fedchain.chain import Chain, Signer
from fedchain.errors import ContractRevertError, VerificationError
from fedchain.fl import FedAvg, FederatedSplit, param_shapes
from fedchain.hashing import sha256
from fedchain.orchestrator._blobs import update_blob
from fedchain.orchestrator.actors import FederationSettings, Participant
from fedchain.orchestrator.federation import run_demo, run_federation
from fedchain.storage import LocalBlockStore


def _block_file(store_dir: Path, cid: str) -> Path:
    """The block file holding a single-block blob (small blobs are one block)."""
    blob = LocalBlockStore(store_dir).get(cid)
    for path in (store_dir / "blocks").rglob("*.data"):
        data = path.read_bytes()
        if blob[:256] in data and blob[-256:] in data:
            return path
    raise AssertionError(f"no block file for {cid}")


def test_three_rounds_audit_clean(chain: Chain, store: LocalBlockStore, split: FederatedSplit) -> None:
    ledger, rounds, _ = run_federation(chain, store, split, SETTINGS, FedAvg(), rounds=3)
    assert [r.included for r in rounds] == [3, 3, 3]
    assert rounds[-1].accuracy > rounds[0].accuracy * 0.9
    report = audit_ledger(ledger, store, FedAvg(), spec=SPEC, max_blob_size=SETTINGS.max_blob_size)
    assert report.ok and len(report.rounds) == 3


def test_a_demo_workdir_audits_clean_from_a_fresh_process(tmp_path: Path, split: FederatedSplit) -> None:
    result = run_demo(tmp_path / "demo", split, SETTINGS, rounds=2)
    assert result.audit.ok
    proc = subprocess.run(
        [sys.executable, "-m", "fedchain", "audit", "--workdir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "round 1: 3 included, 0 excluded" in proc.stdout
    from fedchain.cli import main

    assert main(["audit", "--workdir", str(tmp_path / "demo"), "--check-cids"]) == 0  # every block under its CID too


def test_a_flipped_byte_in_a_stored_update_fails_the_audit(tmp_path: Path, split: FederatedSplit) -> None:
    from fedchain.cli import main
    from fedchain.orchestrator.federation import open_workdir

    run_demo(tmp_path / "demo", split, SETTINGS, rounds=2)
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


def test_audit_failure_names_round_and_participant(
    tmp_path: Path, split: FederatedSplit, capsys: pytest.CaptureFixture[str]
) -> None:
    from fedchain.cli import main
    from fedchain.orchestrator.federation import open_workdir

    run_demo(tmp_path / "demo", split, SETTINGS, rounds=1)
    chain, ledger, _, _ = open_workdir(tmp_path / "demo")
    victim = ledger.round_history(0).updates[0]
    chain.close()
    block = _block_file(tmp_path / "demo" / "store", victim.cid)
    block.write_bytes(block.read_bytes()[:-1] + bytes([block.read_bytes()[-1] ^ 0xFF]))
    assert main(["audit", "--workdir", str(tmp_path / "demo")]) == 1
    out = capsys.readouterr().out
    assert "round 0" in out and victim.participant in out and "FAILED" in out


def test_a_copied_update_is_excluded_and_the_original_kept(
    chain: Chain, store: LocalBlockStore, split: FederatedSplit
) -> None:
    fed = Federation(chain, store, split, FederationSettings(spec=SPEC, train=SETTINGS.train, min_updates=3))
    free_rider = fed.attacker("free-rider")
    r = fed.coordinator.open_round()
    for p in fed.participants:
        p.participate(r)
    original = fed.ledger.round_history(r).updates[0]
    fed.ledger.submit_update(free_rider, r, original.update_hash, original.cid, original.num_samples)
    report = fed.coordinator.finalize(r)
    assert free_rider.address not in report.verdict.included and original.participant in report.verdict.included
    [exclusion] = report.verdict.excluded
    assert exclusion.participant == free_rider.address and exclusion.reason == "copied"
    assert fed.audit().ok


def test_a_wrong_aggregate_is_refused_by_participants_and_the_audit(
    chain: Chain, store: LocalBlockStore, split: FederatedSplit
) -> None:
    fed = Federation(chain, store, split)
    r = fed.coordinator.open_round()
    for p in fed.participants:
        p.participate(r)
    # A byzantine coordinator records some other model as the aggregate.
    bogus = fed.store.get(fed.ledger.genesis_cid())
    bogus_cid = fed.store.put(bogus + b"")
    included = [u.participant for u in fed.ledger.round_history(r).updates]
    fed.ledger.finalize_round(fed.coordinator.signer, r, sha256(bogus), bogus_cid, included)
    fed.ledger.open_round(fed.coordinator.signer, r + 1, sha256(bogus), bogus_cid, chain.now() + 600, 3)
    with pytest.raises(VerificationError, match=f"round {r}: aggregate"):
        fed.participants[0].participate(r + 1)
    assert fed.ledger.update_hash(r + 1, fed.participants[0].address) is None
    report = fed.audit()
    assert not report.ok
    assert report.rounds[0].failures[0].round_id == r


def test_an_aggregate_omitting_a_valid_update_fails_verification(
    chain: Chain, store: LocalBlockStore, split: FederatedSplit
) -> None:
    fed = Federation(chain, store, split, FederationSettings(spec=SPEC, train=SETTINGS.train, min_updates=2))
    r = fed.coordinator.open_round()
    for p in fed.participants:
        p.participate(r)
    history = fed.ledger.round_history(r)
    fed.ledger.finalize_round(
        fed.coordinator.signer,
        r,
        sha256(b"whatever"),
        history.opened.base_cid,
        [u.participant for u in history.updates[:2]],
    )
    verdict = fed.coordinator.verify(r)
    assert not verdict.ok
    assert any(f.participant == history.updates[2].participant and "omitted" in str(f) for f in verdict.failures)


def test_a_participant_missing_the_deadline_is_excluded_and_the_round_finalizes(
    chain: Chain, store: LocalBlockStore, split: FederatedSplit
) -> None:
    fed = Federation(
        chain, store, split, FederationSettings(spec=SPEC, train=SETTINGS.train, round_seconds=60, min_updates=3)
    )
    r = fed.coordinator.open_round()
    for p in fed.participants[:2]:
        p.participate(r)
    assert not fed.coordinator.ready_to_finalize(r)
    chain.advance_time(120)
    with pytest.raises(ContractRevertError, match="FederatedLedgerDeadlinePassed"):
        fed.participants[2].participate(r)
    assert fed.coordinator.ready_to_finalize(r)
    report = fed.coordinator.finalize(r)
    assert len(report.verdict.included) == 2
    [verdict] = fed.audit().rounds
    assert verdict.ok and verdict.missing == (fed.participants[2].address,)


def _bad_blobs(fed: Federation, r: int, base: bytes, signer: Signer) -> dict[str, bytes]:
    shapes = param_shapes(SPEC)
    good = {n: torch.zeros(s) for n, s in shapes.items()}

    def update(delta: dict[str, torch.Tensor], round_id: int = r) -> bytes:
        return update_blob(delta, round_id=round_id, base_hash=base, sender=signer.address, num_samples=10)

    marked = dict(good, **{"fc.bias": torch.full(shapes["fc.bias"], 3.0)})
    wrong_shape = dict(good, **{"fc.bias": torch.zeros(shapes["fc.bias"][0] + 1)})
    valid = update(good)
    f64_header = valid.replace(b'"F32"', b'"F64"', 1)
    buf = io.BytesIO()
    pickle.dump({"fc.bias": [0.0]}, buf)
    return {
        # The encoder refuses NaN, so an attacker patches the bytes of a valid blob.
        "non-finite": update(marked).replace(struct.pack("<f", 3.0), struct.pack("<f", float("nan")), 1),
        "shape": update(wrong_shape),
        "dtype": f64_header,
        "truncated": valid[:-7],
        "not-safetensors": buf.getvalue(),
        "round": update(good, round_id=r + 7),
        "header": struct.pack("<Q", 1 << 40) + b"{}",
    }


def test_malformed_updates_are_excluded_with_a_reason_and_the_round_completes(
    chain: Chain, store: LocalBlockStore, split: FederatedSplit
) -> None:
    fed = Federation(chain, store, split, FederationSettings(spec=SPEC, train=SETTINGS.train, min_updates=3))
    attackers = {}
    r = fed.coordinator.open_round()
    base = fed.ledger.expected_base(r)
    kinds = list(_bad_blobs(fed, r, base, fed.participants[0].signer))
    for kind in kinds:
        attackers[kind] = fed.attacker(kind)
    for kind, signer in attackers.items():
        blob = _bad_blobs(fed, r, base, signer)[kind]
        fed.ledger.submit_update(signer, r, sha256(blob), fed.store.put(blob), 10)
    for p in fed.participants:
        p.participate(r)
    report = fed.coordinator.finalize(r)
    assert sorted(report.verdict.included, key=lambda a: int(a, 16)) == sorted(
        (p.address for p in fed.participants), key=lambda a: int(a, 16)
    )
    reasons = {e.participant: e.reason for e in report.verdict.excluded}
    assert set(reasons) == {signer.address for signer in attackers.values()}
    assert all(reasons.values()) and all(e.detail for e in report.verdict.excluded)
    assert fed.audit().ok


def test_a_restarted_participant_does_not_submit_twice(
    chain: Chain, store: LocalBlockStore, split: FederatedSplit
) -> None:
    fed = Federation(chain, store, split)
    r = fed.coordinator.open_round()
    p = fed.participants[0]
    assert p.participate(r) is not None
    again = Participant(fed.ledger, p.signer, store, fed.strategy, fed.settings, p.shard, p.name)
    assert again.participate(r) is None
