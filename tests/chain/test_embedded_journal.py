"""The embedded chain persists as a journal and replays to the same ledger state."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedchain.chain import EmbeddedChain, Ledger, Signer
from fedchain.errors import ChainError
from fedchain.hashing import sha256
from fedchain.types import Cid


def build(journal: Path) -> tuple[str, list[Signer]]:
    chain = EmbeddedChain(journal)
    coordinator, hospital = Signer.create("coordinator"), Signer.create("hospital")
    chain.fund(coordinator.address)
    chain.fund(hospital.address)
    ledger, _ = Ledger.deploy(chain, coordinator, sha256(b"g"), Cid("QmG"), sha256(b"manifest"), Cid("QmManifest"))
    ledger.register_participant(coordinator, hospital.address, 10)
    ledger.open_round(coordinator, 0, sha256(b"g"), Cid("QmG"), chain.now() + 30, 1)
    ledger.submit_update(hospital, 0, sha256(b"u"), Cid("QmU"), 3)
    chain.advance_time(60)
    ledger.close_round(coordinator, 0)
    ledger.finalize_round(coordinator, 0, sha256(b"a"), Cid("QmA"), [hospital.address])
    chain.close()
    return ledger.address, [coordinator, hospital]


def test_a_replayed_journal_gives_the_same_ledger_state(tmp_path: Path) -> None:
    journal = tmp_path / "chain.jsonl"
    address, (_, hospital) = build(journal)
    replayed = EmbeddedChain(journal, read_only=True)
    ledger = Ledger(replayed, address)
    history = ledger.round_history(0)
    assert history.aggregate is not None and history.aggregate.aggregate_hash == sha256(b"a")
    assert [(u.participant, u.num_samples, u.update_hash) for u in history.updates] == [
        (hospital.address, 3, sha256(b"u"))
    ]
    assert ledger.round_state(0).deadline < replayed.w3.eth.get_block(history.state.end_block)["timestamp"]


def test_a_reopened_journal_accepts_new_transactions(tmp_path: Path) -> None:
    journal = tmp_path / "chain.jsonl"
    address, (coordinator, _) = build(journal)
    chain = EmbeddedChain(journal)
    ledger = Ledger(chain, address)
    ledger.register_participant(coordinator, Signer.create().address, 1)
    chain.close()
    assert len(Ledger(EmbeddedChain(journal, read_only=True), address).participants()) == 2


def test_a_read_only_chain_refuses_to_send(tmp_path: Path) -> None:
    journal = tmp_path / "chain.jsonl"
    build(journal)
    chain = EmbeddedChain(journal, read_only=True)
    with pytest.raises(ChainError, match="read-only"):
        chain.fund(Signer.create().address)


def test_a_tampered_journal_does_not_replay(tmp_path: Path) -> None:
    journal = tmp_path / "chain.jsonl"
    build(journal)
    lines = journal.read_text().splitlines()
    entry = json.loads(lines[-1])
    raw = entry["raw"]
    entry["raw"] = raw[:-6] + ("00" if raw[-6:-4] != "00" else "11") + raw[-4:]
    lines[-1] = json.dumps(entry)
    journal.write_text("\n".join(lines) + "\n")
    with pytest.raises(ChainError, match="line"):
        EmbeddedChain(journal, read_only=True)


def test_a_torn_last_line_is_ignored(tmp_path: Path) -> None:
    journal = tmp_path / "chain.jsonl"
    address, _ = build(journal)
    with open(journal, "a") as f:
        f.write('{"kind": "tx", "raw": "0x02f8')
    ledger = Ledger(EmbeddedChain(journal, read_only=True), address)
    assert ledger.next_round() == 1


def test_a_missing_journal_cannot_be_opened_read_only(tmp_path: Path) -> None:
    with pytest.raises(ChainError, match="no chain journal"):
        EmbeddedChain(tmp_path / "absent.jsonl", read_only=True)
