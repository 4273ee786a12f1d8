"""docker-compose.yml: valid for Compose, and its provisioning writes configs nodes accept.

No Docker engine runs on the development machines, so the file is checked with Debian's
``docker-compose config`` (no engine needed; installed by scripts/test.sh), and the setup
service's shell script runs here on plain directories in place of the volumes. The topology
itself runs as plain processes in test_processes.py and test_crashes.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fedchain.chain import Signer
from fedchain.cli._coordinator import manifest_of
from fedchain.config import load_node_config
from fedchain.protocol import check_against
from fedchain.tasks import load_task

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
ENV = dict(os.environ, FEDCHAIN_KEY_PASSWORD="compose-test", PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")


def _compose() -> str:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (scripts/test.sh installs Debian's docker-compose)")
    return binary


def test_docker_compose_config_accepts_the_file() -> None:
    result = subprocess.run(
        [_compose(), "-f", str(COMPOSE), "config", "-q"],
        check=False,
        capture_output=True,
        text=True,
        env=ENV,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_the_topology_has_a_chain_kubo_a_coordinator_and_three_hospitals() -> None:
    result = subprocess.run(
        [_compose(), "-f", str(COMPOSE), "config", "--services"],
        check=False,
        capture_output=True,
        text=True,
        env=ENV,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert {"chain", "ipfs", "setup", "coordinator", "st-mary", "northgate", "riverside"} <= set(result.stdout.split())


def test_compose_refuses_to_start_without_the_keystore_passphrase() -> None:
    env = {k: v for k, v in ENV.items() if k != "FEDCHAIN_KEY_PASSWORD"}
    result = subprocess.run(
        [_compose(), "-f", str(COMPOSE), "config", "-q"],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode != 0
    assert "FEDCHAIN_KEY_PASSWORD" in result.stderr


def test_the_setup_service_writes_keys_shards_and_configs_the_nodes_accept(tmp_path: Path) -> None:
    yaml = pytest.importorskip("yaml")
    spec = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    services = spec["services"]
    for name in ("coordinator", "st-mary", "northgate", "riverside"):
        assert services[name]["depends_on"]["chain"]["condition"] == "service_healthy"
        assert services[name]["depends_on"]["setup"]["condition"] == "service_completed_successfully"
    script = services["setup"]["command"][0].replace("$$", "$")
    script = (
        script.replace("/nodes", str(tmp_path / "nodes"))
        .replace("/shared", str(tmp_path / "shared"))
        .replace("/tmp/shards", str(tmp_path / "shards"))
    )
    script = script.replace("chown -R 10001", "true")  # the image's user; not needed here
    env = dict(ENV, PATH=f"{Path(sys.executable).parent}{os.pathsep}{ENV.get('PATH', '')}")
    for n in ("coordinator", "st-mary", "northgate", "riverside"):
        (tmp_path / "nodes" / n).mkdir(parents=True)
        # Cheap-KDF keystores made here (the script keeps existing ones); `keys new` is tested elsewhere.
        Signer.create(n).to_keystore(
            tmp_path / "nodes" / n / "key.json", ENV["FEDCHAIN_KEY_PASSWORD"], kdf_iterations=2
        )
    (tmp_path / "shared").mkdir()
    result = subprocess.run(
        ["/bin/sh", "-eu", "-c", script],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    coordinator = load_node_config(tmp_path / "nodes" / "coordinator" / "node.toml", role="coordinator")
    assert [p.name for p in coordinator.participants] == ["st-mary", "northgate", "riverside"]
    assert coordinator.store == "http://ipfs:5001"
    assert coordinator.task.app == "icd"
    task, manifest = manifest_of(coordinator)  # what the coordinator would deploy
    assert (manifest.min_updates, manifest.round_seconds, manifest.seed) == (3, 600, 0)
    for entry in coordinator.participants:
        config = load_node_config(tmp_path / "nodes" / entry.name / "node.toml", role="participant")
        assert config.participant is not None and config.participant.name == entry.name
        assert config.keystore.is_file()
        assert Signer.from_keystore(config.keystore, ENV["FEDCHAIN_KEY_PASSWORD"], entry.name).address == entry.address
        check_against(manifest, config.federation.rules, source=str(config.path))  # the participant would start
        data = load_task(config.task.app, config.task.settings).load_data(str(config.participant.data))
        assert 0 < task.num_samples(data) <= entry.max_samples
