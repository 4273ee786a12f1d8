"""Fixtures of the deployment tests: small shards written once by ``fedchain data export``, and a deployment on anvil.

See :mod:`support.processes` for the nodes, their configs and the helpers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.processes import HOSPITALS, Deployment, fedchain

from fedchain.chain.anvil import AnvilNode


@pytest.fixture(scope="session")
def shard_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The three hospitals' small shards (JSONL), written once per session by ``fedchain data export``."""
    out = tmp_path_factory.mktemp("shards")
    result = fedchain("data", "export", "--task", "icd", "--set", "demo_every=60", "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    for name in (*HOSPITALS, "test"):
        assert (out / f"{name}.jsonl").is_file()
    return out


@pytest.fixture
def deployment(tmp_path: Path, shard_dir: Path) -> Iterator[Deployment]:
    """A deployment on its own anvil (state persisted), configured by the test; every process stopped at the end."""
    node = AnvilNode(state_file=tmp_path / "anvil-state.json").start()
    d = Deployment(tmp_path, node, shard_dir)
    try:
        yield d
    finally:
        for n in getattr(d, "participants", []) + ([d.coordinator] if hasattr(d, "coordinator") else []):
            n.stop()
        d.anvil.stop()
