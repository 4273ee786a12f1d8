"""Adversarial participants and a byzantine coordinator: each attack detected, excluded or refused.

Attackers here are registered accounts that submit crafted records from their own keys on a
real chain; the honest hospitals and the coordinator run the normal code.
"""

from __future__ import annotations

import json
import struct

import pytest
from support.federation import audit, crafted, finish, full, honest_round, make, small_manifest, submit

from fedchain.chain import Chain, Ledger
from fedchain.errors import SampleCountAboveCapError, UnknownContractError
from fedchain.hashing import sha256
from fedchain.orchestrator.federation import Federation
from fedchain.storage import LocalBlockStore
from fedchain.tasks.api import DemoData


def _exclusion(fed: Federation, r: int, who: str) -> str:
    report = finish(fed, r)
    reasons = {e.participant: e.reason for e in report.verdict.excluded}
    assert who in reasons, report.verdict
    assert who not in report.verdict.included and report.verdict.finalized
    after = audit(fed)
    assert after.ok
    assert {e.participant: e.reason for e in after.rounds[r].excluded} == reasons  # every verifier agrees
    return reasons[who]


def test_an_update_replayed_from_an_earlier_round_is_excluded(
    chain: Chain, store: LocalBlockStore, demo: DemoData
) -> None:
    fed = make(chain, store, demo, small_manifest(min_updates=2))
    r0 = honest_round(fed)
    old = fed.ledger.round_history(r0).updates[0]
    finish(fed, r0)
    replayer = next(p for p in fed.participants if p.address == old.participant)
    r1 = fed.coordinator.open_round()
    for p in fed.participants:
        if p is not replayer:
            p.participate(r1)
    fed.ledger.submit_update(replayer.signer, r1, old.update_hash, old.cid, old.num_samples)
    assert _exclusion(fed, r1, replayer.address) == "round"


def test_an_update_from_another_ledger_is_excluded(chain: Chain, store: LocalBlockStore, demo: DemoData) -> None:
    fed = make(chain, store, demo)
    mallory = fed.attacker()
    r = honest_round(fed)
    submit(fed, mallory, r, crafted(fed, mallory, r, base_hash=sha256(b"some other federation's genesis")))
    assert _exclusion(fed, r, mallory.address) == "base"


def test_a_header_that_lies_about_sender_or_samples_is_excluded(
    chain: Chain, store: LocalBlockStore, demo: DemoData
) -> None:
    fed = make(chain, store, demo)
    liar, counter = fed.attacker("liar"), fed.attacker("counter")
    r = honest_round(fed)
    submit(fed, liar, r, crafted(fed, liar, r, sender=fed.participants[0].address))
    submit(fed, counter, r, crafted(fed, counter, r, num_samples=9_999), n=10)
    report = finish(fed, r)
    assert {e.participant: e.reason for e in report.verdict.excluded} == {
        liar.address: "sender",
        counter.address: "samples",
    }
    assert audit(fed).ok


def test_a_sample_count_above_the_registered_cap_is_rejected_on_chain(
    chain: Chain, store: LocalBlockStore, demo: DemoData
) -> None:
    fed = make(chain, store, demo)
    r = fed.coordinator.open_round()
    p = fed.participants[0]
    cap = fed.ledger.participant(p.address).max_samples
    blob = crafted(fed, p.signer, r, num_samples=cap + 1)
    with pytest.raises(SampleCountAboveCapError):
        fed.ledger.submit_update(p.signer, r, sha256(blob), fed.store.put(blob), cap + 1)
    assert fed.ledger.update_hash(r, p.address) is None


def test_an_update_above_the_norm_bound_is_excluded(chain: Chain, store: LocalBlockStore, demo: DemoData) -> None:
    fed = make(chain, store, demo, small_manifest(max_update_norm=50.0))
    mallory = fed.attacker()
    r = honest_round(fed)
    submit(fed, mallory, r, crafted(fed, mallory, r, full(fed.rules, 10.0)))
    assert _exclusion(fed, r, mallory.address) == "norm"


