"""Masked rounds end to end on the embedded chain: the small ICD federation, dropouts, silent revealers, the audit."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedchain.chain import EmbeddedChain
from fedchain.errors import BlobNotFoundError, VerificationError
from fedchain.fl import masking
from fedchain.fl.masking import MaskingKey
from fedchain.orchestrator._step import Step
from fedchain.orchestrator.federation import Federation
from fedchain.orchestrator.masked import MaskedMember, MaskedRounds
from fedchain.protocol.masked import MASKED_RULE, self_seed
from fedchain.storage import LocalBlockStore
from fedchain.types import Cid, Digest
from tests.support.federation import audit, make, small_demo, small_manifest

PRIVACY = {
    "mode": "masked",
    "frac_bits": 32,
    "clip": 100.0,
    "min_survivors": 2,
    "max_samples": 100_000,
    "max_participants": 16,
    "phase_seconds": 60,
}


def masked_federation(tmp_path: Path, **privacy: object) -> Federation:
    chain = EmbeddedChain()
    store = LocalBlockStore(tmp_path / "store")
    manifest = small_manifest(min_updates=2, privacy={**PRIVACY, **privacy}, round_seconds=600)
    return make(chain, store, small_demo(), manifest)


def test_a_masked_round_of_three_finalizes_and_the_audit_recomputes_it(tmp_path: Path) -> None:
    fed = masked_federation(tmp_path)
    summaries = fed.run(2)
    assert [s.status for s in summaries] == ["finalized", "finalized"]
    assert [s.included for s in summaries] == [3, 3]
    report = audit(fed)
    assert report.ok, report.all_failures
    rounds = report.to_json()["rounds"]
    assert [r["private"] for r in rounds] == [True, True]
    assert all(v.rule == MASKED_RULE for v in report.rounds)


def test_one_of_three_dropping_before_the_close_is_unmasked_from_pair_reveals(tmp_path: Path) -> None:
    fed = masked_federation(tmp_path)
    for p in fed.participants:  # keys published by every member: all three are in the roster
        assert p.masking is not None
        p.masking.ensure_key(p)
    summaries = fed.run(1, active=fed.participants[:2])
    assert [(s.status, s.included) for s in summaries] == [("finalized", 2)]
    dropped = fed.participants[2].address
    survivors = {p.address for p in fed.participants[:2]}
    reveals = fed.ledger.reveals(0)
    assert {r.participant for r in reveals} == survivors
    # each survivor: one reveal of its pair seed with the dropped member, one of its shares of both survivors' seeds
    assert sorted((r.participant, set(r.pair_seeds), set(r.shares)) for r in reveals) == sorted(
        [(a, {dropped}, set()) for a in survivors] + [(a, set(), survivors) for a in survivors]
    )
    report = audit(fed)
    assert report.ok, report.all_failures
    assert report.rounds[0].missing == (dropped,)


def test_a_participant_silent_at_the_pair_phase_is_dropped_below_the_minimum_and_no_share_is_ever_revealed(
    tmp_path: Path,
) -> None:
    fed = masked_federation(tmp_path)
    for p in fed.participants:
        assert p.masking is not None
        p.masking.ensure_key(p)
    honest, silent, absent = fed.participants
    assert silent.masking is not None
    silent.masking.withhold = frozenset({"pairs"})
    summaries = fed.run(1, active=[honest, silent])
    assert [s.status for s in summaries] == ["abandoned"]
    # the honest survivor revealed its pair seed with the absent member; then the silent one left S,
    # one survivor is below the minimum, and nothing more was revealed: no share of anybody's seed
    reveals = fed.ledger.reveals(0)
    assert [(r.participant, set(r.pair_seeds), dict(r.shares)) for r in reveals] == [
        (honest.address, {absent.address}, {})
    ]
    report = audit(fed)
    assert report.ok, report.all_failures
    [excluded] = report.rounds[0].excluded
    assert (excluded.participant, excluded.reason) == (silent.address, "dropped")


def test_a_participant_silent_at_the_share_phase_is_reconstructed_and_included(tmp_path: Path) -> None:
    fed = masked_federation(tmp_path)
    silent = fed.participants[1]
    assert silent.masking is not None
    silent.masking.withhold = frozenset({"shares"})
    summaries = fed.run(1)
    assert [(s.status, s.included) for s in summaries] == [("finalized", 3)]
    assert not any(r.participant == silent.address for r in fed.ledger.reveals(0))
    agg = fed.ledger.round_history(0).aggregate
    assert agg is not None and silent.address in agg.included
    # its self seed, reconstructed from the two others' shares, is the one it masked with
    assert fed.coordinator.masking is not None
    _, state = fed.coordinator.masking.state(0)
    assert state.self_seeds[silent.address] == self_seed(
        silent.masking.key,
        chain_id=fed.ledger.chain.chain_id,
        ledger=bytes.fromhex(fed.ledger.address[2:]),
        round_id=0,
        me=silent.address,
    )
    report = audit(fed)  # which recomputes the aggregate from the chain and the store, bit for bit
    assert report.ok, report.all_failures
    assert report.rounds[0].excluded == () and report.rounds[0].aggregate_hash == agg.aggregate_hash


def test_with_fewer_than_the_threshold_of_shares_the_round_is_abandoned_and_no_pair_seed_is_revealed(
    tmp_path: Path,
) -> None:
    fed = masked_federation(tmp_path, min_survivors=3)  # share_threshold defaults to min_survivors: 3 of 3
    silent = fed.participants[0]
    assert silent.masking is not None
    silent.masking.withhold = frozenset({"shares"})
    summaries = fed.run(1)
    assert [s.status for s in summaries] == ["abandoned"]
    reveals = fed.ledger.reveals(0)
    assert {r.participant for r in reveals} == {p.address for p in fed.participants[1:]}
    assert all(r.pair_seeds == {} for r in reveals)
    report = audit(fed)
    assert report.ok, report.all_failures


def test_the_masked_words_in_the_store_are_not_the_update(tmp_path: Path) -> None:
    fed = masked_federation(tmp_path)
    fed.run(1)
    history = fed.ledger.round_history(0)
    blob = fed.store.get(history.updates[0].cid)
    words = masking.decode_masked(blob, num_elements=fed.rules.schema.size).words
    # uniform words: about half of the top bits set (a real update quantized has small magnitudes, top bits all 0 or 1)
    top = (words >> 63).astype(float).mean()
    assert 0.45 < top < 0.55


class WrongBase(MaskedMember):
    """Submits a masked blob whose header names another base: a tampered blob, digest and all."""

    def submit(self, p, round_id, cp, delta, num_samples, metrics):  # type: ignore[no-untyped-def,override]
        from dataclasses import replace

        return super().submit(p, round_id, replace(cp, digest=Digest(bytes(32))), delta, num_samples, metrics)


class WrongShare(MaskedMember):
    """Reveals 32 zero bytes as its share of every seed."""

    def reveal_step(self, p, round_id):  # type: ignore[no-untyped-def,override]
        from fedchain.orchestrator.masked import round_state

        _, state = round_state(p.ledger, p.store, p.rules, round_id, {})
        if state.plan.phase == "shares" and p.address in state.plan.share_requests:
            if self._lied:
                return Step.IDLE  # never corrects it within the phase
            self._lied = True
            p.ledger.reveal_shares(p.signer, round_id, {o: bytes(32) for o in state.plan.share_requests[p.address]})
            return Step.WORKED
        return super().reveal_step(p, round_id)

    _lied = False


def test_a_tampered_masked_blob_is_excluded_naming_its_sender_and_the_audit_agrees(tmp_path: Path) -> None:
    fed = masked_federation(tmp_path)
    bad = fed.participants[2]
    bad.masking = WrongBase(MaskingKey.generate())
    summaries = fed.run(1)
    assert [(s.status, s.included) for s in summaries] == [("finalized", 2)]
    report = audit(fed)
    assert report.ok, report.all_failures
    [excluded] = report.rounds[0].excluded
    assert (report.rounds[0].round_id, excluded.participant, excluded.reason) == (0, bad.address, "base")


def test_a_wrong_share_is_named_and_ignored_its_revealer_included_and_the_audit_agrees(tmp_path: Path) -> None:
    fed = masked_federation(tmp_path)
    liar = fed.participants[0]
    liar.masking = WrongShare(MaskingKey.generate())
    summaries = fed.run(1)
    assert [(s.status, s.included) for s in summaries] == [("finalized", 3)]
    report = audit(fed)
    assert report.ok, report.all_failures
    verdict = report.rounds[0]
    assert verdict.excluded == () and liar.address in verdict.included
    [named] = [o for o in verdict.outcomes if o.reason is not None]
    assert (verdict.round_id, named.record.participant, named.reason) == (0, liar.address, "wrong-share")


class _LateBlobs(LocalBlockStore):
    """A store whose first reads of each new blob fail, as while an upload is still in flight or the store is down.

    A mock of a fault: in one process every upload is done before anybody reads, so this is the one
    way to show what an actor does when a recorded member's blob cannot be read yet. Only masked
    updates are late (the models read normally).
    """

    def __init__(self, root: Path, failures: int) -> None:
        super().__init__(root)
        self.failures = failures
        self.late: set[str] = set()
        self.refused: dict[str, int] = {}

    def put(self, data: bytes, *, version: int = 0) -> Cid:
        cid = super().put(data, version=version)
        if masking.MASKED_CODEC.encode() in bytes(data[:4096]):
            self.late.add(cid)
        return cid

    def get_verified(
        self, cid: str, sha256: bytes, *, max_size: int | None = None, check_cid: bool = False
    ) -> bytearray:
        if cid in self.late and self.refused.get(cid, 0) < self.failures:
            self.refused[cid] = self.refused.get(cid, 0) + 1
            raise BlobNotFoundError(cid)
        return super().get_verified(cid, sha256, max_size=max_size, check_cid=check_cid)


def test_a_blob_nobody_could_read_yet_right_after_the_close_drops_nobody_it_is_read_again(tmp_path: Path) -> None:
    store = _LateBlobs(tmp_path / "store", failures=2)
    manifest = small_manifest(min_updates=2, privacy=PRIVACY, round_seconds=600)
    fed = make(EmbeddedChain(), store, small_demo(), manifest)
    summaries = fed.run(1)
    assert [(s.status, s.included) for s in summaries] == [("finalized", 3)]
    assert store.refused and all(n == 2 for n in store.refused.values())
    # nobody acted on the unreadable view: no pair seed was revealed, only shares of the three seeds
    reveals = fed.ledger.reveals(0)
    assert all(not r.pair_seeds for r in reveals)
    report = audit(fed)
    assert report.ok, report.all_failures
    # the verdict lists the included in the ledger's order: ascending addresses as numbers, not as strings
    assert report.rounds[0].included == tuple(sorted((p.address for p in fed.participants), key=lambda a: int(a, 16)))


class LaundersTheTampered(MaskedRounds):
    """A coordinator that unmasks the survivors' sum honestly but records the excluded sender as included too."""

    extra = ""

    def aggregate(self, round_id, history):  # type: ignore[no-untyped-def,override]
        blob, included, total, why = super().aggregate(round_id, history)
        return blob, (*included, self.extra), total, why


def test_a_coordinator_that_records_a_tampered_sender_as_included_fails_every_check_naming_round_and_sender(
    tmp_path: Path,
) -> None:
    fed = masked_federation(tmp_path)
    bad = fed.participants[2]
    bad.masking = WrongBase(MaskingKey.generate())
    liar = LaundersTheTampered(fed.ledger, fed.store, fed.rules)
    liar.extra = bad.address
    fed.coordinator.masking = liar
    with pytest.raises(VerificationError) as refused:  # the participants' custody check at the end
        fed.run(1)
    assert refused.value.round_id == 0 and bad.address in str(refused.value)
    assert set(fed.ledger.round_history(0).aggregate.included) == {p.address for p in fed.participants}
    report = audit(fed)
    assert not report.ok
    [failure] = report.rounds[0].failures
    assert failure.round_id == 0 and bad.address in str(failure)
