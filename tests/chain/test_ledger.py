"""The FederatedLedger contract through the chain layer, on eth-tester and on anvil.

Every custom error of the contract is reached here, through the typed wrapper, and shows up
as the ContractRevertError subclass of that error, carrying the error's name and arguments.
"""

from __future__ import annotations

import threading

import pytest

from fedchain import errors
from fedchain.chain import Chain, Ledger, Signer
from fedchain.errors import ContractRevertError
from fedchain.hashing import sha256
from fedchain.records import RoundStatus
from fedchain.types import Cid, Digest

GENESIS = sha256(b"genesis model")
MANIFEST = sha256(b'{"codec":"fedchain-safetensors-v1"}')
CID = Cid("QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG")
ZERO = Digest(b"\x00" * 32)


def digest(label: str) -> Digest:
    return sha256(label.encode())


@pytest.fixture
def ledger(chain: Chain, coordinator: Signer, participants: list[Signer]) -> Ledger:
    led, _ = Ledger.deploy(chain, coordinator, GENESIS, Cid("QmGenesis"), MANIFEST, Cid("QmManifest"))
    for p in participants:
        led.register_participant(coordinator, p.address, 1_000)
    return led


def open_round(
    ledger: Ledger, coordinator: Signer, round_id: int, base: Digest, *, ttl: int = 600, quorum: int = 2
) -> None:
    ledger.open_round(coordinator, round_id, base, CID, ledger.chain.now() + ttl, quorum)


def run_round(ledger: Ledger, coordinator: Signer, participants: list[Signer], round_id: int, base: Digest) -> Digest:
    open_round(ledger, coordinator, round_id, base)
    for p in participants:
        ledger.submit_update(p, round_id, digest(f"{round_id}/{p.address}"), CID, 100)
    ledger.close_round(coordinator, round_id)
    aggregate = digest(f"aggregate {round_id}")
    ledger.finalize_round(coordinator, round_id, aggregate, CID, [p.address for p in participants])
    return aggregate


def reverts(name: str) -> pytest.RaisesContext[ContractRevertError]:
    """The revert of custom error ``FederatedLedger<name>``, raised as its own type ``<name>Error``."""
    kind: type[ContractRevertError] = getattr(errors, name.removeprefix("FederatedLedger") + "Error")
    return pytest.raises(kind, match=name)


# --------------------------------------------------------------------------- deployment


def test_deploy_records_coordinator_genesis_manifest_and_block(chain: Chain, coordinator: Signer) -> None:
    ledger, tx = Ledger.deploy(chain, coordinator, GENESIS, Cid("QmGenesis"), MANIFEST, Cid("QmManifest"))
    info = ledger.info()
    assert info.coordinator == coordinator.address
    assert info.genesis_hash == GENESIS
    assert info.manifest_hash == MANIFEST
    assert info.deployed_block == tx.block_number
    assert ledger.genesis_cid() == "QmGenesis"
    assert ledger.manifest_cid() == "QmManifest"
    assert ledger.next_round() == 0
    assert ledger.last_aggregate() == GENESIS
    assert ledger.next_base() == GENESIS
    assert ledger.round_state(0).status is RoundStatus.NOT_OPENED


def test_deploy_with_an_empty_genesis_or_manifest_is_rejected(chain: Chain, coordinator: Signer) -> None:
    with reverts("FederatedLedgerEmptyHash"):
        Ledger.deploy(chain, coordinator, ZERO, Cid("QmGenesis"), MANIFEST, Cid("QmManifest"))
    with reverts("FederatedLedgerEmptyHash"):
        Ledger.deploy(chain, coordinator, GENESIS, Cid("QmGenesis"), ZERO, Cid("QmManifest"))


def test_head_names_the_latest_block(chain: Chain, ledger: Ledger) -> None:
    number, block_hash = ledger.head()
    latest = chain.w3.eth.get_block("latest")
    assert number == latest["number"]
    assert block_hash == bytes(latest["hash"]) and len(block_hash) == 32


# --------------------------------------------------------------------------- registry


