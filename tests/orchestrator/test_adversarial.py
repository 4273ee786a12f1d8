"""Adversarial participants and a byzantine coordinator: each attack detected, excluded or refused.

Attackers here are registered accounts that submit crafted records from their own keys on a
real chain; the honest hospitals and the coordinator run the normal code.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable

import pytest
import torch
from support.federation import SETTINGS, SPEC, Federation

from fedchain.chain import Ledger, Signer
from fedchain.errors import ContractRevertError
from fedchain.fl import param_shapes
from fedchain.hashing import sha256
from fedchain.orchestrator._blobs import update_blob
from fedchain.orchestrator.actors import FederationSettings

MakeFederation = Callable[..., Federation]


def _zeros() -> dict[str, torch.Tensor]:
    return {n: torch.zeros(s) for n, s in param_shapes(SPEC).items()}


def _honest_round(fed: Federation) -> int:
    r = fed.coordinator.open_round()
    for p in fed.participants:
        p.participate(r)
    return r


def _submit(fed: Federation, signer: Signer, r: int, blob: bytes, n: int = 10) -> None:
    fed.ledger.submit_update(signer, r, sha256(blob), fed.store.put(blob), n)


def _exclusion(fed: Federation, r: int, who: str) -> str:
    report = fed.coordinator.finalize(r)
    reasons = {e.participant: e.reason for e in report.verdict.excluded}
    assert who in reasons, report.verdict
    assert who not in report.verdict.included
    assert fed.audit().ok
    return reasons[who]


def test_an_update_replayed_from_an_earlier_round_is_excluded(make_federation: MakeFederation) -> None:
    fed = make_federation(FederationSettings(spec=SPEC, train=SETTINGS.train, min_updates=2))
    r0 = _honest_round(fed)
    old = fed.ledger.round_history(r0).updates[0]
    fed.coordinator.finalize(r0)
    replayer = next(p for p in fed.participants if p.address == old.participant)
    r1 = fed.coordinator.open_round()
    for p in fed.participants:
        if p is not replayer:
            p.participate(r1)
    fed.ledger.submit_update(replayer.signer, r1, old.update_hash, old.cid, old.num_samples)
    assert _exclusion(fed, r1, replayer.address) in {"round", "base"}


def test_an_update_from_another_ledger_is_excluded(make_federation: MakeFederation) -> None:
    fed = make_federation(FederationSettings(spec=SPEC, train=SETTINGS.train, min_updates=3))
    mallory = fed.attacker()
    other_genesis = sha256(b"some other federation's genesis")
    r = _honest_round(fed)
    blob = update_blob(_zeros(), round_id=r, base_hash=other_genesis, sender=mallory.address, num_samples=10)
    _submit(fed, mallory, r, blob)
    assert _exclusion(fed, r, mallory.address) == "base"


def test_a_header_that_lies_about_sender_or_samples_is_excluded(make_federation: MakeFederation) -> None:
    fed = make_federation(FederationSettings(spec=SPEC, train=SETTINGS.train, min_updates=3))
    liar, counter = fed.attacker("liar"), fed.attacker("counter")
    r = _honest_round(fed)
    base = fed.ledger.expected_base(r)
    _submit(
        fed,
        liar,
        r,
        update_blob(_zeros(), round_id=r, base_hash=base, sender=fed.participants[0].address, num_samples=10),
    )
    _submit(
        fed,
        counter,
        r,
        update_blob(_zeros(), round_id=r, base_hash=base, sender=counter.address, num_samples=9_999),
        n=10,
    )
    report = fed.coordinator.finalize(r)
    reasons = {e.participant: e.reason for e in report.verdict.excluded}
    assert reasons == {liar.address: "sender", counter.address: "samples"}


def test_a_sample_count_above_the_registered_cap_is_rejected_on_chain(make_federation: MakeFederation) -> None:
    fed = make_federation()
    r = fed.coordinator.open_round()
    p = fed.participants[0]
    cap = fed.ledger.participant(p.address).max_samples
    blob = update_blob(
        _zeros(), round_id=r, base_hash=fed.ledger.expected_base(r), sender=p.address, num_samples=cap + 1
    )
    with pytest.raises(ContractRevertError, match="above its registered cap"):
        fed.ledger.submit_update(p.signer, r, sha256(blob), fed.store.put(blob), cap + 1)


def test_an_update_above_the_norm_bound_is_excluded(make_federation: MakeFederation) -> None:
    fed = make_federation(FederationSettings(spec=SPEC, train=SETTINGS.train, min_updates=3, max_update_norm=50.0))
    mallory = fed.attacker()
    r = _honest_round(fed)
    huge = {n: torch.full(s, 10.0) for n, s in param_shapes(SPEC).items()}
    _submit(
        fed,
        mallory,
        r,
        update_blob(huge, round_id=r, base_hash=fed.ledger.expected_base(r), sender=mallory.address, num_samples=10),
    )
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
def test_hostile_metadata_is_excluded_without_exhausting_memory(make_federation: MakeFederation, junk: object) -> None:
    fed = make_federation(FederationSettings(spec=SPEC, train=SETTINGS.train, min_updates=3))
    mallory = fed.attacker()
    r = _honest_round(fed)
    good = update_blob(
        _zeros(), round_id=r, base_hash=fed.ledger.expected_base(r), sender=mallory.address, num_samples=10
    )
    _submit(fed, mallory, r, _with_metadata(good, junk))
    assert _exclusion(fed, r, mallory.address)


def test_a_record_whose_cid_does_not_hold_its_digest_is_excluded(make_federation: MakeFederation) -> None:
    fed = make_federation(FederationSettings(spec=SPEC, train=SETTINGS.train, min_updates=3))
    mallory = fed.attacker()
    r = _honest_round(fed)
    base = fed.ledger.expected_base(r)
    claimed = update_blob(_zeros(), round_id=r, base_hash=base, sender=mallory.address, num_samples=10)
    other = update_blob(
        {n: torch.ones(s) for n, s in param_shapes(SPEC).items()},
        round_id=r,
        base_hash=base,
        sender=mallory.address,
        num_samples=10,
    )
    fed.ledger.submit_update(mallory, r, sha256(claimed), fed.store.put(other), 10)
    assert _exclusion(fed, r, mallory.address) == "hash"


def test_an_aggregate_including_an_excluded_update_fails_verification(make_federation: MakeFederation) -> None:
    fed = make_federation(FederationSettings(spec=SPEC, train=SETTINGS.train, min_updates=3))
    mallory = fed.attacker()
    r = _honest_round(fed)
    _submit(fed, mallory, r, b"\x80\x04not a model at all")
    history = fed.ledger.round_history(r)
    everyone = [u.participant for u in history.updates]
    fed.ledger.finalize_round(fed.coordinator.signer, r, sha256(b"agg"), history.opened.base_cid, everyone)
    verdict = fed.coordinator.verify(r)
    assert not verdict.ok
    assert any(f.participant == mallory.address and "invalid update included" in f.what for f in verdict.failures)
    [audited] = fed.audit().rounds
    assert not audited.ok


def test_a_ledger_address_that_is_not_a_contract_is_refused(make_federation: MakeFederation) -> None:
    fed = make_federation()
    from fedchain.errors import ChainError

    with pytest.raises(ChainError, match="no contract"):
        Ledger(fed.chain, fed.participants[0].address)
