"""The ledger contract against a pure-Python reference model, driven by random call sequences.

A hypothesis state machine sends random sequences of every external call of the contract
(register, remove, open, submit, close, finalize, abandon, plus time travel) from random actors (the
coordinator; accounts registered, removed or never registered) with random, often wrong,
arguments (wrong round ids and base hashes, closes and abandons of rounds in every state, zero hashes, sample counts around the cap,
unsorted, duplicate or unrecorded included lists, deadlines in the past), through
:class:`fedchain.chain.Ledger` on the in-process chain. Before each call the model
(:class:`LedgerModel`, plain Python written from the interface's NatSpec, not from the
contract) predicts either the events of the transaction or the exact custom error, arguments
included, it must revert with. After each call the test checks the prediction, that exactly
the expected blocks were mined (one per accepted call or time jump, none for a rejected call),
and that the storage the call touched reads back as the model says. At the end of every
sequence the whole state (every round, every update slot of every actor, the registry, the
lineage, the round counter) is compared.

Why not the whole state after every step: each read costs an ``eth_call`` of several
milliseconds on eth-tester, and a full comparison is some 20 to 30 of them, which would make
the 200 x 30 steps the issue asks for take over half an hour. Corrupted storage stays
corrupted, so the final comparison still catches a write to the wrong slot, and hypothesis
then shrinks the sequence to the step that made it.

Time: the embedded chain's block time is the wall clock plus the travelled offset, so it
cannot be predicted to the second. Deadlines are chosen "now" plus x500 seconds and time jumps
are multiples of 1000 s, so no deadline is compared within :data:`MARGIN` seconds of the block
time; the model refuses, loudly, to judge one that is (:class:`Clock`). A ``timestamp``
argument of an error is checked to lie between the earliest block time the call can have
been judged at and the chain's clock just after it.

Every sequence starts from a snapshot (:meth:`EmbeddedChain.snapshot`) of a chain with the
actors funded and the ledger deployed, with or without three participants registered: a
fresh chain and deployment per sequence would cost ~0.5 s each. ``FEDCHAIN_FUZZ_EXAMPLES``
and ``FEDCHAIN_FUZZ_STEPS`` (default 200 and 30) run it longer.
"""

from __future__ import annotations

import collections
import copy
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hexbytes import HexBytes
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from fedchain.chain import EmbeddedChain, Ledger, Signer
from fedchain.chain.compile import load_artifact
from fedchain.errors import ChainError, ContractRevertError
from fedchain.hashing import sha256
from fedchain.records import ParticipantInfo, RoundState, RoundStatus
from fedchain.types import Address, Cid, Digest, RoundId

ZERO_ADDRESS = Address("0x" + "00" * 20)
ZERO = Digest(b"\x00" * 32)
UINT32_MAX = 2**32 - 1
UINT64_MAX = 2**64 - 1
UINT256_MAX = 2**256 - 1
GENESIS = sha256(b"stateful genesis")
MANIFEST = sha256(b"stateful manifest")
#: No deadline is compared closer than this to the chain's clock (see the module docstring).
MARGIN = 60

#: What a step does: submissions (one per participant and round) three times, opening, closing and
#: finalizing rounds twice as often as the rest.
ACTIONS = (
    "submit_update",
    "open_round",
    "close_round",
    "finalize_round",
    "register",
    "remove",
    "advance_time",
    "abandon_round",
    "submit_update",
    "submit_update",
    "open_round",
    "close_round",
    "finalize_round",
)

EXAMPLES = int(os.environ.get("FEDCHAIN_FUZZ_EXAMPLES", "200"))
STEPS = int(os.environ.get("FEDCHAIN_FUZZ_STEPS", "30"))
#: How often each call was accepted or rejected with each error (printed by the test: ``-s``).
OUTCOMES: collections.Counter[str] = collections.Counter()


def digest(label: str) -> Digest:
    return sha256(label.encode())


# --------------------------------------------------------------------------- the reference model


class Rejected(Exception):
    """The model's prediction that a call reverts with custom error ``name(arguments)``."""

    def __init__(self, name: str, **arguments: Any) -> None:
        super().__init__(name, arguments)
        self.name = "FederatedLedger" + name
        self.arguments = arguments


#: Stands for an error's ``timestamp`` argument: the block time the call was simulated at.
BLOCK_TIME = object()

Event = tuple[str, dict[str, Any]]


