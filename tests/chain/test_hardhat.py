"""Hardhat Network as a second real node: its dev-method dialect, and the demo and audit on it.

The ledger tests themselves run on hardhat through the ``chain`` fixture (its ``hardhat``
parameter); these check what differs from anvil.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from web3 import Web3

from fedchain.chain import RpcChain, Signer, connect
from fedchain.chain.anvil import AnvilNode
from fedchain.chain.connection import DEV_FUNDING_WEI
from fedchain.chain.hardhat import CHAIN_ID, HardhatNode
from fedchain.errors import ChainError

pytestmark = pytest.mark.hardhat


def _rpc(chain: RpcChain, method: str, params: list[object]) -> dict[str, object]:
    response = chain.w3.provider.make_request(method, params)  # type: ignore[arg-type]
    return dict(response)


def test_the_node_is_hardhat_network_on_cancun_with_chain_id_31337(hardhat_node: HardhatNode) -> None:
    chain = connect(hardhat_node.url)
    assert isinstance(chain, RpcChain)
    assert chain.chain_id == CHAIN_ID == 31337
    assert str(chain.w3.client_version).startswith("HardhatNetwork/2.28.6/")
    # Cancun's blob fields are in every block header.
    assert "blobGasUsed" in chain.w3.eth.get_block("latest")
    chain.close()


def test_hardhat_refuses_anvil_set_balance_so_fund_falls_back_to_hardhat_set_balance(
    hardhat_node: HardhatNode,
) -> None:
    chain = connect(hardhat_node.url)
    assert isinstance(chain, RpcChain)
    who = Signer.create("hardhat-funded").address
    refused = _rpc(chain, "anvil_setBalance", [who, hex(1)])
    assert isinstance(refused["error"], dict) and refused["error"]["code"] == -32004
    chain.fund(who)
    assert chain.w3.eth.get_balance(Web3.to_checksum_address(who)) == DEV_FUNDING_WEI
    chain.fund(who, 12345)
    assert chain.w3.eth.get_balance(Web3.to_checksum_address(who)) == 12345
    chain.close()


def test_fund_on_anvil_still_uses_anvil_set_balance(anvil_node: AnvilNode) -> None:
    chain = connect(anvil_node.url)
    who = Signer.create("anvil-funded").address
    chain.fund(who, 777)
    assert isinstance(chain, RpcChain)
    assert chain.w3.eth.get_balance(Web3.to_checksum_address(who)) == 777
    chain.close()


def test_advance_time_moves_the_next_block_on_hardhat(hardhat_node: HardhatNode) -> None:
    chain = connect(hardhat_node.url)
    assert isinstance(chain, RpcChain)
    before = int(chain.w3.eth.get_block("latest")["timestamp"])
    chain.advance_time(3600)
    after = int(chain.w3.eth.get_block("latest")["timestamp"])
    assert after >= before + 3600
    assert chain.now() >= after
    chain.close()


def test_a_refused_set_balance_is_an_error_after_trying_each_dialect_once(hardhat_node: HardhatNode) -> None:
    chain = connect(hardhat_node.url)
    assert isinstance(chain, RpcChain)
    # anvil_setBalance is unknown to hardhat, so hardhat_setBalance is tried; its refusal of a
    # negative balance is an answer, not "unknown method", so it is the error raised.
    with pytest.raises(ChainError, match="cannot fund.*hardhat_setBalance answered"):
        chain.fund("0x" + "11" * 20, -1)
    chain.close()


@pytest.mark.slow
def test_the_demo_runs_and_audits_clean_on_hardhat(
    hardhat_node: HardhatNode, tmp_path: Path, repo_env: dict[str, str]
) -> None:
    workdir = tmp_path / "demo"
    demo = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedchain",
            "demo",
            "--rpc",
            hardhat_node.url,
            "--rounds",
            "1",
            "--workdir",
            str(workdir),
        ],
        check=False,
        capture_output=True,
        text=True,
        env=repo_env,
        timeout=600,
    )
    assert demo.returncode == 0, demo.stderr[-2000:]
    assert json.loads((workdir / "federation.json").read_text())["rpc"] == hardhat_node.url
    audit = subprocess.run(
        [sys.executable, "-m", "fedchain", "audit", "--workdir", str(workdir)],
        check=False,
        capture_output=True,
        text=True,
        env=repo_env,
        timeout=600,
    )
    assert audit.returncode == 0, audit.stderr[-2000:]
    assert "3 recorded, 3 valid, 3 included" in audit.stdout  # one round, every hospital in it