def test_only_the_coordinator_registers(ledger: Ledger, participants: list[Signer]) -> None:
    with reverts("FederatedLedgerNotCoordinator") as exc:
        ledger.register_participant(participants[0], Signer.create().address, 10)
    assert exc.value.arguments == {"account": participants[0].address}


def test_registering_twice_is_rejected(ledger: Ledger, coordinator: Signer, participants: list[Signer]) -> None:
    with reverts("FederatedLedgerAlreadyRegistered"):
        ledger.register_participant(coordinator, participants[0].address, 10)


def test_zero_address_and_zero_cap_are_rejected(ledger: Ledger, coordinator: Signer) -> None:
    with reverts("FederatedLedgerInvalidParticipant"):
        ledger.register_participant(coordinator, "0x" + "00" * 20, 10)
    with reverts("FederatedLedgerZeroSamples"):
        ledger.register_participant(coordinator, Signer.create().address, 0)


def test_registry_lists_participants_with_caps(ledger: Ledger, participants: list[Signer]) -> None:
    listed = ledger.participants()
    assert {p.address for p in listed} == {p.address for p in participants}
    assert all(p.registered and p.max_samples == 1_000 for p in listed)


def test_removing_an_unknown_participant_is_rejected(ledger: Ledger, coordinator: Signer) -> None:
    with reverts("FederatedLedgerNotRegistered"):
        ledger.remove_participant(coordinator, Signer.create().address)


def test_removed_participant_cannot_submit_but_its_history_remains(
    ledger: Ledger, coordinator: Signer, participants: list[Signer]
) -> None:
    aggregate = run_round(ledger, coordinator, participants, 0, GENESIS)
    gone = participants[0]
    ledger.remove_participant(coordinator, gone.address)
    open_round(ledger, coordinator, 1, aggregate)
    with reverts("FederatedLedgerNotRegistered"):
        ledger.submit_update(gone, 1, digest("late"), CID, 10)
    assert ledger.update_hash(0, gone.address) == digest(f"0/{gone.address}")
    history = ledger.round_history(0)
    assert gone.address in [u.participant for u in history.updates]
    assert ledger.participant(gone.address).registered is False
    assert gone.address in [p.address for p in ledger.participants()]


def test_a_removed_participant_can_be_registered_again(
    ledger: Ledger, coordinator: Signer, participants: list[Signer]
) -> None:
    ledger.remove_participant(coordinator, participants[0].address)
    ledger.register_participant(coordinator, participants[0].address, 5)
    assert ledger.participant(participants[0].address).max_samples == 5
    assert len(ledger.participants()) == 3


# --------------------------------------------------------------------------- rounds and lineage


def test_a_full_round_is_recorded_in_storage_and_events(
    ledger: Ledger, coordinator: Signer, participants: list[Signer]
) -> None:
    aggregate = run_round(ledger, coordinator, participants, 0, GENESIS)
    state = ledger.round_state(0)
    assert state.status is RoundStatus.FINALIZED
    assert state.included_count == 3
    history = ledger.round_history(0)
    assert history.state == state
    assert history.opened.base_hash == GENESIS
    assert [u.participant for u in history.updates] == [p.address for p in participants]
    assert all(u.num_samples == 100 and u.cid == CID for u in history.updates)
    assert history.closed is not None and history.closed.block_number == state.closed_block
    assert history.aggregate is not None and history.aggregate.included == tuple(p.address for p in participants)
    assert history.aggregate.aggregate_hash == aggregate and history.aggregate.block_number == state.end_block
    assert history.abandoned is None
    assert state.opened_block < max(u.block_number for u in history.updates) < state.closed_block < state.end_block
    assert ledger.last_aggregate() == aggregate


def test_rounds_must_open_in_sequence(ledger: Ledger, coordinator: Signer) -> None:
    with reverts("FederatedLedgerRoundOutOfSequence") as exc:
        open_round(ledger, coordinator, 1, GENESIS)
    assert exc.value.arguments == {"expected": 0, "roundId": 1}
    open_round(ledger, coordinator, 0, GENESIS)
    with reverts("FederatedLedgerRoundOutOfSequence"):
        open_round(ledger, coordinator, 0, GENESIS)


