"""A node's own rules are checked against the federation manifest on the ledger; a node that cannot reach its node says so."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from support.processes import PASSWORD, WAIT, fedchain, federation_toml, node_env

from fedchain.chain import Signer
from fedchain.chain.anvil import free_port

# (edit of a participant's config, the manifest field its refusal names)
DIFFERENCES = (
    (("max_update_norm = 1000.0", "max_update_norm = 10.0"), "max_update_norm"),
    (("server_lr = 1.0", "server_lr = 0.5"), "aggregation.server_lr"),
    (("[federation.train]\n", "[federation.train]\nlr = 2.0\n"), "train.lr"),
)


def test_a_participant_with_a_different_norm_bound_or_learning_rate_exits_2_naming_the_field(deployment: Any) -> None:
    d = deployment.configure(rounds=1)
    d.coordinator.start()
    d.coordinator.wait_for("event=round_opened round=0 ")
    base = (d.root / "st-mary.toml").read_text(encoding="utf-8")
    runs = []
    for i, ((old, new), field) in enumerate(DIFFERENCES):
        assert base.count(old) == 1
        path = d.root / f"st-mary-{i}.toml"
        path.write_text(base.replace(old, new), encoding="utf-8")
        proc = subprocess.Popen(
            [sys.executable, "-m", "fedchain", "participant", "--config", str(path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=node_env(FEDCHAIN_KEY_PASSWORD=PASSWORD),
        )
        runs.append((proc, field))
    for proc, field in runs:
        _, err = proc.communicate(timeout=WAIT)
        assert proc.returncode == 2, err
        assert f"fedchain participant: error: {field}: " in err, err
        assert "the federation manifest on the ledger says" in err, err
        assert "event=round_seen" not in err and "event=update_submitted" not in err
    ledger = d.ledger()
    assert ledger.round_history(0).updates == ()  # none of them took part
    d.coordinator.stop()


def test_a_participant_that_cannot_reach_its_node_says_how_long_it_will_try_and_exits_3(
    tmp_path: Path, shard_dir: Path
) -> None:
    Signer.create("st-mary").to_keystore(tmp_path / "key.json", PASSWORD, kdf_iterations=2)
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    config = tmp_path / "node.toml"
    config.write_text(
        '[key]\nkeystore = "key.json"\n'
        + federation_toml(rpc=closed, outage_seconds=4)
        + f'\n[participant]\nname = "st-mary"\ndata = "{shard_dir / "st-mary.jsonl"}"\n',
        encoding="utf-8",
    )
    result = fedchain("participant", "--config", str(config), FEDCHAIN_KEY_PASSWORD=PASSWORD)
    assert result.returncode == 3, result.stderr
    lines = result.stderr.splitlines()
    # Before its first attempt it says where it connects and for how long it will keep trying.
    connecting = next(i for i, line in enumerate(lines) if "event=connecting " in line)
    assert "gives_up_after_seconds=4.000" in lines[connecting], lines[connecting]
    assert not any(closed in line for line in lines[:connecting] if "event=starting" not in line), result.stderr
    unreachable = [i for i, line in enumerate(lines) if "event=unreachable " in line]
    assert unreachable, result.stderr
    first = lines[unreachable[0]]
    assert f"endpoint={closed} " in first and "gives_up_after_seconds=4.000" in first, first
    assert lines[-1].startswith(
        f"fedchain participant: error: cannot reach chain node at {closed}: still failing after "
    )
