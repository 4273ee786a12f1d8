"""A transaction in flight while the chain node restarts is mined exactly once."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from hexbytes import HexBytes

from fedchain.chain import Pacing, ResilientRpcChain, Signer
from fedchain.chain.anvil import AnvilNode

PACING = Pacing(poll_seconds=0.2, backoff_max=1.0, outage_seconds=60)


def _transfer(chain: ResilientRpcChain, signer: Signer, nonce: int) -> bytes:
    base_fee = int(chain.w3.eth.get_block("latest")["baseFeePerGas"])
    tx = {
        "type": 2,
        "chainId": chain.chain_id,
        "nonce": nonce,
        "to": "0x" + "11" * 20,
        "value": 1,
        "gas": 21_000,
        "maxFeePerGas": 2 * base_fee + 10**9,
        "maxPriorityFeePerGas": 10**9,
    }
    return bytes(signer.sign(tx))


def test_a_transaction_sent_while_the_node_is_down_is_mined_once_when_it_is_back(tmp_path: Path) -> None:
    node = AnvilNode(state_file=tmp_path / "state.json").start()
    try:
        chain = ResilientRpcChain(node.url, retries=2, backoff=0.1, pacing=PACING, dev=True)
        signer = Signer.create("sender")
        chain.fund(signer.address)
        raw = _transfer(chain, signer, 0)
        node.stop()
        result: dict[str, Any] = {}

        def send() -> None:
            tx_hash = chain.send_raw_transaction(raw)
            result["receipt"] = chain.wait_for_receipt(tx_hash)

        sender = threading.Thread(target=send)
        sender.start()
        sender.join(timeout=2)
        assert sender.is_alive()  # still trying the same bytes
        node.start()
        sender.join(timeout=60)
        assert not sender.is_alive()
        receipt = result["receipt"]
        assert receipt["status"] == 1
        assert HexBytes(receipt["transactionHash"]) == HexBytes(chain.w3.keccak(raw))
        assert chain.w3.eth.get_transaction_count(signer.address) == 1
    finally:
        node.stop()


def test_a_mined_transaction_lost_in_a_node_crash_is_rebroadcast_with_the_same_bytes(tmp_path: Path) -> None:
    node = AnvilNode(state_file=tmp_path / "state.json").start()
    try:
        chain = ResilientRpcChain(node.url, retries=2, backoff=0.1, pacing=PACING, dev=True)
        signer = Signer.create("sender")
        chain.fund(signer.address)
        node.stop()  # dump the funded state
        node.start()
        raw = _transfer(chain, signer, 0)
        tx_hash = chain.send_raw_transaction(raw)
        node.stop(kill=True)  # SIGKILL within milliseconds: the mined block is usually not dumped
        node.start()
        receipt = chain.wait_for_receipt(tx_hash)
        assert receipt["status"] == 1
        assert HexBytes(receipt["transactionHash"]) == tx_hash
        assert chain.w3.eth.get_transaction_count(signer.address) == 1
    finally:
        node.stop()