def test_a_round_cannot_open_before_the_previous_one_ended(ledger: Ledger, coordinator: Signer) -> None:
    open_round(ledger, coordinator, 0, GENESIS)
    with reverts("FederatedLedgerPreviousRoundNotEnded") as exc:
        open_round(ledger, coordinator, 1, GENESIS)
    assert exc.value.arguments == {"roundId": 1, "previousStatus": RoundStatus.OPEN}
    ledger.close_round(coordinator, 0)
    with reverts("FederatedLedgerPreviousRoundNotEnded") as exc:
        open_round(ledger, coordinator, 1, GENESIS)
    assert exc.value.arguments["previousStatus"] is RoundStatus.CLOSED
    assert "while the previous round is closed" in str(exc.value)


def test_round_zero_must_build_on_the_genesis_model(ledger: Ledger, coordinator: Signer) -> None:
    with reverts("FederatedLedgerBaseModelMismatch") as exc:
        open_round(ledger, coordinator, 0, digest("something else"))
    assert exc.value.arguments["expected"] == GENESIS


def test_round_r_must_build_on_the_previous_aggregate(
    ledger: Ledger, coordinator: Signer, participants: list[Signer]
) -> None:
    aggregate = run_round(ledger, coordinator, participants, 0, GENESIS)
    with reverts("FederatedLedgerBaseModelMismatch") as exc:
        open_round(ledger, coordinator, 1, GENESIS)
    assert exc.value.arguments == {"roundId": 1, "expected": aggregate, "actual": GENESIS}
    open_round(ledger, coordinator, 1, aggregate)


def test_only_the_coordinator_opens_and_finalizes(
    ledger: Ledger, coordinator: Signer, participants: list[Signer]
) -> None:
    with reverts("FederatedLedgerNotCoordinator"):
        ledger.open_round(participants[0], 0, GENESIS, CID, ledger.chain.now() + 60, 1)
    open_round(ledger, coordinator, 0, GENESIS, quorum=1)
    ledger.submit_update(participants[0], 0, digest("u"), CID, 1)
    with reverts("FederatedLedgerNotCoordinator"):
        ledger.close_round(participants[0], 0)
    ledger.close_round(coordinator, 0)
    with reverts("FederatedLedgerNotCoordinator"):
        ledger.finalize_round(participants[0], 0, digest("agg"), CID, [participants[0].address])
    with reverts("FederatedLedgerNotCoordinator"):
        ledger.abandon_round(participants[0], 0)


def test_deadline_and_quorum_must_be_sensible(ledger: Ledger, coordinator: Signer) -> None:
    with reverts("FederatedLedgerInvalidDeadline"):
        ledger.open_round(coordinator, 0, GENESIS, CID, 1, 1)
    with reverts("FederatedLedgerInvalidQuorum"):
        ledger.open_round(coordinator, 0, GENESIS, CID, ledger.chain.now() + 60, 0)


# --------------------------------------------------------------------------- submissions


def test_a_participant_submits_once_per_round(ledger: Ledger, coordinator: Signer, participants: list[Signer]) -> None:
    open_round(ledger, coordinator, 0, GENESIS)
    ledger.submit_update(participants[0], 0, digest("a"), CID, 10)
    with reverts("FederatedLedgerAlreadySubmitted") as exc:
        ledger.submit_update(participants[0], 0, digest("b"), CID, 10)
    assert exc.value.arguments == {"roundId": 0, "participant": participants[0].address}
    assert str(exc.value).startswith(f"participant {participants[0].address} already submitted for round 0")
    assert ledger.update_hash(0, participants[0].address) == digest("a")


def test_unregistered_accounts_cannot_submit(chain: Chain, ledger: Ledger, coordinator: Signer) -> None:
    open_round(ledger, coordinator, 0, GENESIS)
    stranger = Signer.create("stranger")
    chain.fund(stranger.address)
    with reverts("FederatedLedgerNotRegistered"):
        ledger.submit_update(stranger, 0, digest("x"), CID, 1)