@dataclass
class RoundModel:
    deadline: int
    min_updates: int
    opened_block: int
    included: int = 0
    closed_block: int = 0
    end_block: int = 0
    ended: RoundStatus | None = None  # FINALIZED or ABANDONED once the round ended
    aggregate: Digest | None = None
    updates: dict[str, Digest] = field(default_factory=dict)

    @property
    def status(self) -> RoundStatus:
        if self.ended is not None:
            return self.ended
        return RoundStatus.CLOSED if self.closed_block else RoundStatus.OPEN


@dataclass(frozen=True)
class Clock:
    """Bounds of the block time a call is judged at.

    eth-tester simulates a call (the ledger's ``estimate_gas``) in a child of the latest block,
    timed ``max(latest + 1, wall clock)``; it mines the transaction at ``chain.now()``, which
    also counts the travelled offset. The two differ by up to the seconds since the latest block
    when time has been travelled, so the model is given ``earliest`` (the first, taken before
    the call) and ``latest`` (``chain.now()`` before the call; the call itself adds less
    than :data:`MARGIN`).
    """

    earliest: int
    latest: int

    def past(self, deadline: int) -> bool:
        """Whether the block time is past ``deadline``; the test's fault if that is not certain."""
        if self.earliest > deadline:
            return True
        if self.latest + MARGIN <= deadline:
            return False
        raise AssertionError(f"test design: deadline {deadline} too close to the block time {self}")


