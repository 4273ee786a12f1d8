"""The audit replays a history through the fast paths and reaches the verdicts a round-by-round replay reaches."""

from __future__ import annotations

from pathlib import Path

from support.federation import audit, make

from fedchain.audit import AuditReport
from fedchain.chain import Chain
from fedchain.orchestrator.federation import Federation
from fedchain.protocol import load_model, verify_round
from fedchain.records import RoundStatus
from fedchain.storage import LocalBlockStore
from fedchain.storage._cid import block_key, parse_cid
from fedchain.storage._unixfs import iter_dag
from fedchain.tasks.api import DemoData

Summary = list[tuple[int, bool, tuple[str, ...], list[str]]]


def _replayed_round_by_round(fed: Federation) -> Summary:
    """What a plain verifier does: each round's history read alone, each base fetched again."""
    info = fed.ledger.info()
    load_model(fed.store, fed.rules, fed.ledger.genesis_cid(), info.genesis_hash, round_id=0, what="genesis model")
    registered = fed.ledger.participant_addresses()
    out: Summary = []
    expected = info.genesis_hash
    for r in range(fed.ledger.next_round()):
        history = fed.ledger.round_history(r)
        v, _ = verify_round(history, fed.store, fed.rules, expected_base=expected, registered=registered)
        out.append((v.round_id, v.ok, v.included, [str(f) for f in v.failures]))
        if history.state.status is not RoundStatus.FINALIZED or history.aggregate is None:
            break
        expected = history.aggregate.aggregate_hash
    return out


def _summary(report: AuditReport) -> Summary:
    return [(v.round_id, v.ok, v.included, [str(f) for f in v.failures]) for v in report.rounds]


def _damage_first_block(store: LocalBlockStore, cid: str) -> str:
    ref = next(ref for ref, _ in iter_dag(store._read_block, parse_cid(cid)))
    key = block_key(ref)
    path = Path(store.location, "blocks", key[-3:-1], key + ".data")
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x04
    path.write_bytes(bytes(raw))
    return str(ref)


def test_an_honest_history_audits_as_a_round_by_round_replay_does(
    chain: Chain, store: LocalBlockStore, demo: DemoData
) -> None:
    fed = make(chain, store, demo)
    fed.run(3)
    report = audit(fed)
    assert report.ok and len(report.rounds) == 3
    assert _summary(report) == _replayed_round_by_round(fed)


def test_a_damaged_aggregate_fails_its_round_and_the_next_round_that_builds_on_it(
    chain: Chain, store: LocalBlockStore, demo: DemoData
) -> None:
    fed = make(chain, store, demo)
    fed.run(3)
    damaged = fed.ledger.round_history(1).aggregate
    assert damaged is not None
    block = _damage_first_block(store, damaged.cid)
    report = audit(fed)
    assert [v.ok for v in report.rounds] == [True, False, False]
    [f1], [f2] = report.rounds[1].failures, report.rounds[2].failures
    assert (f1.round_id, f1.what) == (1, "store damage (aggregate)") and block in str(f1.actual)
    assert (f2.round_id, f2.what) == (2, "store damage (base model)") and block in str(f2.actual)
    assert _summary(report) == _replayed_round_by_round(fed)


def test_a_damaged_update_is_named_with_its_participant(chain: Chain, store: LocalBlockStore, demo: DemoData) -> None:
    fed = make(chain, store, demo)
    fed.run(2)
    update = fed.ledger.round_history(0).updates[1]
    block = _damage_first_block(store, update.cid)
    report = audit(fed)
    assert not report.ok
    [failure] = report.rounds[0].failures
    assert (failure.participant, failure.what) == (update.participant, "store damage")
    assert block in str(failure.actual)
    assert report.rounds[1].ok  # the aggregate of round 0 is intact, so round 1 builds on a verified base
    assert _summary(report) == _replayed_round_by_round(fed)


def test_checking_cids_finds_a_block_stored_under_a_name_that_is_not_its_own(
    chain: Chain, store: LocalBlockStore, demo: DemoData
) -> None:
    # the same bytes of an update, re-encoded as another block (UnixFS Raw instead of File)
    # and stored under the recorded CID's name: the digest still vouches for the bytes;
    # only checking the CIDs shows the store does not hold what the CID names
    fed = make(chain, store, demo)
    fed.run(1)
    update = fed.ledger.round_history(0).updates[0]
    [ref] = [ref for ref, _ in iter_dag(store._read_block, parse_cid(update.cid))]  # a one-block blob
    key = block_key(ref)
    path = Path(store.location, "blocks", key[-3:-1], key + ".data")
    block = path.read_bytes()
    at = block.index(b"\x08\x02")
    assert at <= 4
    path.write_bytes(block[:at] + b"\x08\x00" + block[at + 2 :])
    assert audit(fed).ok
    checked = audit(fed, check_cids=True)
    [failure] = checked.rounds[0].failures
    assert failure.participant == update.participant and failure.what == "store damage"
    assert str(ref) in str(failure.actual) and "do not hash" in str(failure.actual)