def test_sample_counts_above_the_cap_or_zero_are_rejected(
    ledger: Ledger, coordinator: Signer, participants: list[Signer]
) -> None:
    open_round(ledger, coordinator, 0, GENESIS)
    with reverts("FederatedLedgerSampleCountAboveCap") as exc:
        ledger.submit_update(participants[0], 0, digest("a"), CID, 1_001)
    assert exc.value.arguments["numSamples"] == 1_001 and exc.value.arguments["maxSamples"] == 1_000
    with reverts("FederatedLedgerZeroSamples"):
        ledger.submit_update(participants[0], 0, digest("a"), CID, 0)
    ledger.submit_update(participants[0], 0, digest("a"), CID, 1_000)


def test_an_empty_update_hash_is_rejected(ledger: Ledger, coordinator: Signer, participants: list[Signer]) -> None:
    open_round(ledger, coordinator, 0, GENESIS)
    with reverts("FederatedLedgerEmptyHash"):
        ledger.submit_update(participants[0], 0, ZERO, CID, 1)


def test_submissions_only_to_open_rounds(ledger: Ledger, coordinator: Signer, participants: list[Signer]) -> None:
    with reverts("FederatedLedgerRoundNotOpen") as exc:
        ledger.submit_update(participants[0], 0, digest("a"), CID, 1)
    assert "not opened" in str(exc.value)
    run_round(ledger, coordinator, participants[:2], 0, GENESIS)
    with reverts("FederatedLedgerRoundNotOpen") as exc:
        ledger.submit_update(participants[2], 0, digest("late"), CID, 1)
    assert exc.value.arguments == {"roundId": 0, "status": RoundStatus.FINALIZED}
    assert "finalized" in str(exc.value)


def test_no_update_is_recorded_after_the_close(ledger: Ledger, coordinator: Signer, participants: list[Signer]) -> None:
    open_round(ledger, coordinator, 0, GENESIS, quorum=1)
    ledger.submit_update(participants[0], 0, digest("in time"), CID, 1)
    tx = ledger.close_round(coordinator, 0)
    with reverts("FederatedLedgerRoundNotOpen") as exc:
        ledger.submit_update(participants[1], 0, digest("after the close"), CID, 1)
    assert exc.value.arguments == {"roundId": 0, "status": RoundStatus.CLOSED}
    assert str(exc.value).startswith("round 0 is not open (it is closed)")
    state = ledger.round_state(0)
    assert (state.status, state.closed_block, state.end_block) == (RoundStatus.CLOSED, tx.block_number, 0)
    assert [u.participant for u in ledger.round_history(0).updates] == [participants[0].address]
    with reverts("FederatedLedgerRoundNotOpen"):
        ledger.close_round(coordinator, 0)


def test_submissions_after_the_deadline_are_rejected(
    ledger: Ledger, coordinator: Signer, participants: list[Signer]
) -> None:
    open_round(ledger, coordinator, 0, GENESIS, ttl=60)
    ledger.submit_update(participants[0], 0, digest("on time"), CID, 1)
    ledger.chain.advance_time(120)
    with reverts("FederatedLedgerDeadlinePassed") as exc:
        ledger.submit_update(participants[1], 0, digest("late"), CID, 1)
    assert exc.value.arguments["deadline"] == ledger.round_state(0).deadline


# --------------------------------------------------------------------------- finalization


def test_finalizing_needs_the_quorum_until_the_deadline_passes(
    ledger: Ledger, coordinator: Signer, participants: list[Signer]
) -> None:
    open_round(ledger, coordinator, 0, GENESIS, ttl=60, quorum=2)
    ledger.submit_update(participants[0], 0, digest("only one"), CID, 1)
    ledger.close_round(coordinator, 0)
    with reverts("FederatedLedgerQuorumNotReached") as exc:
        ledger.finalize_round(coordinator, 0, digest("agg"), CID, [participants[0].address])
    assert exc.value.arguments["included"] == 1 and exc.value.arguments["minUpdates"] == 2
    ledger.chain.advance_time(120)
    ledger.finalize_round(coordinator, 0, digest("agg"), CID, [participants[0].address])
    assert ledger.round_state(0).included_count == 1