class LedgerModel:
    """What ``IFederatedLedger`` promises, in plain Python.

    Each write method either raises :class:`Rejected` without changing anything, or applies
    the call and returns the events it must emit. ``block`` is the number of the latest block:
    every accepted transaction and every time jump mines exactly one.
    """

    def __init__(self, coordinator: str, genesis: Digest, block: int) -> None:
        self.coordinator = coordinator
        self.genesis = genesis
        self.block = block
        self.registry: dict[str, tuple[bool, int]] = {}
        self.order: list[str] = []
        self.rounds: list[RoundModel] = []
        self.last_aggregate = genesis

    # -- reads

    @property
    def next_round(self) -> int:
        return len(self.rounds)

    def round(self, round_id: int) -> RoundModel | None:
        return self.rounds[round_id] if round_id < len(self.rounds) else None

    def status(self, round_id: int) -> RoundStatus:
        r = self.round(round_id)
        return r.status if r is not None else RoundStatus.NOT_OPENED

    def participant(self, account: str) -> tuple[bool, int]:
        return self.registry.get(account, (False, 0))

    def update(self, round_id: int, account: str) -> Digest | None:
        r = self.round(round_id)
        return r.updates.get(account) if r is not None else None

    # -- writes

    def _only_coordinator(self, sender: str) -> None:
        if sender != self.coordinator:
            raise Rejected("NotCoordinator", account=sender)

    def _mined(self) -> int:
        self.block += 1
        return self.block

    def register(self, sender: str, account: str, cap: int) -> list[Event]:
        self._only_coordinator(sender)
        if account == ZERO_ADDRESS:
            raise Rejected("InvalidParticipant", account=account)
        if cap == 0:
            raise Rejected("ZeroSamples", participant=account)
        if self.participant(account)[0]:
            raise Rejected("AlreadyRegistered", account=account)
        if account not in self.registry:
            self.order.append(account)
        self.registry[account] = (True, cap)
        self._mined()
        return [("ParticipantRegistered", {"participant": account, "maxSamples": cap})]

    def remove(self, sender: str, account: str) -> list[Event]:
        self._only_coordinator(sender)
        registered, cap = self.participant(account)
        if not registered:
            raise Rejected("NotRegistered", account=account)
        self.registry[account] = (False, cap)
        self._mined()
        return [("ParticipantRemoved", {"participant": account})]

    def open(
        self, sender: str, round_id: int, base: Digest, cid: str, deadline: int, quorum: int, clock: Clock
    ) -> list[Event]:
        self._only_coordinator(sender)
        if round_id != self.next_round:
            raise Rejected("RoundOutOfSequence", expected=self.next_round, roundId=round_id)
        if round_id != 0 and not self.status(round_id - 1).ended:
            raise Rejected("PreviousRoundNotEnded", roundId=round_id, previousStatus=int(self.status(round_id - 1)))
        expected = self.last_aggregate
        if base != expected:
            raise Rejected("BaseModelMismatch", roundId=round_id, expected=expected, actual=base)
        if clock.past(deadline - 1):  # deadline <= block time
            raise Rejected("InvalidDeadline", deadline=deadline, timestamp=BLOCK_TIME)
        if quorum == 0:
            raise Rejected("InvalidQuorum", minUpdates=quorum)
        self.rounds.append(RoundModel(deadline=deadline, min_updates=quorum, opened_block=self._mined()))
        return [
            (
                "RoundOpened",
                {
                    "roundId": round_id,
                    "baseModelHash": base,
                    "baseModelCid": cid,
                    "deadline": deadline,
                    "minUpdates": quorum,
                },
            )
        ]

    def submit(self, sender: str, round_id: int, update: Digest, cid: str, samples: int, clock: Clock) -> list[Event]:
        registered, cap = self.participant(sender)
        if not registered:
            raise Rejected("NotRegistered", account=sender)
        if samples == 0:
            raise Rejected("ZeroSamples", participant=sender)
        if samples > cap:
            raise Rejected("SampleCountAboveCap", participant=sender, numSamples=samples, maxSamples=cap)
        if update == ZERO:
            raise Rejected("EmptyHash")
        r = self.round(round_id)
        if r is None or r.status is not RoundStatus.OPEN:
            raise Rejected("RoundNotOpen", roundId=round_id, status=int(self.status(round_id)))
        if clock.past(r.deadline):
            raise Rejected("DeadlinePassed", roundId=round_id, deadline=r.deadline, timestamp=BLOCK_TIME)
        if sender in r.updates:
            raise Rejected("AlreadySubmitted", roundId=round_id, participant=sender)
        r.updates[sender] = update
        self._mined()
        return [
            (
                "UpdateSubmitted",
                {"roundId": round_id, "participant": sender, "updateHash": update, "cid": cid, "numSamples": samples},
            )
        ]

    def close(self, sender: str, round_id: int) -> list[Event]:
        self._only_coordinator(sender)
        r = self.round(round_id)
        if r is None or r.status is not RoundStatus.OPEN:
            raise Rejected("RoundNotOpen", roundId=round_id, status=int(self.status(round_id)))
        r.closed_block = self._mined()
        return [("RoundClosed", {"roundId": round_id})]

    def abandon(self, sender: str, round_id: int) -> list[Event]:
        self._only_coordinator(sender)
        r = self.round(round_id)
        if r is None or r.status not in (RoundStatus.OPEN, RoundStatus.CLOSED):
            raise Rejected("RoundNotInProgress", roundId=round_id, status=int(self.status(round_id)))
        r.ended = RoundStatus.ABANDONED
        r.end_block = self._mined()
        return [("RoundAbandoned", {"roundId": round_id})]

    def finalize(
        self, sender: str, round_id: int, aggregate: Digest, cid: str, included: list[str], clock: Clock
    ) -> list[Event]:
        self._only_coordinator(sender)
        r = self.round(round_id)
        if r is None or r.status is not RoundStatus.CLOSED:
            raise Rejected("RoundNotClosed", roundId=round_id, status=int(self.status(round_id)))
        if aggregate == ZERO:
            raise Rejected("EmptyHash")
        if len(included) < r.min_updates and not clock.past(r.deadline):
            raise Rejected(
                "QuorumNotReached",
                roundId=round_id,
                included=len(included),
                minUpdates=r.min_updates,
                deadline=r.deadline,
            )
        previous = 0
        for index, account in enumerate(included):
            if int(account, 16) <= previous:
                raise Rejected("IncludedNotSorted", index=index, participant=account)
            if account not in r.updates:
                raise Rejected("UpdateNotRecorded", roundId=round_id, participant=account)
            previous = int(account, 16)
        r.included = len(included)
        r.aggregate = aggregate
        r.ended = RoundStatus.FINALIZED
        r.end_block = self._mined()
        self.last_aggregate = aggregate
        return [
            (
                "RoundFinalized",
                {"roundId": round_id, "aggregateHash": aggregate, "aggregateCid": cid, "included": list(included)},
            )
        ]


# --------------------------------------------------------------------------- the chain side


