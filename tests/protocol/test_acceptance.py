"""Acceptance tests of protocol v2 that need no separate processes.

A look-alike contract, a wrong aggregate laundered through an empty round, finite updates near the
float32 limit, the manifest as the only source of the rules, and the audit of a truncated history.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support.federation import audit, crafted, full, honest_round, make, small_manifest, submit

from fedchain.chain import EmbeddedChain, Ledger, connect
from fedchain.chain._revert import RevertDecoder
from fedchain.chain.anvil import AnvilNode
from fedchain.chain.compile import SETTINGS, _run_compiler, default_contracts_dir, find_compiler
from fedchain.chain.ledger import _send
from fedchain.cli import main
from fedchain.errors import ConfigError, UnknownContractError, VerificationError
from fedchain.hashing import sha256
from fedchain.orchestrator.participant import Participant
from fedchain.protocol import check_against
from fedchain.records import RoundStatus
from fedchain.storage import LocalBlockStore
from fedchain.tasks.api import DemoData

LOOK_ALIKE = Path(__file__).parents[1] / "chain" / "fixtures" / "LookAlikeLedger.sol"


# ---------------------------------------------------------------------------------------- a look-alike


@pytest.fixture(scope="module")
def look_alike() -> dict[str, Any]:
    """The look-alike contract (the ledger's events and views, none of its rules), compiled with solc-js."""
    interface = (default_contracts_dir() / "IFederatedLedger.sol").read_text(encoding="utf-8")
    source = {
        "language": "Solidity",
        "sources": {
            "IFederatedLedger.sol": {"content": interface},
            "LookAlikeLedger.sol": {"content": LOOK_ALIKE.read_text(encoding="utf-8")},
        },
        "settings": json.loads(json.dumps(SETTINGS)),
    }
    contract = _run_compiler(find_compiler(), source)["contracts"]["LookAlikeLedger.sol"]["LookAlikeLedger"]
    return {"abi": contract["abi"], "bytecode": "0x" + contract["evm"]["bytecode"]["object"]}


def test_a_look_alike_ledger_fails_the_audit_and_a_participant_refuses_it(
    anvil_node: AnvilNode,
    tmp_path: Path,
    demo: DemoData,
    look_alike: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    chain = connect(anvil_node.url)
    # a real federation's manifest and genesis in the store, so only the contract is fake
    fed = make(chain, LocalBlockStore(tmp_path / "store"), demo)
    signer = fed.coordinator.signer
    factory = chain.w3.eth.contract(abi=look_alike["abi"], bytecode=look_alike["bytecode"])
    info = fed.ledger.info()
    data = factory.constructor(
        bytes(info.genesis_hash), fed.ledger.genesis_cid(), bytes(info.manifest_hash), fed.ledger.manifest_cid()
    ).data_in_transaction
    _, receipt = _send(chain, signer, "deploy look-alike", None, data, RevertDecoder(look_alike["abi"]))
    address = str(receipt["contractAddress"])
    capsys.readouterr()
    argv = ["audit", "--rpc", anvil_node.url, "--ledger", address, "--store", str(tmp_path / "store")]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert out.startswith("audit FAILED") and address in out and "unknown contract code" in out
    assert main([*argv, "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and report["ledger"] == address
    assert [f["check"] for f in report["failures"]] == ["unknown contract code"]
    with pytest.raises(UnknownContractError, match="unknown contract code") as err:
        Ledger(chain, address)  # what a participant (and the coordinator) does before anything else
    assert err.value.address == address
    chain.close()


# ------------------------------------------------------------------ a wrong aggregate, then an empty round


@pytest.mark.parametrize("empty", ["abandoned", "finalized-after-deadline"])
def test_a_wrong_aggregate_cannot_be_laundered_through_an_empty_round(
    tmp_path: Path, demo: DemoData, empty: str
) -> None:
    chain = EmbeddedChain()
    fed = make(chain, LocalBlockStore(tmp_path / "s"), demo)
    signer = fed.coordinator.signer
    r0 = honest_round(fed)
    fed.coordinator.close(r0)
    bogus = bytes(fed.store.get(fed.ledger.genesis_cid()))
    bogus_cid = fed.store.put(bogus + b"\0")  # some other model: the genesis with a byte added
    bogus_hash = sha256(bogus + b"\0")
    fed.ledger.finalize_round(signer, r0, bogus_hash, bogus_cid, [p.address for p in fed.participants])
    # round 1: built on the wrong aggregate, nobody submits, and it ends without changing the base
    fed.ledger.open_round(signer, 1, bogus_hash, bogus_cid, chain.now() + 60, 3)
    chain.advance_time(120)
    fed.ledger.close_round(signer, 1)
    if empty == "abandoned":
        fed.ledger.abandon_round(signer, 1)
    else:  # past its deadline an empty round may be finalized on the same model
        fed.ledger.finalize_round(signer, 1, bogus_hash, bogus_cid, [])
    base = fed.ledger.last_aggregate()
    assert base == bogus_hash
    fed.ledger.open_round(signer, 2, base, bogus_cid, chain.now() + 600, 3)
    for p in (
        *fed.participants,
        Participant(
            fed.ledger, fed.participants[0].signer, fed.store, fed.rules, fed.task, fed.participants[0].data, "fresh"
        ),
    ):
        with pytest.raises(VerificationError) as err:
            p.participate(2)
        assert err.value.round_id == r0, err.value
        assert not p.has_submitted(2)
    assert fed.ledger.round_history(2).updates == ()
    with pytest.raises(VerificationError) as caught:
        fed.participants[1].catch_up(2)
    assert caught.value.round_id == r0
    report = audit(fed)
    assert not report.ok
    assert report.all_failures[0].round_id == r0 and report.rounds[0].failures[0].what == "aggregate (recomputed)"
    if empty == "abandoned":  # the abandoned round changed nothing: only round 0 is wrong
        assert [v.ok for v in report.rounds] == [False, True, True]
    else:  # the empty round's "aggregate" is no recomputation of its (unreadable) base either
        assert [v.ok for v in report.rounds] == [False, False, True]
        assert all(f.round_id == 1 for f in report.rounds[1].failures)
    assert report.rounds[2].status is RoundStatus.OPEN


# ------------------------------------------------------------------------ near the float32 limit


@pytest.mark.parametrize("server_lr", [1.0, 2.0])
def test_finite_updates_near_the_float32_limit_are_excluded_and_the_federation_completes(
    tmp_path: Path, demo: DemoData, server_lr: float
) -> None:
    chain = EmbeddedChain()
    manifest = small_manifest(aggregation={"rule": "fedavg", "server_lr": server_lr})
    fed = make(chain, LocalBlockStore(tmp_path / "s"), demo, manifest)
    big, opposite = fed.attacker("big"), fed.attacker("opposite")
    r = fed.coordinator.open_round()
    near = float(np.finfo(np.float32).max) / 2  # finite; two of them sum to infinity, one times 2 too
    submit(fed, big, r, crafted(fed, big, r, full(fed.rules, near)))
    one_element = {k: np.zeros_like(v) for k, v in full(fed.rules, 0.0).items()}
    one_element["fc.bias"][0] = np.float32(np.finfo(np.float32).max)
    submit(fed, opposite, r, crafted(fed, opposite, r, one_element))
    summaries = fed.run(3)  # the services take over the open round
    assert [(s.status, s.included, s.excluded) for s in summaries] == [("finalized", 3, 2)] + [("finalized", 3, 0)] * 2
    report = audit(fed)
    assert report.ok
    assert {e.participant: e.reason for e in report.rounds[0].excluded} == {
        big.address: "norm",
        opposite.address: "norm",
    }


# ----------------------------------------------------------------------------------- the manifest


def test_an_audit_with_only_rpc_ledger_and_store_reads_every_rule_from_the_manifest(
    anvil_node: AnvilNode, tmp_path: Path, demo: DemoData, capsys: pytest.CaptureFixture[str]
) -> None:
    chain = connect(anvil_node.url)
    manifest = small_manifest(aggregation={"rule": "fedavg", "server_lr": 0.5}, min_updates=2)
    fed = make(chain, LocalBlockStore(tmp_path / "store"), demo, manifest)
    fed.run(2)
    chain.close()
    capsys.readouterr()
    argv = ["audit", "--rpc", anvil_node.url, "--ledger", fed.ledger.address, "--store", str(tmp_path / "store")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("audit PASSED") and "(server_lr 0.5)" in out and "quorum 2" in out
    assert main([*argv, "--server-lr", "1.0"]) == 2  # the flag is gone: the rules are the manifest's
    assert "unrecognized arguments: --server-lr" in capsys.readouterr().err


def test_a_node_whose_rules_differ_from_the_manifest_is_refused_naming_the_field() -> None:
    manifest = small_manifest(aggregation={"rule": "fedavg", "server_lr": 0.5}, max_update_norm=50.0)
    check_against(
        manifest, {"max_update_norm": 50, "aggregation.server_lr": 0.5, "rounds.min_updates": 3}, source="node.toml"
    )
    with pytest.raises(ConfigError) as err:
        check_against(manifest, {"max_update_norm": 100.0}, source="node.toml")
    assert err.value.key == "max_update_norm" and "100.0" in str(err.value) and "50.0" in str(err.value)
    with pytest.raises(ConfigError) as err:
        check_against(manifest, {"aggregation.server_lr": 1.0, "max_update_norm": 50.0}, source="node.toml")
    assert err.value.key == "aggregation.server_lr" and "node.toml" in str(err.value)
    with pytest.raises(ConfigError) as err:
        check_against(manifest, {"aggregation.rule": "median"}, source="node.toml")
    assert err.value.key == "aggregation.rule"
    with pytest.raises(ConfigError) as err:
        check_against(manifest, {"aggregation.learning_rate": 0.5}, source="node.toml")
    assert err.value.key == "aggregation.learning_rate" and "no such rule" in str(err.value)
    with pytest.raises(ConfigError):  # a bool is not the number 1
        check_against(
            small_manifest(aggregation={"rule": "fedavg", "server_lr": 1.0}),
            {"aggregation.server_lr": True},
            source="x",
        )


# ------------------------------------------------------------- the audit of a truncated journal


@pytest.fixture(scope="module")
def finished_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from support.federation import run_small_demo

    workdir = tmp_path_factory.mktemp("demo") / "demo"
    result = run_small_demo(workdir, rounds=3, manifest=small_manifest(min_updates=2))
    assert result.audit.ok
    return workdir


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def _journal_cut(workdir: Path, keep_round: int, event: str) -> int:
    """How many journal lines hold the chain up to (and including) ``event`` of round ``keep_round``."""
    chain, ledger, _, _ = __import__("fedchain.orchestrator.federation", fromlist=["open_workdir"]).open_workdir(
        workdir
    )
    try:
        h = ledger.round_history(keep_round)
        # updates are sorted by address, not by block
        block = {"opened": h.opened.block_number, "first-update": min(u.block_number for u in h.updates)}[event]
    finally:
        chain.close()
    lines = (workdir / "chain.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    mined = 0
    for n, line in enumerate(lines, start=1):
        if json.loads(line).get("kind") != "genesis":
            mined += 1
        if mined >= block:
            return n
    raise AssertionError("block not in the journal")


def test_a_truncated_journal_audits_what_it_holds_and_names_the_open_round(
    finished_demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    workdir = _copy(finished_demo, tmp_path / "demo")
    journal = workdir / "chain.jsonl"
    cut = _journal_cut(workdir, 2, "first-update")
    journal.write_text("".join(journal.read_text(encoding="utf-8").splitlines(keepends=True)[:cut]), encoding="utf-8")
    capsys.readouterr()
    assert main(["audit", "--workdir", str(workdir)]) == 0
    out = capsys.readouterr().out
    assert "2 rounds ended (2 finalized); round 2 is open (not yet verifiable)" in out
    [line] = [x for x in out.splitlines() if x.strip().startswith("round 2 ")]
    assert line.strip().startswith("round 2 open: 1 recorded, 1 valid, 0 included, aggregate -: open")
    assert not line.rstrip().endswith("ok")
    assert main(["audit", "--workdir", str(workdir), "--expect-rounds", "3"]) == 1
    out = capsys.readouterr().out
    assert "expected at least 3" in out and "history length" in out
    assert main(["audit", "--workdir", str(workdir), "--expect-rounds", "3", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and [f["check"] for f in report["failures"]] == ["history length"]
    assert (report["rounds_ended"], report["open_round"], report["rounds"][2]["status"]) == (2, 2, "open")
    assert main(["audit", "--workdir", str(workdir), "--expect-rounds", "2"]) == 0


def test_the_json_report_lists_a_failure_whenever_it_is_not_ok(
    finished_demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    workdir = _copy(finished_demo, tmp_path / "demo")
    capsys.readouterr()
    assert main(["audit", "--workdir", str(workdir), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True and report["failures"] == [] and all(r["ok"] for r in report["rounds"])
    assert [(r["recorded"], r["valid"], r["included"]) for r in report["rounds"]] == [(3, 3, 3)] * 3
    # damage one block of round 1's aggregate: a failure, named as store damage
    from fedchain.orchestrator.federation import open_workdir
    from fedchain.storage._cid import block_key, parse_cid
    from fedchain.storage._unixfs import iter_dag

    chain, ledger, store, _ = open_workdir(workdir)
    cid = ledger.round_history(1).aggregate.cid  # type: ignore[union-attr]
    chain.close()
    ref = next(ref for ref, _ in iter_dag(store._read_block, parse_cid(cid)))
    key = block_key(ref)
    path = workdir / "store" / "blocks" / key[-3:-1] / f"{key}.data"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    path.write_bytes(bytes(raw))
    assert main(["audit", "--workdir", str(workdir), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and report["failures"]
    assert [(f["round"], f["check"]) for f in report["failures"]] == [
        (1, "store damage (aggregate)"),
        (2, "store damage (base model)"),
    ]
    assert all(str(ref) in f["actual"] for f in report["failures"])
    assert [r["ok"] for r in report["rounds"]] == [True, False, False]
    assert main(["audit", "--workdir", str(workdir)]) == 1
    out = capsys.readouterr().out
    assert "store damage (aggregate)" in out and str(ref) in out


def test_a_mistyped_store_is_exit_2_and_creates_nothing(
    finished_demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mistyped = tmp_path / "stroe"
    assert main(["audit", "--rpc", "http://127.0.0.1:9", "--ledger", "0x" + "11" * 20, "--store", str(mistyped)]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("fedchain audit: error: ") and str(mistyped) in line
    assert not mistyped.exists()


def test_the_counts_printed_are_the_chains(tmp_path: Path, demo: DemoData, capsys: pytest.CaptureFixture[str]) -> None:
    """A coordinator that records 2 of 3 valid updates as included: the audit says 2 included, never 3."""
    chain = EmbeddedChain()
    fed = make(chain, LocalBlockStore(tmp_path / "s"), demo, small_manifest(min_updates=2))
    r = honest_round(fed)
    history = fed.ledger.round_history(r)
    fed.coordinator.close(r)
    fed.ledger.finalize_round(
        fed.coordinator.signer, r, sha256(b"x"), history.opened.base_cid, [u.participant for u in history.updates[:2]]
    )
    from rich.console import Console

    from fedchain.cli._common import print_audit

    console = Console(soft_wrap=True, highlight=False, file=None)
    with console.capture() as captured:
        assert print_audit(console, audit(fed)) == 1
    out = captured.get()
    assert "round 0 finalized: 3 recorded, 3 valid, 2 included, aggregate 0x" in out
    assert "3 included" not in out
    assert audit(fed).to_json()["rounds"][0]["included"] == 2
