"""A node's clock is the chain's clock: deadlines are judged by it, not by this machine's.

anvil and hardhat fix their clock's offset in whole seconds when they start, so a node can run
up to a second behind the machine it is on (CI once saw a coordinator finalize a round with
fewer updates than its quorum a second "after" the deadline, and the contract refuse it). Here
the node's clock is put well behind with ``evm_setTime`` (a real anvil, its own dev method), so
the difference cannot hide in a second's rounding.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from support.federation import make, small_demo, small_manifest

from fedchain.chain import Ledger, RpcChain, Signer, connect
from fedchain.chain.anvil import AnvilNode
from fedchain.hashing import sha256
from fedchain.storage import LocalBlockStore
from fedchain.types import Cid

BEHIND = 40  # seconds the node's clock is set behind this machine's
BEHIND_A_LITTLE = 3
CID = Cid("QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG")


@contextmanager
def late_anvil(seconds: int) -> Iterator[RpcChain]:
    """A fresh anvil (its clock is changed, so not the shared one) running ``seconds`` late."""
    with AnvilNode() as node:
        chain = connect(node.url)
        assert isinstance(chain, RpcChain)
        answer = chain.w3.provider.make_request("evm_setTime", [int(time.time()) - seconds])  # type: ignore[arg-type]
        assert "error" not in answer, answer
        yield chain
        chain.close()


@pytest.fixture
def late_chain() -> Iterator[RpcChain]:
    with late_anvil(BEHIND) as chain:
        yield chain


def test_now_is_the_nodes_clock_when_it_is_behind_this_machines(late_chain: RpcChain) -> None:
    now = late_chain.now()
    assert abs(now - (time.time() - BEHIND)) <= 2
    late_chain.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    mined = int(late_chain.w3.eth.get_block("latest")["timestamp"])
    assert now <= mined <= now + 2


def test_a_round_whose_deadline_passed_by_now_finalizes_below_its_quorum(late_chain: RpcChain) -> None:
    coordinator, participant = Signer.create("coordinator"), Signer.create("st-mary")
    for s in (coordinator, participant):
        late_chain.fund(s.address)
    ledger, _ = Ledger.deploy(
        late_chain, coordinator, sha256(b"genesis"), Cid("QmGenesis"), sha256(b"manifest"), Cid("QmManifest")
    )
    ledger.register_participant(coordinator, participant.address, 100)
    deadline = late_chain.now() + 2
    ledger.open_round(coordinator, 0, sha256(b"genesis"), CID, deadline, 2)
    ledger.submit_update(participant, 0, sha256(b"the only update"), CID, 10)
    ledger.close_round(coordinator, 0)
    give_up = time.monotonic() + 30
    while late_chain.now() <= deadline:
        assert time.monotonic() < give_up, "the node's clock did not pass the deadline"
        time.sleep(0.2)
    # By this machine's clock the deadline passed BEHIND seconds ago; by the node's, just now:
    # the finalize with one update of a quorum of two goes through because now() read the node.
    ledger.finalize_round(coordinator, 0, sha256(b"aggregate"), CID, [participant.address])
    assert ledger.round_state(0).included_count == 1


def test_a_coordinator_whose_clock_runs_ahead_of_the_chain_waits_for_the_chains_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The fault left once now() reads the node: a clock this side ahead of the clock of the block a
    # finalize goes into (on a network, another node's). No dev node shows it any more, so now()
    # is made to read this machine's clock, BEHIND_A_LITTLE seconds ahead of the node's.
    demo = small_demo()
    with late_anvil(BEHIND_A_LITTLE) as chain:
        fed = make(chain, LocalBlockStore(tmp_path / "store"), demo, small_manifest(min_updates=3, round_seconds=4))
        monkeypatch.setattr(chain, "now", lambda: int(time.time()))
        with caplog.at_level(logging.WARNING, logger="fedchain.orchestrator.coordinator"):
            [summary] = fed.run(1, active=fed.participants[:2], poll_seconds=0.2)
        # Finalized below its quorum of three (a third member never runs) once the chain's clock agreed.
        assert summary.status == "finalized" and 1 <= summary.included <= 2
        assert caplog.text.count("the chain says its deadline has not passed yet") == 1  # once, not every poll
