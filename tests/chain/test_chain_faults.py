"""A chain node that is down, slow or erring: bounded retries, clear errors, nothing lost or doubled.

The faults are real: a URL nobody listens on, a real anvil stopped and restarted, and a small
HTTP proxy (:class:`FaultyProxy`) in front of a real anvil that drops connections (before or
after forwarding the request), delays answers, or answers HTTP or JSON-RPC errors, for the
next N requests of a given method, then forwards faithfully again. The proxy is the one
stand-in here, for faults a healthy local node cannot be made to show.
"""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from web3 import Web3

from fedchain.chain import Ledger, RpcChain, Signer, connect
from fedchain.chain.anvil import AnvilNode, free_port
from fedchain.errors import (
    ChainConnectionError,
    ChainError,
    ContractRevertError,
    TransactionError,
)
from fedchain.hashing import sha256
from fedchain.records import RoundStatus
from fedchain.types import Cid

pytestmark = pytest.mark.anvil

GENESIS = sha256(b"faults genesis")
CID = Cid("QmFaults")


# --------------------------------------------------------------------------- the faulty proxy


@dataclass
class Fault:
    """What to do to the next ``times`` requests for ``method`` (any method if ``None``).

    ``kind`` is ``drop`` (close the connection, request never forwarded), ``drop-after``
    (forward, then close without answering: the node acted, the client never hears),
    ``delay`` (forward after ``seconds``), ``http`` (answer HTTP ``status``) or ``rpc``
    (answer a JSON-RPC error ``code``).
    """

    kind: str
    times: int
    method: str | None = None
    seconds: float = 0.0
    status: int = 500
    code: int = -32005


