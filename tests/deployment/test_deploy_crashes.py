"""A coordinator killed during deployment, at any step, and restarted: one ledger, never two.

The deployment's steps are: put the manifest, put the genesis model, send the deploy
transaction, read its receipt, write ``ledger.address_file``. Killing a real process at an
exact step is a race, so the first run here is the coordinator's own deploy path
(:func:`fedchain.cli._coordinator.deploy_ledger`) in this process, stopped right after a step by
a wrapper around the store or the chain it is given (or the address-file writer it takes); the
wrapped objects are the real store and the real anvil node, only the stop is injected. Then the
real ``fedchain coordinator`` process runs to completion, and the coordinator's nonces are
scanned for every ledger its key created. One SIGKILL test shows the same at the process level, the
kill landing while the deploy transaction is pending (anvil's automine off).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import requests

from fedchain.chain import Pacing, ResilientRpcChain, Signer
from fedchain.chain.ledger import code_mismatch, create_address
from fedchain.cli._coordinator import deploy_ledger
from fedchain.config import load_node_config
from fedchain.storage import open_store

STEPS = ("manifest stored", "genesis stored", "deploy sent", "receipt read", "address file")


class Crash(BaseException):
    """The process dies here: a BaseException, so no retry loop catches it (none survives SIGKILL either)."""


class StopAfterPut:
    """The real store; the process dies right after its ``put`` number ``n`` has stored the blob."""

    def __init__(self, store: Any, n: int) -> None:
        self._store, self._left = store, n

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def put(self, data: bytes, **kwargs: Any) -> Any:
        cid = self._store.put(data, **kwargs)
        self._left -= 1
        if self._left == 0:
            raise Crash(f"stopped after storing {cid}")
        return cid


class StopAfterChainCall:
    """The real chain; the process dies right after ``method`` (``send_raw_transaction`` or ``wait_for_receipt``) returned."""

    def __init__(self, chain: Any, method: str) -> None:
        self._chain, self._method = chain, method

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._chain, name)
        if name != self._method:
            return attr

        def stopped(*args: Any, **kwargs: Any) -> Any:
            attr(*args, **kwargs)
            raise Crash(f"stopped after {name}")

        return stopped


def ledgers_created_by(chain: Any, address: str) -> list[str]:
    """Every fedchain ledger ``address`` created (the CREATE address of each of its nonces, by its code).

    A transaction the node accepted but has not mined yet (a send stopped before its receipt) is
    waited for first, boundedly, as the restarted coordinator itself waits for it.
    """
    deadline = time.monotonic() + 30
    while chain.has_pending(address) and time.monotonic() < deadline:
        chain.prepare()
        time.sleep(0.2)
    nonce = int(chain.w3.eth.get_transaction_count(address))
    found = []
    for n in range(nonce):
        candidate = create_address(address, n)
        if code_mismatch(bytes(chain.w3.eth.get_code(candidate))) is None:
            found.append(candidate)
    return found


def _configure(deployment: Any) -> Any:
    # One short round with a quorum of one: with nobody submitting it ends at its deadline (abandoned).
    return deployment.configure(rounds=1, min_updates=1, round_seconds=2)


@pytest.mark.parametrize("step", STEPS)
def test_a_coordinator_stopped_after_each_deployment_step_and_restarted_deploys_one_ledger(
    deployment: Any, step: str
) -> None:
    d = _configure(deployment)
    config = load_node_config(d.root / "coordinator.toml", role="coordinator")
    signer = Signer.from_keystore(config.keystore, d.password, "coordinator")
    pacing = Pacing(poll_seconds=0.2, backoff_max=1.0, outage_seconds=30)
    chain = ResilientRpcChain(d.anvil.url, pacing=pacing, dev=True)
    chain.fund(signer.address)
    store: Any = open_store(config.store)
    wrapped_chain: Any = chain
    publish_calls: list[str] = []

    def publish(path: Path, address: str) -> None:
        publish_calls.append(address)
        raise Crash("stopped before the address file was written")

    if step == "manifest stored":
        store = StopAfterPut(store, 1)
    elif step == "genesis stored":
        store = StopAfterPut(store, 2)
    elif step == "deploy sent":
        wrapped_chain = StopAfterChainCall(chain, "send_raw_transaction")
    elif step == "receipt read":
        wrapped_chain = StopAfterChainCall(chain, "wait_for_receipt")
    with pytest.raises(Crash):
        deploy_ledger(config, wrapped_chain, signer, store, pacing, publish=publish)
    address_file = d.root / "shared" / "ledger.address"
    assert not address_file.exists()
    before = ledgers_created_by(chain, signer.address)
    assert len(before) == (1 if step in ("deploy sent", "receipt read", "address file") else 0)
    assert publish_calls == (before if step == "address file" else [])

    d.coordinator.start()
    assert d.coordinator.wait_exit() == 0, d.coordinator.text()[-3000:]
    log = d.coordinator.text()
    after = ledgers_created_by(chain, signer.address)
    assert len(after) == 1, after
    assert address_file.read_text(encoding="utf-8").strip() == after[0]
    if before:
        assert after == before
        assert log.count("event=ledger_found ") == 1 and "event=ledger_deployed" not in log, log
    else:
        assert log.count("event=ledger_deployed ") == 1 and "event=ledger_found" not in log, log
    assert "event=federation_finished rounds=1" in log
    chain.close()


def _rpc(url: str, method: str, *params: Any) -> Any:
    answer = requests.post(url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}, timeout=10)
    body = answer.json()
    assert "error" not in body, body
    return body["result"]


def test_a_coordinator_restarted_while_its_deploy_transaction_is_still_pending_waits_for_it(deployment: Any) -> None:
    # anvil's automine off: the deploy transaction sent by the first run stays pending, its
    # ledger without code, until the second run's wait mines a block (a dev node's prepare).
    d = _configure(deployment)
    config = load_node_config(d.root / "coordinator.toml", role="coordinator")
    signer = Signer.from_keystore(config.keystore, d.password, "coordinator")
    pacing = Pacing(poll_seconds=0.2, backoff_max=1.0, outage_seconds=30)
    chain = ResilientRpcChain(d.anvil.url, pacing=pacing, dev=True)
    chain.fund(signer.address)
    store = open_store(config.store)
    _rpc(d.anvil.url, "evm_setAutomine", False)
    with pytest.raises(Crash):
        deploy_ledger(config, StopAfterChainCall(chain, "send_raw_transaction"), signer, store, pacing)
    assert chain.w3.eth.get_transaction_count(signer.address, "pending") == 1
    assert chain.w3.eth.get_transaction_count(signer.address, "latest") == 0
    ledger = deploy_ledger(config, chain, signer, store, pacing)  # the restart
    assert ledgers_created_by(chain, signer.address) == [ledger.address]
    _rpc(d.anvil.url, "evm_setAutomine", True)
    d.coordinator.start()
    assert d.coordinator.wait_exit() == 0, d.coordinator.text()[-3000:]
    assert ledgers_created_by(chain, signer.address) == [ledger.address]
    chain.close()


def test_a_coordinator_killed_right_after_sending_the_deploy_transaction_finds_its_ledger_on_restart(
    deployment: Any,
) -> None:
    # With anvil's automine off the deploy transaction stays pending until a block is mined, so
    # the kill lands between the send and the receipt for certain (anvil mines at once otherwise).
    d = _configure(deployment)
    address_file = d.root / "shared" / "ledger.address"
    coordinator = d.addresses["coordinator"]
    _rpc(d.anvil.url, "evm_setAutomine", False)
    d.coordinator.start()
    d.coordinator.wait_for("event=deploy_sent ")
    d.coordinator.kill()
    assert not address_file.exists()
    pending = int(_rpc(d.anvil.url, "eth_getTransactionCount", coordinator, "pending"), 16)
    assert int(_rpc(d.anvil.url, "eth_getTransactionCount", coordinator, "latest"), 16) == pending - 1
    _rpc(d.anvil.url, "evm_setAutomine", True)  # the restarted process meets the deploy still pending
    d.coordinator.start()
    assert d.coordinator.wait_exit() == 0, d.coordinator.text()[-3000:]
    chain = ResilientRpcChain(d.anvil.url, dev=True)
    ledgers = ledgers_created_by(chain, coordinator)
    assert len(ledgers) == 1, ledgers
    assert address_file.read_text(encoding="utf-8").strip() == ledgers[0]
    second = d.coordinator.last_run()
    assert "event=ledger_found " in second and "event=ledger_deployed" not in second, second
    assert "event=federation_finished rounds=1" in second
    chain.close()
