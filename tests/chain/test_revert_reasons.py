"""A transaction mined but reverted reports the reason the contract gave when it ran.

Not the reason a re-simulation on the block's end state would give: that state holds what was
mined after the transaction in the same block. The reported bug: a participant whose update
reverted with DeadlinePassed was told RoundNotOpen, because the coordinator's close (in v1,
its finalize) was mined right after the update in the same block.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from fedchain.chain import Chain, EmbeddedChain, Ledger, RpcChain, Signer, connect
from fedchain.chain.anvil import AnvilNode
from fedchain.errors import DeadlinePassedError, RoundNotOpenError
from fedchain.hashing import sha256
from fedchain.records import RoundStatus, TxResult
from fedchain.types import Cid

GENESIS = sha256(b"genesis model")
MANIFEST = sha256(b"manifest")


def request(chain: RpcChain, method: str, params: list[Any]) -> Any:
    response = chain.w3.provider.make_request(method, params)  # type: ignore[arg-type]
    assert "error" not in response, response
    return response["result"]


def wait_pending(chain: Chain, address: str, count: int) -> None:
    deadline = time.monotonic() + 30
    while chain.w3.eth.get_transaction_count(address, "pending") < count:  # type: ignore[arg-type]
        assert time.monotonic() < deadline, f"no pending transaction from {address}"
        time.sleep(0.02)


def test_a_late_update_mined_just_before_the_close_is_told_deadline_passed(anvil_node: AnvilNode) -> None:
    chain = connect(anvil_node.url)
    assert isinstance(chain, RpcChain)
    coordinator, participant = Signer.create("coordinator"), Signer.create("late")
    for s in (coordinator, participant):
        chain.fund(s.address)
    ledger, _ = Ledger.deploy(chain, coordinator, GENESIS, Cid("QmG"), MANIFEST, Cid("QmM"))
    ledger.register_participant(coordinator, participant.address, 10)
    ledger.open_round(coordinator, 0, GENESIS, Cid("QmB"), chain.now() + 600, 1)
    deadline = ledger.round_state(0).deadline
    outcome: dict[str, Any] = {}

    def run(name: str, fn: Any) -> None:
        try:
            outcome[name] = fn()
        except Exception as err:  # noqa: BLE001 - collected, asserted in the main thread
            outcome[name] = err

    request(chain, "evm_setAutomine", [False])
    try:
        submits = chain.w3.eth.get_transaction_count(participant.address)  # type: ignore[arg-type]
        closes = chain.w3.eth.get_transaction_count(coordinator.address)  # type: ignore[arg-type]
        submit = threading.Thread(
            target=run, args=("submit", lambda: ledger.submit_update(participant, 0, sha256(b"u"), Cid("QmU"), 1))
        )
        submit.start()  # simulated before the deadline: accepted, sent, waiting to be mined
        wait_pending(chain, participant.address, submits + 1)
        close = threading.Thread(target=run, args=("close", lambda: ledger.close_round(coordinator, 0)))
        close.start()
        wait_pending(chain, coordinator.address, closes + 1)
        request(chain, "evm_setNextBlockTimestamp", [deadline + 10])  # the block comes after the deadline
        request(chain, "evm_mine", [])
        submit.join(60)
        close.join(60)
    finally:
        request(chain, "evm_setAutomine", [True])

    assert isinstance(outcome["close"], TxResult)
    block = chain.w3.eth.get_block(outcome["close"].block_number, full_transactions=True)
    senders = [tx["from"] for tx in block["transactions"]]
    assert senders == [participant.address, coordinator.address]  # the update first, then the close, one block
    err = outcome["submit"]
    assert isinstance(err, DeadlinePassedError), err
    assert err.arguments == {"roundId": 0, "deadline": deadline, "timestamp": deadline + 10}
    # the trap: re-simulated on the block's end state, the same call says the round is closed
    call = {"from": participant.address, "to": ledger.address, "data": block["transactions"][0]["input"]}
    with pytest.raises(Exception) as at_end:
        chain.w3.eth.call(call, block["number"])  # type: ignore[arg-type]
    wrong = ledger._decoder.from_exception(at_end.value)
    assert isinstance(wrong, RoundNotOpenError) and wrong.arguments["status"] is RoundStatus.CLOSED
    chain.close()


def test_on_the_embedded_chain_a_reverted_update_reports_deadline_passed() -> None:
    chain = EmbeddedChain()
    coordinator, participant = Signer.create("coordinator"), Signer.create("late")
    for s in (coordinator, participant):
        chain.fund(s.address)
    ledger, _ = Ledger.deploy(chain, coordinator, GENESIS, Cid("QmG"), MANIFEST, Cid("QmM"))
    ledger.register_participant(coordinator, participant.address, 10)
    ledger.open_round(coordinator, 0, GENESIS, Cid("QmB"), chain.now() + 600, 1)
    send = chain.send_raw_transaction

    def late(raw: bytes) -> Any:  # the clock passes the deadline between the simulation and the send
        chain.advance_time(1_000)
        return send(raw)

    chain.send_raw_transaction = late  # type: ignore[method-assign]
    with pytest.raises(DeadlinePassedError) as exc:
        ledger.submit_update(participant, 0, sha256(b"u"), Cid("QmU"), 1)
    chain.send_raw_transaction = send  # type: ignore[method-assign]
    assert exc.value.arguments["deadline"] == ledger.round_state(0).deadline
    assert exc.value.arguments["timestamp"] > exc.value.arguments["deadline"]
    assert ledger.round_state(0).status is RoundStatus.OPEN