@dataclass
class World:
    """One embedded chain with funded actors and a deployed ledger, built once per process.

    ``starts`` maps a name to a snapshot of the chain and the model of that same state:
    ``empty`` (nothing registered) and ``registered`` (three of the four accounts registered,
    with caps of 100, 1 and 2**64 - 1), so that sequences reach rounds without first spending
    half their steps on registrations.
    """

    chain: EmbeddedChain
    coordinator: Signer
    accounts: list[Signer]
    ledger: Ledger
    starts: dict[str, tuple[int, LedgerModel]]
    event_topics: dict[bytes, Any]


_world: World | None = None


def world() -> World:
    global _world
    if _world is None:
        chain = EmbeddedChain()
        # Fixed keys: a failing sequence replays with the same addresses (hypothesis's database).
        coordinator = Signer.from_key(digest("stateful coordinator"), "coordinator")
        accounts = [Signer.from_key(digest(f"stateful account {name}"), name) for name in "abcd"]
        for signer in (coordinator, *accounts):
            chain.fund(signer.address)
        ledger, deployed = Ledger.deploy(chain, coordinator, GENESIS, Cid("QmGenesis"), MANIFEST, Cid("QmManifest"))
        model = LedgerModel(coordinator.address, GENESIS, deployed.block_number)
        starts = {"empty": (chain.snapshot(), copy.deepcopy(model))}
        for signer, cap in zip(accounts, (100, 1, UINT64_MAX), strict=False):
            ledger.register_participant(coordinator, signer.address, cap)
            model.register(coordinator.address, signer.address, cap)
        assert int(chain.w3.eth.block_number) == model.block
        starts["registered"] = (chain.snapshot(), model)
        contract = chain.w3.eth.contract(address=ledger.address, abi=load_artifact()["abi"])
        topics = {}
        for item in load_artifact()["abi"]:
            if item["type"] == "event":
                event = getattr(contract.events, item["name"])()
                topics[bytes(HexBytes(event.topic))] = event
        _world = World(chain, coordinator, accounts, ledger, starts, topics)
    return _world


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.w = world()
        self.chain = self.w.chain
        self.ledger = self.w.ledger
        self.actors = [self.w.coordinator, *self.w.accounts]
        # Who may be registered, removed or included: every actor, and the zero address.
        self.targets = [s.address for s in self.w.accounts] + [self.w.coordinator.address, ZERO_ADDRESS]
        self.start_from("empty")

    def start_from(self, name: str) -> None:
        snapshot, model = self.w.starts[name]
        self.chain.revert(snapshot)
        for signer in self.actors:
            signer.forget_nonce(self.chain.chain_id)
        self.model = copy.deepcopy(model)

    @initialize(start=st.sampled_from(["registered", "empty"]))
    def start(self, start: str) -> None:
        self.start_from(start)

    # -- drawing arguments
    #
    # Every call first draws whether it is fuzzed. An unfuzzed call is what a well-behaved
    # actor sends (it may still be rejected: a round past its deadline, a second submission);
    # in a fuzzed one each argument is wrong one time in three, so several faults can meet and
    # the order of the contract's checks is tested too. Draws shrink towards unfuzzed calls.

    def pick(self, data: st.DataObject, fuzz: bool, good: Any, *bad: Any, label: str) -> Any:
        if not fuzz:
            return good
        return data.draw(st.sampled_from([good] * (2 * len(bad)) + list(bad)), label=label)

    def coordinator_mostly(self, data: st.DataObject, fuzz: bool) -> Signer:
        return self.pick(data, fuzz, self.w.coordinator, *self.w.accounts, label="sender")

    def some_round(self, data: st.DataObject, fuzz: bool) -> int:
        n = self.model.next_round
        current = n - 1 if n > 0 else 0
        return self.pick(data, fuzz, current, n, max(n - 2, 0), UINT256_MAX, label="round")

    # -- one step: predict, call, compare

    def clock(self) -> Clock:
        latest_block = int(self.chain.w3.eth.get_block("latest")["timestamp"])
        return Clock(earliest=max(latest_block + 1, int(time.time())), latest=self.chain.now())

    def step(
        self, what: str, send: Callable[[], Any], predict: Callable[[Clock], list[Event]], check: Callable[[], None]
    ) -> None:
        clock = self.clock()
        try:
            expected = predict(clock)
        except Rejected as rejection:
            OUTCOMES[f"{what}: {rejection.name.removeprefix('FederatedLedger')}"] += 1
            with pytest.raises(ContractRevertError) as caught:
                send()
            after = self.chain.now()
            assert caught.value.name == rejection.name, (
                f"expected {rejection.name}{rejection.arguments}, got {caught.value}"
            )
            actual = dict(caught.value.arguments)
            for key, value in rejection.arguments.items():
                if value is BLOCK_TIME:
                    assert clock.earliest <= actual[key] <= after, (key, clock, actual[key], after)
                    actual[key] = BLOCK_TIME
            assert actual == rejection.arguments
            return
        OUTCOMES[f"{what}: accepted"] += 1
        result = send()
        assert result.block_number == self.model.block
        receipt = self.chain.w3.eth.get_transaction_receipt(result.tx_hash)
        assert int(receipt["status"]) == 1
        events = []
        for log in receipt["logs"]:
            assert log["address"] == self.ledger.address
            decoded = self.w.event_topics[bytes(log["topics"][0])].process_log(log)
            events.append(
                (
                    decoded["event"],
                    {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in decoded["args"].items()},
                )
            )
        assert events == expected
        check()

    # -- state comparisons

    def check_participant(self, account: str) -> None:
        registered, cap = self.model.participant(account)
        assert self.ledger.participant(account) == ParticipantInfo(Address(account), registered, cap)

    def check_registry(self) -> None:
        expected = tuple(ParticipantInfo(Address(a), *self.model.participant(a)) for a in self.model.order)
        assert self.ledger.participants() == expected

    def check_round(self, round_id: int) -> None:
        r = self.model.round(round_id)
        expected = (
            RoundState(RoundId(round_id), RoundStatus.NOT_OPENED, 0, 0, 0, 0, 0, 0)
            if r is None
            else RoundState(
                RoundId(round_id),
                r.status,
                r.deadline,
                r.min_updates,
                r.included,
                r.opened_block,
                r.closed_block,
                r.end_block,
            )
        )
        assert self.ledger.round_state(round_id) == expected

    def check_update(self, round_id: int, account: str) -> None:
        assert self.ledger.update_hash(round_id, account) == self.model.update(round_id, account)

    def check_base(self) -> None:
        assert self.ledger.last_aggregate() == self.model.last_aggregate

    # -- the calls

    @rule(data=st.data())
    def act(self, data: st.DataObject) -> None:
        """One step: a call drawn from all of them.

        One rule rather than one per call: hypothesis's swarm testing switches a random half
        of a machine's rules off in each sequence, and a sequence without, say, submissions
        never gets a round past its quorum.
        """
        getattr(self, data.draw(st.sampled_from(ACTIONS), label="action"))(data)

    def register(self, data: st.DataObject) -> None:
        fuzz = data.draw(st.booleans(), label="fuzz")
        sender = self.coordinator_mostly(data, fuzz)
        account = data.draw(st.sampled_from(self.targets), label="participant")
        cap = self.pick(
            data, fuzz, data.draw(st.sampled_from([100, 1, UINT64_MAX]), label="max_samples"), 0, label="max_samples"
        )

        def check() -> None:
            self.check_registry()
            self.check_participant(account)

        self.step(
            "register",
            lambda: self.ledger.register_participant(sender, account, cap),
            lambda clock: self.model.register(sender.address, account, cap),
            check,
        )

    def remove(self, data: st.DataObject) -> None:
        fuzz = data.draw(st.booleans(), label="fuzz")
        sender = self.coordinator_mostly(data, fuzz)
        registered = [a for a in self.targets if self.model.participant(a)[0]]
        if fuzz or not registered:
            account = data.draw(st.sampled_from(self.targets), label="participant")
        else:
            account = data.draw(st.sampled_from(registered), label="participant")
        self.step(
            "remove",
            lambda: self.ledger.remove_participant(sender, account),
            lambda clock: self.model.remove(sender.address, account),
            self.check_registry,
        )

    def open_round(self, data: st.DataObject) -> None:
        fuzz = data.draw(st.booleans(), label="fuzz")
        sender = self.coordinator_mostly(data, fuzz)
        n = self.model.next_round
        round_id = self.pick(data, fuzz, n, n + 1, max(n - 1, 0), UINT256_MAX, label="round")
        base = self.pick(data, fuzz, self.model.last_aggregate, GENESIS, ZERO, digest("unrelated model"), label="base")
        cid = data.draw(st.sampled_from(["QmBase", ""]), label="cid")
        clock = self.clock()
        ttl = data.draw(st.sampled_from([1_500, 10_500]), label="ttl")
        # A deadline equal to the earliest block time the call can be judged at is already past.
        deadline = self.pick(
            data, fuzz, clock.latest + ttl, UINT64_MAX, clock.earliest, clock.earliest - 500, 0, label="deadline"
        )
        quorum = self.pick(
            data, fuzz, data.draw(st.sampled_from([1, 2, 3]), label="min_updates"), 0, UINT32_MAX, label="min_updates"
        )

        def check() -> None:
            assert self.ledger.next_round() == self.model.next_round
            self.check_round(round_id)
            self.check_round(round_id + 1)
            if round_id > 0:
                self.check_round(round_id - 1)

        self.step(
            "open",
            lambda: self.ledger.open_round(sender, round_id, base, Cid(cid), deadline, quorum),
            lambda clock: self.model.open(sender.address, round_id, base, cid, deadline, quorum, clock),
            check,
        )

    def submit_update(self, data: st.DataObject) -> None:
        fuzz = data.draw(st.booleans(), label="fuzz")
        round_id = self.some_round(data, fuzz)
        # Unfuzzed, a registered participant that has not submitted to the round yet, if any.
        pending = [
            s
            for s in self.actors
            if self.model.participant(s.address)[0] and self.model.update(round_id, s.address) is None
        ]
        sender = data.draw(st.sampled_from(self.actors if fuzz or not pending else pending), label="sender")
        cap = self.model.participant(sender.address)[1]
        samples = self.pick(data, fuzz, max(cap, 1), 1, 0, min(cap + 1, UINT64_MAX), UINT64_MAX, label="num_samples")
        update = self.pick(
            data, fuzz, digest(f"update {round_id} {sender.address}"), digest("shared update"), ZERO, label="update"
        )
        cid = data.draw(st.sampled_from(["QmUpdate", "", "b" * 200]), label="cid")

        def check() -> None:
            self.check_update(round_id, sender.address)
            self.check_round(round_id)

        self.step(
            "submit",
            lambda: self.ledger.submit_update(sender, round_id, update, Cid(cid), samples),
            lambda clock: self.model.submit(sender.address, round_id, update, cid, samples, clock),
            check,
        )

    def finalize_round(self, data: st.DataObject) -> None:
        fuzz = data.draw(st.booleans(), label="fuzz")
        sender = self.coordinator_mostly(data, fuzz)
        round_id = self.some_round(data, fuzz)
        aggregate = self.pick(
            data, fuzz, digest(f"aggregate {round_id}"), digest("shared aggregate"), ZERO, label="aggregate"
        )
        cid = data.draw(st.sampled_from(["QmAggregate", ""]), label="cid")
        r = self.model.round(round_id)
        recorded = sorted(r.updates, key=lambda a: int(a, 16)) if r is not None else []
        how = self.pick(data, fuzz, "all recorded", "some recorded", "any", "unsorted", label="included_kind")
        if how == "all recorded":
            # What a coordinator does (the wrapper sorts the list).
            chosen = list(reversed(recorded))
        elif how == "some recorded":
            chosen = data.draw(st.lists(st.sampled_from(recorded), unique=True), label="included") if recorded else []
        else:
            # Anything: duplicates, the zero address, accounts that recorded nothing.
            chosen = data.draw(st.lists(st.sampled_from(self.targets), max_size=4), label="included")
        if how == "unsorted":
            # The public wrapper sorts the list, so the contract's own order check is reachable
            # only below it: the same transaction path, with the list exactly as drawn.
            sent = list(chosen)

            def send() -> Any:
                fn = self.ledger._contract.functions.finalizeRound(round_id, bytes(aggregate), cid, sent)
                return self.ledger._transact(sender, "finalize round (unsorted)", fn)

        else:
            sent = sorted(chosen, key=lambda a: int(a, 16))

            def send() -> Any:
                return self.ledger.finalize_round(sender, round_id, aggregate, Cid(cid), chosen)

        def check() -> None:
            self.check_round(round_id)
            self.check_base()

        self.step(
            f"finalize ({how})",
            send,
            lambda clock: self.model.finalize(sender.address, round_id, aggregate, cid, sent, clock),
            check,
        )

    def close_round(self, data: st.DataObject) -> None:
        fuzz = data.draw(st.booleans(), label="fuzz")
        sender = self.coordinator_mostly(data, fuzz)
        round_id = self.some_round(data, fuzz)
        self.step(
            "close",
            lambda: self.ledger.close_round(sender, round_id),
            lambda clock: self.model.close(sender.address, round_id),
            lambda: self.check_round(round_id),
        )

    def abandon_round(self, data: st.DataObject) -> None:
        fuzz = data.draw(st.booleans(), label="fuzz")
        sender = self.coordinator_mostly(data, fuzz)
        round_id = self.some_round(data, fuzz)

        def check() -> None:
            self.check_round(round_id)
            self.check_base()

        self.step(
            "abandon",
            lambda: self.ledger.abandon_round(sender, round_id),
            lambda clock: self.model.abandon(sender.address, round_id),
            check,
        )

    def advance_time(self, data: st.DataObject) -> None:
        seconds = data.draw(st.sampled_from([1_000, 2_000, 10_000, 100_000]), label="seconds")
        before = self.chain.now()
        self.chain.advance_time(seconds)
        self.model.block += 1
        # Not exactly ``before + seconds``: blocks mined faster than one a second run ahead of
        # the wall clock, and a jump starts from the wall clock (as anvil's evm_increaseTime).
        assert self.chain.now() > before + seconds - MARGIN

    # -- after every step, and at the end

    @invariant()
    def nothing_unexpected_was_mined(self) -> None:
        # One block per accepted call and per time jump, none for a rejected call: with the
        # ledger's storage reachable only through transactions, this is what proves that a
        # rejected call changed nothing.
        assert int(self.chain.w3.eth.block_number) == self.model.block

    def teardown(self) -> None:
        n = self.model.next_round
        OUTCOMES[f"sequences ending with {n} rounds opened"] += 1
        assert self.ledger.next_round() == n
        self.check_base()
        for round_id in range(n + 1):
            self.check_round(round_id)
            for account in self.targets if round_id < n else ():
                self.check_update(round_id, account)
        self.check_round(UINT256_MAX)
        self.check_registry()  # every registered or removed account's entry
        for account in self.targets:
            if account not in self.model.order:
                self.check_participant(account)