def test_a_round_with_no_updates_finalizes_after_its_deadline(ledger: Ledger, coordinator: Signer) -> None:
    open_round(ledger, coordinator, 0, GENESIS, ttl=30, quorum=1)
    ledger.chain.advance_time(60)
    ledger.close_round(coordinator, 0)
    ledger.finalize_round(coordinator, 0, digest("same model"), CID, [])
    assert ledger.round_history(0).aggregate is not None


def test_the_aggregate_may_include_only_recorded_updates(
    ledger: Ledger, coordinator: Signer, participants: list[Signer]
) -> None:
    open_round(ledger, coordinator, 0, GENESIS, quorum=1)
    ledger.submit_update(participants[0], 0, digest("a"), CID, 1)
    ledger.close_round(coordinator, 0)
    with reverts("FederatedLedgerUpdateNotRecorded") as exc:
        ledger.finalize_round(coordinator, 0, digest("agg"), CID, [participants[0].address, participants[1].address])
    assert exc.value.arguments == {"roundId": 0, "participant": participants[1].address}


def test_the_included_list_may_not_repeat_a_participant(
    ledger: Ledger, coordinator: Signer, participants: list[Signer]
) -> None:
    open_round(ledger, coordinator, 0, GENESIS, quorum=1)
    ledger.submit_update(participants[0], 0, digest("a"), CID, 1)
    ledger.close_round(coordinator, 0)
    with reverts("FederatedLedgerIncludedNotSorted"):
        ledger.finalize_round(coordinator, 0, digest("agg"), CID, [participants[0].address] * 2)


def test_a_round_finalizes_once_with_a_nonzero_hash(
    ledger: Ledger, coordinator: Signer, participants: list[Signer]
) -> None:
    open_round(ledger, coordinator, 0, GENESIS, quorum=1)
    ledger.submit_update(participants[0], 0, digest("a"), CID, 1)
    ledger.close_round(coordinator, 0)
    with reverts("FederatedLedgerEmptyHash"):
        ledger.finalize_round(coordinator, 0, ZERO, CID, [participants[0].address])
    ledger.finalize_round(coordinator, 0, digest("agg"), CID, [participants[0].address])
    with reverts("FederatedLedgerRoundNotClosed") as exc:
        ledger.finalize_round(coordinator, 0, digest("agg2"), CID, [participants[0].address])
    assert exc.value.arguments["status"] is RoundStatus.FINALIZED


def test_only_a_closed_round_is_finalized(ledger: Ledger, coordinator: Signer, participants: list[Signer]) -> None:
    with reverts("FederatedLedgerRoundNotClosed") as exc:
        ledger.finalize_round(coordinator, 0, digest("agg"), CID, [])
    assert exc.value.arguments == {"roundId": 0, "status": RoundStatus.NOT_OPENED}
    open_round(ledger, coordinator, 0, GENESIS, quorum=1)
    ledger.submit_update(participants[0], 0, digest("a"), CID, 1)
    with reverts("FederatedLedgerRoundNotClosed") as exc:
        ledger.finalize_round(coordinator, 0, digest("agg"), CID, [participants[0].address])
    assert exc.value.arguments == {"roundId": 0, "status": RoundStatus.OPEN}
    assert ledger.round_state(0).status is RoundStatus.OPEN


# --------------------------------------------------------------------------- abandonment


def test_an_abandoned_round_leaves_the_base_for_the_next_round(
    ledger: Ledger, coordinator: Signer, participants: list[Signer]
) -> None:
    aggregate = run_round(ledger, coordinator, participants, 0, GENESIS)
    open_round(ledger, coordinator, 1, aggregate)
    ledger.submit_update(participants[0], 1, digest("lonely"), CID, 1)
    ledger.close_round(coordinator, 1)
    tx = ledger.abandon_round(coordinator, 1)
    state = ledger.round_state(1)
    assert (state.status, state.included_count, state.end_block) == (RoundStatus.ABANDONED, 0, tx.block_number)
    assert ledger.last_aggregate() == aggregate
    history = ledger.round_history(1)
    assert history.aggregate is None
    assert history.abandoned is not None and history.abandoned.tx_hash == tx.tx_hash
    assert [u.participant for u in history.updates] == [participants[0].address]
    with reverts("FederatedLedgerBaseModelMismatch") as exc:
        open_round(ledger, coordinator, 2, digest("an aggregate never finalized"))
    assert exc.value.arguments["expected"] == aggregate
    open_round(ledger, coordinator, 2, aggregate)


