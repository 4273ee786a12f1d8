"""An update racing the close: recorded before it (and aggregated) or refused, never silently omitted.

The coordinator closes before it reads (docs/PROTOCOL.md), so the set an honest aggregate must
contain is fixed on chain. The quorum is below the number of participants here, so the
coordinator may close while a valid update is on its way: the race is real.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from support.federation import audit, make, small_manifest

from fedchain.chain import Chain, connect
from fedchain.chain.anvil import AnvilNode
from fedchain.errors import RoundNotOpenError
from fedchain.orchestrator.federation import Federation
from fedchain.records import RoundStatus
from fedchain.storage import LocalBlockStore
from fedchain.tasks.api import DemoData


def _screened_quorum(fed: Federation) -> int:
    """Open a round, let two of the three participants submit, and screen it as the coordinator does."""
    r = fed.coordinator.open_round()
    for p in fed.participants[:2]:
        p.participate(r)
    assert fed.coordinator.ready_to_close(r)  # 2 valid of a quorum of 2: the coordinator would close now
    return r


def test_an_update_recorded_between_the_screening_and_the_close_is_aggregated(
    chain: Chain, tmp_path: Path, demo: DemoData
) -> None:
    fed = make(chain, LocalBlockStore(tmp_path / "s"), demo, small_manifest(min_updates=2))
    r = _screened_quorum(fed)
    late = fed.participants[2]
    late.participate(r)  # mined after the screening, before the close
    fed.coordinator.close(r)
    report = fed.coordinator.finish(r)
    assert sorted(report.verdict.included) == sorted(p.address for p in fed.participants)
    [verdict] = audit(fed).rounds
    assert verdict.ok and len(verdict.included) == 3
    assert fed.coordinator.open_round() == r + 1  # the federation continues


def test_an_update_sent_after_the_close_is_refused_and_nothing_is_omitted(
    chain: Chain, tmp_path: Path, demo: DemoData
) -> None:
    fed = make(chain, LocalBlockStore(tmp_path / "s"), demo, small_manifest(min_updates=2))
    r = _screened_quorum(fed)
    fed.coordinator.close(r)
    late = fed.participants[2]
    with pytest.raises(RoundNotOpenError):
        late.participate(r)
    assert late.has_submitted(r) is False
    report = fed.coordinator.finish(r)
    assert len(report.verdict.included) == 2
    [verdict] = audit(fed).rounds
    assert verdict.ok and verdict.missing == (late.address,)  # not recorded, so not omitted
    assert fed.coordinator.open_round() == r + 1


def _rpc(chain: Chain, method: str, params: list[Any]) -> Any:
    answer = chain.w3.provider.make_request(method, params)  # type: ignore[arg-type]
    assert "error" not in answer, answer
    return answer["result"]


def _pending(chain: Chain) -> int:
    return int(_rpc(chain, "txpool_status", [])["pending"], 16)


def _wait_pending(chain: Chain, n: int) -> None:
    deadline = time.monotonic() + 60
    while _pending(chain) < n:
        assert time.monotonic() < deadline, "transactions never reached the pool"
        time.sleep(0.02)


@pytest.mark.parametrize("at_deadline", [False, True], ids=["before-deadline", "at-deadline"])
@pytest.mark.parametrize("update_first", [True, False], ids=["update-first", "close-first"])
def test_an_update_and_the_close_mined_in_one_block_verify_and_the_federation_continues(
    anvil_node: AnvilNode,
    tmp_path: Path,
    demo: DemoData,
    monkeypatch: pytest.MonkeyPatch,
    at_deadline: bool,
    update_first: bool,
) -> None:
    """anvil with automine off: both transactions wait in the pool and are mined together, in the order sent.

    A transaction is simulated on the pending block before it is sent, so an update simulated
    after the close reached the pool would be refused before it is sent; for the close to be
    mined first in the update's block, the update's send (simulated on a pool without the
    close) is held until the close is in the pool.
    """
    chain = connect(anvil_node.url)
    fed = make(chain, LocalBlockStore(tmp_path / "s"), demo, small_manifest(min_updates=2))
    r = _screened_quorum(fed)
    late = fed.participants[2]
    outcome: dict[str, Any] = {}

    def run(key: str, action: Any) -> None:
        try:
            outcome[key] = action()
        except Exception as err:  # noqa: BLE001 - inspected below
            outcome[key] = err

    simulated, close_pooled = threading.Event(), threading.Event()
    send = chain.send_raw_transaction

    def held_send(raw: bytes) -> Any:
        if threading.current_thread().name == "update" and not update_first:
            simulated.set()
            assert close_pooled.wait(60), "the close never reached the pool"
        return send(raw)

    monkeypatch.setattr(chain, "send_raw_transaction", held_send)
    _rpc(chain, "evm_setAutomine", [False])
    try:
        actions = {"update": lambda: late.participate(r), "close": lambda: fed.coordinator.close(r)}
        threads = {key: threading.Thread(target=run, args=(key, actions[key]), name=key) for key in actions}
        threads["update"].start()
        if update_first:
            _wait_pending(chain, 1)
            threads["close"].start()
        else:
            assert simulated.wait(60), "the update was never simulated"
            threads["close"].start()
            _wait_pending(chain, 1)
            close_pooled.set()
        _wait_pending(chain, 2)
        if at_deadline:
            _rpc(chain, "evm_setNextBlockTimestamp", [fed.ledger.round_state(r).deadline])
        _rpc(chain, "evm_mine", [])
        for t in threads.values():
            t.join(60)
    finally:
        _rpc(chain, "evm_setAutomine", [True])
    close = outcome["close"]
    assert not isinstance(close, Exception), close
    update = outcome["update"]
    state = fed.ledger.round_state(r)
    assert state.status is RoundStatus.CLOSED
    if isinstance(update, Exception):
        assert isinstance(update, RoundNotOpenError), update  # mined after the close, refused by the contract
        assert not update_first
        expected = 2
    else:
        assert update_first
        assert update is not None and update.block_number == close.block_number  # the same block
        expected = 3
    if at_deadline:
        block = chain.w3.eth.get_block(close.block_number)
        assert int(block["timestamp"]) == state.deadline
    recorded = fed.ledger.round_history(r).updates
    assert len(recorded) == expected
    report = fed.coordinator.finish(r)
    assert len(report.verdict.included) == expected and report.verdict.finalized
    [verdict] = audit(fed).rounds
    assert verdict.ok and len(verdict.included) == expected
    # the federation continues: the next round opens on the verified aggregate and completes
    fed.run(2)
    after = audit(fed)
    assert after.ok and after.rounds_finalized == 2
    chain.close()
