"""Ledger.history, the audit's reader: the same rounds as round_history, in a few wide-enough queries.

The window size is made tiny in some tests so that rounds straddle windows and quiet
stretches (another ledger's transactions) fall between rounds, which a real chain has and
the benchmark's dense history does not.
"""

from __future__ import annotations

from typing import Any

import pytest

from fedchain.chain import Chain, Ledger, Signer
from fedchain.chain import ledger as ledger_module
from fedchain.hashing import sha256
from fedchain.records import RoundStatus
from fedchain.types import Cid, Digest

GENESIS = sha256(b"genesis model")
MANIFEST = sha256(b"manifest")
CID = Cid("QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG")


def _digest(label: str) -> Digest:
    return sha256(label.encode())


def _deploy(chain: Chain, coordinator: Signer, participants: list[Signer]) -> Ledger:
    ledger, _ = Ledger.deploy(chain, coordinator, GENESIS, Cid("QmGenesis"), MANIFEST, Cid("QmManifest"))
    for p in participants:
        ledger.register_participant(coordinator, p.address, 1_000)
    return ledger


def _busy_history(chain: Chain, coordinator: Signer, participants: list[Signer]) -> Ledger:
    """Four ended rounds (one finalized without a participant, one abandoned), another ledger's traffic between
    them, a closed fifth round and an open sixth."""
    ledger = _deploy(chain, coordinator, participants)
    other = _deploy(chain, coordinator, participants)
    base = GENESIS
    for r in range(4):
        ledger.open_round(coordinator, r, base, CID, chain.now() + 600, 1)
        submitters = participants if r != 2 else participants[:2]
        for p in submitters:
            ledger.submit_update(p, r, _digest(f"{r}/{p.address}"), Cid(f"QmUpdate{r}{p.address[2:8]}"), 10 + r)
        if r == 1:  # a quiet stretch for this ledger, busy for another
            other.open_round(coordinator, 0, GENESIS, CID, chain.now() + 600, 1)
            other.submit_update(participants[0], 0, _digest("other"), CID, 5)
        ledger.close_round(coordinator, r)
        if r == 3:  # abandoned: the next round builds on the same base
            ledger.abandon_round(coordinator, r)
        else:
            base = _digest(f"aggregate {r}")
            ledger.finalize_round(coordinator, r, base, Cid(f"QmAggregate{r}"), [p.address for p in submitters])
        for p in participants[:r]:  # more unrelated blocks between rounds
            chain.fund(p.address)
    ledger.open_round(coordinator, 4, base, CID, chain.now() + 600, 3)
    ledger.submit_update(participants[1], 4, _digest("4"), CID, 7)
    ledger.close_round(coordinator, 4)
    ledger.abandon_round(coordinator, 4)
    ledger.open_round(coordinator, 5, base, CID, chain.now() + 600, 3)
    ledger.submit_update(participants[2], 5, _digest("5"), CID, 7)
    return ledger


@pytest.mark.parametrize("window", [1, 2, 5, 256])
def test_history_equals_round_history_for_every_round(
    chain: Chain, coordinator: Signer, participants: list[Signer], window: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = _busy_history(chain, coordinator, participants)
    expected = [ledger.round_history(r) for r in range(ledger.next_round())]
    monkeypatch.setattr(ledger_module, "HISTORY_WINDOW_BLOCKS", window)
    assert list(ledger.history()) == expected
    assert list(ledger.history(1, 3)) == expected[1:3]
    assert list(ledger.history(4)) == expected[4:]
    assert [h.state.status for h in expected] == [RoundStatus.FINALIZED] * 3 + [RoundStatus.ABANDONED] * 2 + [
        RoundStatus.OPEN
    ]
    assert expected[2].state.included_count == 2
    assert [h.closed is not None for h in expected] == [True] * 5 + [False]
    assert [h.abandoned is not None for h in expected] == [False] * 3 + [True] * 2 + [False]
    assert [h.aggregate is not None for h in expected] == [True] * 3 + [False] * 3


def test_an_ended_rounds_state_from_its_events_equals_its_storage(
    chain: Chain, coordinator: Signer, participants: list[Signer]
) -> None:
    ledger = _busy_history(chain, coordinator, participants)
    for h in ledger.history(0, 5):
        assert h.state == ledger.round_state(h.state.round_id)


def test_history_reads_a_dense_history_in_a_few_queries(
    chain: Chain, coordinator: Signer, participants: list[Signer], monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = _deploy(chain, coordinator, participants)
    base = GENESIS
    for r in range(6):
        ledger.open_round(coordinator, r, base, CID, chain.now() + 600, 1)
        for p in participants:
            ledger.submit_update(p, r, _digest(f"{r}/{p.address}"), CID, 10)
        ledger.close_round(coordinator, r)
        base = _digest(f"aggregate {r}")
        ledger.finalize_round(coordinator, r, base, CID, [p.address for p in participants])
    queries: list[dict[str, Any]] = []
    get_logs = chain.get_logs

    def counted(params: dict[str, Any]) -> list[Any]:
        queries.append(params)
        return get_logs(params)

    monkeypatch.setattr(chain, "get_logs", counted)  # counts the queries; the chain answers them
    rounds = list(ledger.history())
    assert [int(h.state.round_id) for h in rounds] == list(range(6))
    assert len(queries) == 1  # 36 blocks: one window, where reading round by round makes 6 queries and 6 calls
    assert queries[0]["toBlock"] - queries[0]["fromBlock"] < ledger_module.HISTORY_WINDOW_BLOCKS
