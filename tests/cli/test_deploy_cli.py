"""`fedchain deploy` against a real anvil node, key from the environment, never the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedchain.chain import Ledger, Signer, connect
from fedchain.chain.anvil import AnvilNode
from fedchain.cli import main
from fedchain.hashing import parse_digest
from fedchain.storage import LocalBlockStore


def test_deploy_prints_the_ledger_and_stores_the_genesis_model(
    anvil_node: AnvilNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    signer = Signer.create()
    monkeypatch.setenv("FEDCHAIN_PRIVATE_KEY", "0x" + signer._account.key.hex())
    assert main(["deploy", "--rpc", anvil_node.url, "--store", str(tmp_path / "store"), "--fund", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    ledger = Ledger(connect(anvil_node.url), out["ledger"])
    assert ledger.info().coordinator == signer.address
    assert ledger.info().genesis_hash == parse_digest(out["genesis_hash"])
    assert LocalBlockStore(tmp_path / "store").has(out["genesis_cid"])


def test_deploy_without_a_key_says_how_to_give_one(
    anvil_node: AnvilNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("FEDCHAIN_PRIVATE_KEY", raising=False)
    assert main(["deploy", "--rpc", anvil_node.url, "--store", str(tmp_path / "store")]) == 1
    assert "--keystore" in capsys.readouterr().err


def test_deploy_to_an_unreachable_node_fails_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FEDCHAIN_PRIVATE_KEY", "0x" + Signer.create()._account.key.hex())
    assert main(["deploy", "--rpc", "http://127.0.0.1:9", "--store", str(tmp_path / "store")]) == 1
    assert "127.0.0.1:9" in capsys.readouterr().err