def _with_metadata(blob: bytes, extra: object) -> bytes:
    """Re-write a blob's header with ``extra`` added to its metadata (keeping the layout valid)."""
    (n,) = struct.unpack_from("<Q", blob)
    header = json.loads(blob[8 : 8 + n])
    header["__metadata__"]["junk"] = extra
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + blob[8 + n :]


@pytest.mark.parametrize(
    "junk",
    [
        pytest.param({"a": {"b": {"c": {"d": [[[[1]]]]}}}}, id="deeply-nested"),
        pytest.param("x" * 200_000, id="enormous"),
    ],
)
def test_hostile_metadata_is_excluded_without_exhausting_memory(
    chain: Chain, store: LocalBlockStore, demo: DemoData, junk: object
) -> None:
    fed = make(chain, store, demo)
    mallory = fed.attacker()
    r = honest_round(fed)
    submit(fed, mallory, r, _with_metadata(crafted(fed, mallory, r), junk))
    assert _exclusion(fed, r, mallory.address)


def test_a_record_whose_cid_does_not_hold_its_digest_is_excluded(
    chain: Chain, store: LocalBlockStore, demo: DemoData
) -> None:
    fed = make(chain, store, demo)
    mallory = fed.attacker()
    r = honest_round(fed)
    claimed = crafted(fed, mallory, r)
    other = crafted(fed, mallory, r, full(fed.rules, 1e-3))
    fed.ledger.submit_update(mallory, r, sha256(claimed), fed.store.put(other), 10)
    assert _exclusion(fed, r, mallory.address) == "hash"


def test_an_aggregate_including_an_excluded_update_fails_verification(
    chain: Chain, store: LocalBlockStore, demo: DemoData
) -> None:
    fed = make(chain, store, demo)
    mallory = fed.attacker()
    r = honest_round(fed)
    submit(fed, mallory, r, b"\x80\x04not a model at all")
    history = fed.ledger.round_history(r)
    everyone = [u.participant for u in history.updates]
    fed.coordinator.close(r)
    fed.ledger.finalize_round(fed.coordinator.signer, r, sha256(b"agg"), history.opened.base_cid, everyone)
    [audited] = audit(fed).rounds
    assert not audited.ok
    assert [(f.participant, f.what) for f in audited.failures] == [
        (mallory.address, "inclusion (invalid update included)")
    ]
    assert len(audited.included) == 4  # what the chain recorded


def test_a_ledger_address_that_is_not_a_contract_is_refused(
    chain: Chain, store: LocalBlockStore, demo: DemoData
) -> None:
    fed = make(chain, store, demo)
    with pytest.raises(UnknownContractError, match="no code at the address"):
        Ledger(fed.chain, fed.participants[0].address)


def test_a_coordinator_that_finalizes_before_closing_is_refused_by_the_contract(
    chain: Chain, store: LocalBlockStore, demo: DemoData
) -> None:
    from fedchain.errors import RoundNotClosedError

    fed = make(chain, store, demo)
    r = honest_round(fed)
    history = fed.ledger.round_history(r)
    with pytest.raises(RoundNotClosedError):
        fed.ledger.finalize_round(
            fed.coordinator.signer, r, sha256(b"agg"), history.opened.base_cid, [u.participant for u in history.updates]
        )


def test_a_participant_cannot_finalize_or_close_a_round(chain: Chain, store: LocalBlockStore, demo: DemoData) -> None:
    from fedchain.errors import NotCoordinatorError

    fed = make(chain, store, demo)
    r = honest_round(fed)
    mallory = fed.participants[0].signer
    with pytest.raises(NotCoordinatorError):
        fed.ledger.close_round(mallory, r)
    fed.coordinator.close(r)
    with pytest.raises(NotCoordinatorError):
        fed.ledger.finalize_round(mallory, r, sha256(b"agg"), fed.ledger.genesis_cid(), [mallory.address])
    report = fed.coordinator.finish(r)
    assert report.verdict.finalized and audit(fed).ok
