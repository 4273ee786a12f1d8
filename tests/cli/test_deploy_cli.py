"""`fedchain deploy` against a real anvil node, key from the environment, never the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedchain.chain import Ledger, Signer, connect
from fedchain.chain.anvil import AnvilNode
from fedchain.cli import main
from fedchain.hashing import parse_digest
from fedchain.protocol import load_rules
from fedchain.storage import LocalBlockStore

SMALL = ["--set", "num_buckets=512", "--set", "dim=8"]


def test_deploy_prints_the_ledger_and_stores_the_manifest_and_genesis_model(
    anvil_node: AnvilNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    signer = Signer.create()
    monkeypatch.setenv("FEDCHAIN_PRIVATE_KEY", "0x" + signer._account.key.hex())
    argv = ["deploy", "--rpc", anvil_node.url, "--store", str(tmp_path / "store"), "--fund", "--json", *SMALL]
    assert main([*argv, "--server-lr", "0.5", "--min-updates", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    chain = connect(anvil_node.url)
    ledger = Ledger(chain, out["ledger"])
    info = ledger.info()
    assert (info.coordinator, out["reused"]) == (signer.address, False)
    assert info.genesis_hash == parse_digest(out["genesis_hash"])
    assert info.manifest_hash == parse_digest(out["manifest_hash"])
    store = LocalBlockStore(tmp_path / "store")
    assert store.has(out["genesis_cid"]) and store.has(out["manifest_cid"])
    rules = load_rules(ledger, store)  # what every party reads: the flags are in the manifest
    assert (rules.manifest.server_lr, rules.min_updates, rules.schema.shapes["embedding.weight"]) == (0.5, 2, (512, 8))
    # deploying again with the same key and rules finds the same ledger
    assert main([*argv, "--server-lr", "0.5", "--min-updates", "2"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert (again["ledger"], again["reused"]) == (out["ledger"], True)
    chain.close()


def test_deploy_without_a_key_says_how_to_give_one(
    anvil_node: AnvilNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("FEDCHAIN_PRIVATE_KEY", raising=False)
    assert main(["deploy", "--rpc", anvil_node.url, "--store", str(tmp_path / "store"), *SMALL]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("fedchain deploy: error: ") and "--keystore" in line


def test_deploy_with_a_malformed_key_exits_2_without_echoing_it(
    anvil_node: AnvilNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FEDCHAIN_PRIVATE_KEY", "0xnot-a-key-but-a-secret")
    assert main(["deploy", "--rpc", anvil_node.url, "--store", str(tmp_path / "store"), *SMALL]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("fedchain deploy: error: ") and "not-a-key-but-a-secret" not in line


def test_deploy_with_a_missing_keystore_exits_2(
    anvil_node: AnvilNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.json"
    argv = ["deploy", "--rpc", anvil_node.url, "--store", str(tmp_path / "store"), "--keystore", str(missing), *SMALL]
    monkeypatch.delenv("FEDCHAIN_KEY_PASSWORD", raising=False)
    assert main(argv) == 2  # no terminal to prompt on: says so, names the keystore
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("fedchain deploy: error: FEDCHAIN_KEY_PASSWORD") and str(missing) in line
    monkeypatch.setenv("FEDCHAIN_KEY_PASSWORD", "secret")
    assert main(argv) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"fedchain deploy: error: {missing}") and "cannot read keystore" in line
    assert not (tmp_path / "store").exists()  # nothing created before the key is known


def test_deploy_to_an_unreachable_node_fails_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FEDCHAIN_PRIVATE_KEY", "0x" + Signer.create()._account.key.hex())
    assert main(["deploy", "--rpc", "http://127.0.0.1:9", "--store", str(tmp_path / "store"), *SMALL]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("fedchain deploy: error: ") and "127.0.0.1:9" in line