def test_an_open_round_can_be_abandoned_without_a_close(
    ledger: Ledger, coordinator: Signer, participants: list[Signer]
) -> None:
    open_round(ledger, coordinator, 0, GENESIS)
    ledger.abandon_round(coordinator, 0)
    state = ledger.round_state(0)
    assert (state.status, state.closed_block) == (RoundStatus.ABANDONED, 0)
    with reverts("FederatedLedgerRoundNotOpen") as exc:
        ledger.submit_update(participants[0], 0, digest("too late"), CID, 1)
    assert exc.value.arguments["status"] is RoundStatus.ABANDONED
    open_round(ledger, coordinator, 1, GENESIS)
    assert ledger.round_state(0).status is RoundStatus.ABANDONED


def test_only_a_round_in_progress_can_be_abandoned(
    ledger: Ledger, coordinator: Signer, participants: list[Signer]
) -> None:
    with reverts("FederatedLedgerRoundNotInProgress") as exc:
        ledger.abandon_round(coordinator, 0)
    assert exc.value.arguments == {"roundId": 0, "status": RoundStatus.NOT_OPENED}
    run_round(ledger, coordinator, participants, 0, GENESIS)
    with reverts("FederatedLedgerRoundNotInProgress") as exc:
        ledger.abandon_round(coordinator, 0)
    assert exc.value.arguments["status"] is RoundStatus.FINALIZED
    assert ledger.round_state(0).status is RoundStatus.FINALIZED


# --------------------------------------------------------------------------- history and concurrency


def test_history_reads_each_round_from_its_own_blocks(
    ledger: Ledger, coordinator: Signer, participants: list[Signer]
) -> None:
    base = GENESIS
    for r in range(3):
        base = run_round(ledger, coordinator, participants, r, base)
    open_round(ledger, coordinator, 3, base)
    ledger.abandon_round(coordinator, 3)
    open_round(ledger, coordinator, 4, base)
    ledger.submit_update(participants[0], 4, digest("in progress"), CID, 1)
    rounds = list(ledger.history())
    assert [h.state.round_id for h in rounds] == [0, 1, 2, 3, 4]
    for h in rounds[:3]:
        assert h.state.opened_block <= min(u.block_number for u in h.updates)
        assert h.aggregate is not None and h.aggregate.block_number == h.state.end_block
        assert h.closed is not None and h.closed.block_number == h.state.closed_block
        assert {u.round_id for u in h.updates} == {h.state.round_id}
    assert rounds[1].opened.base_hash == rounds[0].aggregate.aggregate_hash  # type: ignore[union-attr]
    assert rounds[3].abandoned is not None and rounds[3].aggregate is None and rounds[3].updates == ()
    assert rounds[4].state.status is RoundStatus.OPEN and len(rounds[4].updates) == 1
    # what history() built from events is what storage says, field for field
    assert [h.state for h in rounds] == [ledger.round_state(r) for r in range(5)]
    assert [h for h in ledger.history(3, 4)] == [ledger.round_history(3)]


def test_participants_submitting_at_once_keep_their_own_nonces(
    ledger: Ledger, coordinator: Signer, participants: list[Signer]
) -> None:
    open_round(ledger, coordinator, 0, GENESIS, quorum=3)
    errors: list[BaseException] = []

    def submit(p: Signer) -> None:
        try:
            ledger.submit_update(p, 0, digest(p.address), CID, 7)
        except BaseException as err:  # collected and re-raised in the main thread
            errors.append(err)

    threads = [threading.Thread(target=submit, args=(p,)) for p in participants]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert all(ledger.update_hash(0, p.address) == digest(p.address) for p in participants)


def test_one_actor_sends_several_transactions_quickly(ledger: Ledger, coordinator: Signer) -> None:
    newcomers = [Signer.create() for _ in range(5)]
    results = [ledger.register_participant(coordinator, s.address, 3) for s in newcomers]
    assert len({r.tx_hash for r in results}) == 5
    assert all(ledger.participant(s.address).registered for s in newcomers)
