"""The example Flower app under the simulation engine, plain and audited, and the audit of its ledger."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Context, Message
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable
from flwr.serverapp.strategy import FedAvg, FedAvgM, FedMedian, FedTrimmedAvg, Krum, MultiKrum

from fedchain.cli import main as cli
from fedchain.errors import ConfigError
from fedchain.flower import aggregation_for, fedchain_mod, settings_from_context
from fedchain.orchestrator.federation import demo_signer

os.environ.setdefault("OMP_NUM_THREADS", "1")

import run as example
from flower_app import client_app

NODES, ROUNDS = 3, 2


@pytest.fixture(scope="module")
def plain() -> dict[str, float]:
    metrics, _ = example.simulate(nodes=NODES, rounds=ROUNDS, audited=False)
    return metrics


@pytest.fixture(scope="module")
def audited_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, float], Path]:
    workdir = tmp_path_factory.mktemp("audited")
    metrics, _ = example.simulate(nodes=NODES, rounds=ROUNDS, audited=True, workdir=workdir)
    return metrics, workdir


def test_the_audited_run_reaches_the_plain_runs_accuracy(
    plain: dict[str, float], audited_run: tuple[dict[str, float], Path]
) -> None:
    audited, _ = audited_run
    assert plain["accuracy"] > 0.5  # it learned something: 10 classes, chance is 0.1
    # fedchain's FedAvg sums in a fixed order in float64, Flower's in arrival order in float32:
    # the models differ by rounding only
    assert audited["accuracy"] == pytest.approx(plain["accuracy"], abs=0.01)
    assert audited["loss"] == pytest.approx(plain["loss"], rel=1e-3)


def test_the_audit_of_the_audited_run_exits_0(audited_run: tuple[dict[str, float], Path]) -> None:
    _, workdir = audited_run
    assert cli(["audit", "--workdir", str(workdir), "--expect-rounds", str(ROUNDS)]) == 0


def test_a_tampered_stored_reply_fails_the_audit(audited_run: tuple[dict[str, float], Path], tmp_path: Path) -> None:
    _, original = audited_run
    workdir = tmp_path / "copy"
    shutil.copytree(original, workdir)
    from fedchain.orchestrator.federation import open_workdir

    chain, ledger, store, _ = open_workdir(workdir)
    try:
        update = ledger.round_history(1).updates[0]
        blob = store.get(update.cid)
    finally:
        chain.close()
    tail = bytes(blob[-32:])
    blocks = [p for p in (workdir / "store").rglob("*.data") if tail in p.read_bytes()]
    assert len(blocks) == 1
    data = bytearray(blocks[0].read_bytes())
    data[data.index(tail) + 31] ^= 0x01  # one bit of the last tensor's last float
    blocks[0].write_bytes(bytes(data))
    assert cli(["audit", "--workdir", str(workdir)]) == 1


def _lying_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Outside fedchain_mod: partition 1's reply is changed after its update was recorded."""
    reply = call_next(msg, context)
    if int(context.node_config["partition-id"]) == 1 and "arrays" in reply.content.array_records:
        arrays = reply.content.array_records["arrays"]
        changed = {k: Array(v.numpy() + np.float32(0.5)) for k, v in arrays.items()}
        reply.content["arrays"] = ArrayRecord(changed)
    return reply


def test_a_node_whose_reply_differs_from_its_record_is_dropped_and_named_and_the_audit_passes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = ClientApp(mods=[_lying_mod, fedchain_mod])
    app.train()(client_app.train)
    app.evaluate()(client_app.evaluate)
    liar = demo_signer(0, "node-1").address
    with caplog.at_level(logging.WARNING, logger="fedchain.flower"):
        example.simulate(nodes=NODES, rounds=ROUNDS, audited=True, workdir=tmp_path, client_app=app)
    dropped = [r for r in caplog.records if "dropping the reply of node" in r.getMessage()]
    assert len(dropped) == ROUNDS
    assert all(liar in r.getMessage() and "its arrays encode to" in r.getMessage() for r in dropped)
    assert cli(["audit", "--workdir", str(tmp_path), "--expect-rounds", str(ROUNDS)]) == 0


@pytest.mark.parametrize(
    ("strategy", "rule"),
    [
        (FedAvg(), {"rule": "fedavg", "server_lr": 1.0}),
        (FedMedian(), {"rule": "median", "server_lr": 1.0}),
        (FedTrimmedAvg(beta=0.25), {"rule": "trimmed-mean", "trim": 0.25, "server_lr": 1.0}),
        (Krum(num_malicious_nodes=1), {"rule": "krum", "f": 1, "server_lr": 1.0}),
        (
            MultiKrum(num_malicious_nodes=1, num_nodes_to_select=2),
            {"rule": "multi-krum", "f": 1, "m": 2, "server_lr": 1.0},
        ),
        (FedAvgM(server_learning_rate=0.5, server_momentum=0.0), {"rule": "fedavg", "server_lr": 0.5}),
    ],
)
def test_the_wrapped_strategys_averaging_maps_to_the_manifests_rule(strategy: object, rule: dict[str, object]) -> None:
    assert aggregation_for(strategy) == rule  # type: ignore[arg-type]


def test_a_strategy_with_server_momentum_has_no_rule() -> None:
    with pytest.raises(ConfigError, match="momentum"):
        aggregation_for(FedAvgM(server_momentum=0.9))


def test_settings_come_from_the_node_config_before_the_run_config_and_the_environment() -> None:
    s = settings_from_context(
        {"fedchain-rpc": "http://127.0.0.1:1", "partition-id": 2},
        {"fedchain-rpc": "embedded", "fedchain-store": "/x", "fedchain-demo-seed": 7},
        {"FEDCHAIN_RPC": "http://env", "FEDCHAIN_LEDGER": "0xabc", "FEDCHAIN_PRIVATE_KEY": ""},
    )
    assert (s.rpc, s.store, s.ledger, s.demo_seed, s.partition_id) == ("http://127.0.0.1:1", "/x", "0xabc", 7, 2)
    assert s.signer("node").address == demo_signer(7, "node-2").address


@pytest.mark.slow
@pytest.mark.anvil
def test_the_deployment_engine_run_of_the_example_passes_the_audit(tmp_path: Path) -> None:
    """anvil, a SuperLink and three SuperNodes as processes (insecure, 127.0.0.1); audited while anvil runs."""
    from fedchain.chain.anvil import AnvilNode

    summary = example.deploy_run(nodes=3, rounds=2, workdir=tmp_path)
    assert summary["accuracy"] > 0.3
    with AnvilNode(state_file=tmp_path / "anvil.json") as anvil:  # the node's state was dumped on stop
        code = cli(
            [
                "audit",
                "--rpc",
                anvil.url,
                "--ledger",
                summary["ledger"],
                "--store",
                summary["store"],
                "--expect-rounds",
                "2",
            ]
        )
    assert code == 0