class FaultyProxy:
    """An HTTP proxy to a JSON-RPC node that misbehaves on request."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.faults: list[Fault] = []
        self.seen: list[tuple[str, Any]] = []  # (method, params) of every request received
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                request = json.loads(body)
                method = request.get("method", "") if isinstance(request, dict) else "batch"
                fault = proxy._take(method, request.get("params") if isinstance(request, dict) else None)
                if fault is not None and fault.kind == "drop":
                    return self._drop()
                if fault is not None and fault.kind == "http":
                    return self._answer(fault.status, b'{"message": "injected failure"}')
                if fault is not None and fault.kind == "rpc":
                    error = {"code": fault.code, "message": "injected JSON-RPC error"}
                    return self._answer(
                        200, json.dumps({"jsonrpc": "2.0", "id": request.get("id"), "error": error}).encode()
                    )
                if fault is not None and fault.kind == "delay":
                    time.sleep(fault.seconds)
                upstream = requests.post(
                    proxy.upstream, data=body, headers={"Content-Type": "application/json"}, timeout=30
                )
                if fault is not None and fault.kind == "drop-after":
                    return self._drop()
                self._answer(upstream.status_code, upstream.content)

            def _answer(self, status: int, payload: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _drop(self) -> None:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that timed out and left: what the slow-node tests ask for

        self._server = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def inject(self, *faults: Fault) -> None:
        with self._lock:
            self.faults.extend(faults)

    def calls(self, method: str) -> list[Any]:
        """The params of every request for ``method`` the proxy received."""
        with self._lock:
            return [params for m, params in self.seen if m == method]

    def _take(self, method: str, params: Any) -> Fault | None:
        with self._lock:
            self.seen.append((method, params))
            for fault in self.faults:
                if fault.times > 0 and fault.method in (None, method):
                    fault.times -= 1
                    return fault
            return None

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def proxy(anvil_node: AnvilNode) -> Iterator[FaultyProxy]:
    p = FaultyProxy(anvil_node.url)
    yield p
    p.close()


@pytest.fixture
def direct(anvil_node: AnvilNode) -> RpcChain:
    """A fault-free connection to the same node, to set up and to look behind the proxy."""
    return RpcChain(anvil_node.url)


@pytest.fixture
def coordinator(direct: RpcChain) -> Signer:
    signer = Signer.create("coordinator")
    direct.fund(signer.address)
    return signer


@pytest.fixture
def ledger_address(direct: RpcChain, coordinator: Signer) -> str:
    ledger, _ = Ledger.deploy(direct, coordinator, GENESIS, Cid("QmGenesis"), sha256(b"manifest"), Cid("QmManifest"))
    return ledger.address


def flaky(proxy: FaultyProxy, *, retries: int = 4, timeout: float = 5.0) -> RpcChain:
    """A connection through the proxy, with quick backoff (0.01 s, 0.02 s, ...)."""
    return RpcChain(proxy.url, retries=retries, backoff=0.01, timeout=timeout)


# --------------------------------------------------------------------------- unreachable


def test_a_node_nobody_listens_on_is_reported_by_url_after_the_retries() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(ChainConnectionError) as caught:
        RpcChain(url, retries=3, backoff=0.05)
    assert caught.value.endpoint == url
    assert str(caught.value).startswith(f"cannot reach chain node at {url}: eth_chainId:")
    assert "attempt 4" in caught.value.reason
    assert time.monotonic() - started >= 0.05 + 0.1 + 0.2  # the backoff was waited out


def test_connect_refuses_what_is_not_an_http_url() -> None:
    with pytest.raises(ChainConnectionError, match="expected an http"):
        connect("ws://127.0.0.1:8545")


# --------------------------------------------------------------------------- transient faults


@pytest.mark.parametrize(
    "fault",
    [
        Fault("drop", times=3),
        Fault("http", times=3, status=503),
        Fault("http", times=2, status=500),
        Fault("http", times=2, status=429),
        Fault("rpc", times=3, code=-32005),
        Fault("delay", times=2, seconds=0.6),
    ],
    ids=["dropped", "http-503", "http-500", "http-429", "rpc-limit-exceeded", "slow"],
)
def test_reads_are_retried_until_the_fault_clears(proxy: FaultyProxy, ledger_address: str, fault: Fault) -> None:
    chain = flaky(proxy, timeout=0.3)
    ledger = Ledger(chain, ledger_address)
    before = len(proxy.calls("eth_call"))
    proxy.inject(Fault(fault.kind, fault.times, "eth_call", fault.seconds, fault.status, fault.code))
    assert ledger.next_round() == 0
    assert len(proxy.calls("eth_call")) - before == fault.times + 1


def test_a_fault_that_outlasts_the_retries_names_the_url_and_the_method(
    proxy: FaultyProxy, ledger_address: str
) -> None:
    chain = flaky(proxy, retries=2)
    ledger = Ledger(chain, ledger_address)
    proxy.inject(Fault("http", times=100, method="eth_call", status=502))
    with pytest.raises(ChainConnectionError) as caught:
        ledger.next_round()
    assert caught.value.endpoint == proxy.url
    assert caught.value.reason == "eth_call: HTTP 502 (attempt 3)"
    assert len(proxy.calls("eth_call")) == 3


def test_a_node_slower_than_the_timeout_every_time_is_an_error_naming_it(
    proxy: FaultyProxy, ledger_address: str
) -> None:
    chain = flaky(proxy, retries=1, timeout=0.2)
    ledger = Ledger(chain, ledger_address)
    proxy.inject(Fault("delay", times=2, method="eth_call", seconds=0.5))
    with pytest.raises(ChainConnectionError, match=f"{proxy.url}: eth_call: .*timed out"):
        ledger.next_round()


def test_an_http_error_that_is_not_transient_is_not_retried(proxy: FaultyProxy, ledger_address: str) -> None:
    chain = flaky(proxy)
    ledger = Ledger(chain, ledger_address)
    proxy.inject(Fault("http", times=1, method="eth_call", status=404))
    with pytest.raises(ChainConnectionError, match="eth_call: HTTP 404 \\(attempt 1\\)"):
        ledger.next_round()
    assert ledger.next_round() == 0


def test_writes_ride_out_transient_faults_on_every_step(
    proxy: FaultyProxy, ledger_address: str, coordinator: Signer
) -> None:
    chain = flaky(proxy)
    ledger = Ledger(chain, ledger_address)
    coordinator.forget_nonce(chain.chain_id)  # so that the nonce is asked for, through the proxy
    proxy.inject(
        Fault("drop", times=1, method="eth_estimateGas"),
        Fault("http", times=1, method="eth_getTransactionCount", status=503),
        Fault("rpc", times=1, method="eth_sendRawTransaction", code=-32005),
        Fault("drop", times=1, method="eth_getTransactionReceipt"),
    )
    hospital = Signer.create().address
    ledger.register_participant(coordinator, hospital, 10)
    assert ledger.participant(hospital).registered
    assert all(f.times == 0 for f in proxy.faults)


# --------------------------------------------------------------------------- sends: never lost, never twice


def test_a_send_whose_answer_was_lost_is_found_on_the_node_not_sent_twice(
    proxy: FaultyProxy, direct: RpcChain, ledger_address: str, coordinator: Signer
) -> None:
    chain = flaky(proxy)
    ledger = Ledger(chain, ledger_address)
    nonce = direct.w3.eth.get_transaction_count(coordinator.address)
    # The node receives (and, automining, mines) the transaction; the client never hears back.
    proxy.inject(Fault("drop-after", times=1, method="eth_sendRawTransaction"))
    hospital = Signer.create().address
    result = ledger.register_participant(coordinator, hospital, 10)

    sends = proxy.calls("eth_sendRawTransaction")
    assert len(sends) == 2 and sends[0] == sends[1]  # retried with the very same bytes
    assert result.tx_hash == Web3.keccak(hexstr=sends[0][0]).to_0x_hex()
    assert direct.w3.eth.get_transaction_count(coordinator.address) == nonce + 1  # mined once
    assert ledger.participants()[-1].address == hospital
    # The next write picks the next nonce: nothing about the lost answer stayed behind.
    ledger.register_participant(coordinator, Signer.create().address, 10)
    assert direct.w3.eth.get_transaction_count(coordinator.address) == nonce + 2


def test_a_send_cut_off_for_good_raises_and_the_retried_call_finds_it_done(
    proxy: FaultyProxy, direct: RpcChain, ledger_address: str, coordinator: Signer
) -> None:
    chain = flaky(proxy, retries=2)
    ledger = Ledger(chain, ledger_address)
    nonce = direct.w3.eth.get_transaction_count(coordinator.address)
    proxy.inject(
        Fault("drop-after", times=1, method="eth_sendRawTransaction"),
        Fault("drop", times=2, method="eth_sendRawTransaction"),
    )
    hospital = Signer.create().address
    with pytest.raises(ChainConnectionError) as caught:
        ledger.register_participant(coordinator, hospital, 10)
    assert caught.value.endpoint == proxy.url and caught.value.reason.startswith("eth_sendRawTransaction:")

    # The fault has cleared. The transaction had reached the node: it is not lost...
    assert direct.w3.eth.get_transaction_count(coordinator.address) == nonce + 1
    assert ledger.participant(hospital).registered
    # ...and doing the call again does not do it twice: the contract says it is done.
    with pytest.raises(ContractRevertError, match="FederatedLedgerAlreadyRegistered"):
        ledger.register_participant(coordinator, hospital, 10)
    # The signer re-read its nonce from the chain: the next transaction goes through at once.
    ledger.register_participant(coordinator, Signer.create().address, 10)
    assert direct.w3.eth.get_transaction_count(coordinator.address) == nonce + 2


def test_a_node_refusing_a_send_is_a_transaction_error_and_leaves_no_nonce_gap(
    proxy: FaultyProxy, direct: RpcChain, ledger_address: str, coordinator: Signer
) -> None:
    chain = flaky(proxy)
    ledger = Ledger(chain, ledger_address)
    proxy.inject(Fault("rpc", times=1, method="eth_sendRawTransaction", code=-32000))
    with pytest.raises(TransactionError, match="injected JSON-RPC error"):
        ledger.register_participant(coordinator, Signer.create().address, 10)
    assert len(proxy.calls("eth_sendRawTransaction")) == 1  # an answer, not a fault: not retried
    nonce = direct.w3.eth.get_transaction_count(coordinator.address)
    ledger.register_participant(coordinator, Signer.create().address, 10)
    assert direct.w3.eth.get_transaction_count(coordinator.address) == nonce + 1


def test_a_failure_before_the_send_reserves_no_nonce(
    proxy: FaultyProxy, direct: RpcChain, ledger_address: str, coordinator: Signer
) -> None:
    chain = flaky(proxy, retries=1)
    ledger = Ledger(chain, ledger_address)
    ledger.register_participant(coordinator, Signer.create().address, 10)  # the signer caches its nonce
    proxy.inject(Fault("http", times=2, method="eth_getBlockByNumber", status=503))
    with pytest.raises(ChainConnectionError):
        ledger.register_participant(coordinator, Signer.create().address, 10)
    nonce = direct.w3.eth.get_transaction_count(coordinator.address)
    ledger.register_participant(coordinator, Signer.create().address, 10)  # no gap: mined at once
    assert direct.w3.eth.get_transaction_count(coordinator.address) == nonce + 1


def test_time_travel_is_not_retried_once_the_node_may_have_acted(proxy: FaultyProxy, direct: RpcChain) -> None:
    chain = flaky(proxy)
    before = int(direct.w3.eth.get_block("latest")["timestamp"])
    proxy.inject(Fault("drop-after", times=1, method="evm_increaseTime"))
    with pytest.raises(ChainConnectionError, match="evm_increaseTime"):
        chain.advance_time(10_000)
    assert len(proxy.calls("evm_increaseTime")) == 1
    direct.advance_time(0)  # mine a block to read the node's clock
    assert before + 10_000 <= int(direct.w3.eth.get_block("latest")["timestamp"]) < before + 20_000


def test_funding_on_a_node_without_the_development_methods_is_an_error(proxy: FaultyProxy) -> None:
    chain = flaky(proxy)
    # neither family of development methods (anvil_*, then hardhat_*) is known to this "node"
    proxy.inject(Fault("rpc", times=1, method="anvil_setBalance", code=-32601))
    proxy.inject(Fault("rpc", times=1, method="hardhat_setBalance", code=-32601))
    with pytest.raises(ChainError, match="cannot fund"):
        chain.fund(Signer.create().address)


# --------------------------------------------------------------------------- a node restarted


def test_a_node_restarted_from_its_state_file_carries_on(tmp_path: Path) -> None:
    state = tmp_path / "anvil-state.json"
    node = AnvilNode(state_file=state).start()
    try:
        chain = RpcChain(node.url)
        coordinator, hospitals = Signer.create("coordinator"), [Signer.create("a"), Signer.create("b")]
        for s in (coordinator, *hospitals):
            chain.fund(s.address)
        ledger, _ = Ledger.deploy(chain, coordinator, GENESIS, Cid("QmGenesis"), sha256(b"manifest"), Cid("QmManifest"))
        for h in hospitals:
            ledger.register_participant(coordinator, h.address, 10)
        ledger.open_round(coordinator, 0, GENESIS, CID, chain.now() + 3_600, 2)
        ledger.submit_update(hospitals[0], 0, sha256(b"a"), CID, 5)

        node.stop()  # SIGTERM: anvil writes its state
        with pytest.raises(ChainConnectionError):
            RpcChain(node.url, retries=1, backoff=0.01)
        node = AnvilNode(port=node.port, state_file=state).start()

        again = Ledger(RpcChain(node.url), ledger.address)
        assert again.round_state(0).status is RoundStatus.OPEN
        assert again.update_hash(0, hospitals[0].address) == sha256(b"a")
        for s in (coordinator, *hospitals):
            s.forget_nonce(again.chain.chain_id)  # a new connection to a restarted node: ask it
        again.submit_update(hospitals[1], 0, sha256(b"b"), CID, 5)
        again.close_round(coordinator, 0)
        again.finalize_round(coordinator, 0, sha256(b"agg"), CID, [h.address for h in hospitals])
        assert again.round_state(0).included_count == 2
    finally:
        node.stop()


def test_a_node_restored_to_an_older_state_is_caught_up_after_forgetting_nonces(tmp_path: Path) -> None:
    state = tmp_path / "anvil-state.json"
    node = AnvilNode(state_file=state).start()
    try:
        chain = RpcChain(node.url)
        coordinator = Signer.create("coordinator")
        chain.fund(coordinator.address)
        ledger, _ = Ledger.deploy(chain, coordinator, GENESIS, Cid("QmGenesis"), sha256(b"manifest"), Cid("QmManifest"))
        first = Signer.create().address
        ledger.register_participant(coordinator, first, 10)
        node.stop()
        shutil.copy(state, tmp_path / "older.json")
        node = AnvilNode(port=node.port, state_file=state).start()
        ledger = Ledger(RpcChain(node.url), ledger.address)
        lost = Signer.create().address
        ledger.register_participant(coordinator, lost, 10)  # the signer's cached nonce moves on
        node.stop()

        # The node comes back without its last transaction (a restore from an older backup).
        shutil.copy(tmp_path / "older.json", state)
        node = AnvilNode(port=node.port, state_file=state).start()
        behind = Ledger(RpcChain(node.url), ledger.address)
        assert [p.address for p in behind.participants()] == [first]
        # The cached nonce is one ahead of the node: a transaction signed with it would wait
        # in the node's queue forever. Forgetting it makes the next one ask the node.
        coordinator.forget_nonce(behind.chain.chain_id)
        behind.register_participant(coordinator, lost, 10)
        assert [p.address for p in behind.participants()] == [first, lost]
    finally:
        node.stop()