# --------------------------------------------------------------------------- tests


@pytest.mark.slow
@pytest.mark.timeout(900)  # ~2-3 min to pass; a failure adds up to 5 min of shrinking
def test_random_call_sequences_behave_as_the_reference_model_says() -> None:
    world()  # outside hypothesis: importing py-evm raises the recursion limit, which hypothesis minds
    OUTCOMES.clear()
    started = time.perf_counter()
    run_state_machine_as_test(
        LedgerMachine,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=STEPS,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        ),
    )
    print(f"\n{EXAMPLES} sequences of up to {STEPS} steps in {time.perf_counter() - started:.1f}s")
    for outcome, count in sorted(OUTCOMES.items()):
        print(f"{count:6d}  {outcome}")


def test_a_snapshot_brings_back_state_clock_and_nonces() -> None:
    chain = EmbeddedChain()
    coordinator = Signer.create("coordinator")
    chain.fund(coordinator.address)
    ledger, deployed = Ledger.deploy(chain, coordinator, GENESIS, Cid("QmGenesis"), MANIFEST, Cid("QmManifest"))
    snapshot = chain.snapshot()
    clock = chain.now()
    newcomer = Signer.create().address
    first = ledger.register_participant(coordinator, newcomer, 5)
    chain.advance_time(10_000)

    chain.revert(snapshot)
    assert int(chain.w3.eth.block_number) == deployed.block_number
    assert ledger.participants() == ()
    assert clock <= chain.now() < clock + 10_000
    coordinator.forget_nonce(chain.chain_id)
    again = ledger.register_participant(coordinator, newcomer, 5)
    assert again.tx_hash == first.tx_hash  # same nonce, same bytes: the chain really went back
    chain.revert(snapshot)  # a snapshot can be returned to more than once
    assert ledger.participants() == ()


def test_a_journaled_chain_refuses_snapshots(tmp_path: Any) -> None:
    chain = EmbeddedChain(tmp_path / "chain.jsonl")
    with pytest.raises(ChainError, match="journal"):
        chain.snapshot()
    with pytest.raises(ChainError, match="journal"):
        chain.revert(0)
    chain.close()


def test_reverting_to_an_unknown_snapshot_is_refused() -> None:
    with pytest.raises(ChainError, match="no snapshot 7"):
        EmbeddedChain().revert(7)
