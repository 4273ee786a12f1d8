"""Acceptance: a task written by ``fedchain new`` outside ``fedchain/`` runs everywhere, unchanged.

Issue 13: the package ``fedchain new mytask`` writes runs in the demo, in the multi-process setup
(a coordinator and three participant processes on anvil) and through the audit, with no change
to fedchain. Issue 16: ``fedchain status`` on that running federation shows the open round and
who has submitted so far. Every command runs from the directory holding ``mytask/`` as the
``fedchain`` console script runs (the current directory not on ``sys.path``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from acceptance.launch import WAIT, Deployment, environment, fedchain_cli

from fedchain.chain.anvil import AnvilNode
from fedchain.cli import main
from fedchain.errors import ConfigError
from fedchain.tasks import load_task

pytestmark = [pytest.mark.slow, pytest.mark.anvil]

APP = "mytask.task:Task"
ROUNDS = 2
#: The starter's demo split of scikit-learn's 1,797 digits: 1,438 for training over 3 participants, 359 held out.
SHARDS = {"participant-0.npz": 480, "participant-1.npz": 479, "participant-2.npz": 479, "test.npz": 359}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's project directory holding the package ``fedchain new mytask`` wrote."""
    root = tmp_path_factory.mktemp("project")
    assert main(["new", "mytask", "--directory", str(root)]) == 0
    return root


def test_fedchain_new_writes_the_package_its_config_and_its_test(project: Path) -> None:
    written = sorted(str(p.relative_to(project)) for p in (project / "mytask").rglob("*") if p.is_file())
    assert written == [
        "mytask/README.md",
        "mytask/__init__.py",
        "mytask/fedchain.toml",
        "mytask/task.py",
        "mytask/tests/__init__.py",
        "mytask/tests/test_task.py",
    ]
    assert 'app = "mytask.task:Task"' in (project / "mytask" / "fedchain.toml").read_text(encoding="utf-8")


def test_the_starter_packages_own_tests_pass(project: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:xdist",
            "-p",
            "no:cacheprovider",
            "mytask/tests",
        ],
        cwd=project,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout


def test_the_demo_runs_the_new_task_from_its_directory_and_its_audit_passes_without_torch(project: Path) -> None:
    demo = fedchain_cli("demo", "--task", APP, "--rounds", str(ROUNDS), "--workdir", "demo", cwd=project)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "audit PASSED: every ended round verifies" in demo.stdout
    assert "task mytask 1, rule fedavg" in demo.stdout
    assert f"{ROUNDS} rounds ended ({ROUNDS} finalized)" in demo.stdout
    audit = fedchain_cli("audit", "--workdir", "demo", "--expect-rounds", str(ROUNDS), cwd=project, torch=False)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert "audit PASSED" in audit.stdout


def test_a_task_package_outside_the_current_directory_is_not_found_and_the_error_says_so(
    project: Path, tmp_path: Path
) -> None:
    done = fedchain_cli("demo", "--task", APP, "--rounds", "1", "--workdir", "demo", cwd=tmp_path)
    assert done.returncode == 2
    assert "task.app: no module named 'mytask.task' (is its directory on the path?)" in done.stderr
    assert not (tmp_path / "demo").exists()


def test_load_task_appends_a_search_directory_only_when_the_module_is_not_importable_otherwise(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "path", [p for p in sys.path if Path(p or ".").resolve() != project.resolve()])
    _forget_mytask()
    try:
        with pytest.raises(ConfigError, match="no module named 'mytask.task'"):
            load_task(APP)
        before = list(sys.path)
        task = load_task(APP, {"hidden": 8}, search=(project,))
        assert (task.name, task.schema().shapes["fc1.weight"]) == ("mytask", (8, 64))
        assert sys.path == [*before, str(project.resolve())]
        load_task(APP, search=(project,))  # importable now: the path is not extended twice
        assert sys.path == [*before, str(project.resolve())]
    finally:
        _forget_mytask()


def _forget_mytask() -> None:
    for name in [m for m in sys.modules if m == "mytask" or m.startswith("mytask.")]:
        del sys.modules[name]


def test_data_export_writes_the_new_tasks_shards(project: Path, tmp_path: Path) -> None:
    done = fedchain_cli("data", "export", "--task", APP, "--out", str(tmp_path / "shards"), "--json", cwd=project)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"directory": str(tmp_path / "shards"), "files": SHARDS}


# --------------------------------------------------------------------------- the multi-process federation


@dataclass(frozen=True)
class Run:
    """What the multi-process federation did: its deployment, status snapshots, exit codes."""

    deployment: Deployment
    status_text: str
    status_json: dict[str, Any]
    first_submitters: list[str]
    exits: dict[str, int]


@pytest.fixture(scope="module")
def run(project: Path) -> Iterator[Run]:
    """The new task as a coordinator and three participant processes on anvil, for ``ROUNDS`` rounds.

    Round 0's quorum is all three participants; the third starts only after ``fedchain status``
    has shown the round open with the first two's updates, so the open round is seen for sure.
    """
    exported = fedchain_cli("data", "export", "--task", APP, "--out", "shards", "--json", cwd=project)
    assert exported.returncode == 0, exported.stderr
    shards = {n: project / "shards" / f"{n}.npz" for n in ("participant-0", "participant-1", "participant-2")}
    with AnvilNode() as anvil:
        d = Deployment(project, anvil.url, APP, shards, rounds=ROUNDS).configure({"hidden": 32, "epochs": 1})
        try:
            d.coordinator.start()
            first = d.participants[:2]
            for p in first:
                p.start()
            first_submitters = sorted(d.addresses[p.name] for p in first)
            where = d.where()
            status_json = _wait_for_status(d, where, lambda s: sorted(s["current"]["submitted"]) == first_submitters)
            text = fedchain_cli("status", *where, cwd=project, torch=False)
            assert text.returncode == 0, text.stderr
            d.participants[2].start()
            exits = {s.name: s.wait_exit() for s in d.services}
            yield Run(d, text.stdout, status_json, first_submitters, exits)
        finally:
            d.stop()
            anvil.stop()


def _wait_for_status(d: Deployment, where: list[str], ready: Any) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        done = fedchain_cli("status", *where, "--json", cwd=d.root, torch=False)
        assert done.returncode == 0, done.stderr
        state = json.loads(done.stdout)
        if state["current"] is not None and state["current"]["status"] == "open" and ready(state):
            return dict(state)
        for s in d.services:
            s.check_running()
        time.sleep(0.5)
    raise AssertionError(f"status never showed round 0 open with two updates: {done.stdout}")


def test_every_process_of_the_new_tasks_federation_finishes_its_rounds(run: Run) -> None:
    assert run.exits == {"coordinator": 0, "participant-0": 0, "participant-1": 0, "participant-2": 0}
    for s in run.deployment.services:
        assert "federation_finished" in s.text(), s.text()[-2000:]


def test_status_json_shows_the_open_round_and_who_submitted_so_far(run: Run) -> None:
    d, current = run.deployment, run.status_json["current"]
    assert run.status_json["coordinator"] == d.addresses["coordinator"]
    assert run.status_json["rounds_opened"] == 1
    assert sorted(p["address"] for p in run.status_json["participants"]) == sorted(
        d.addresses[n] for n in ("participant-0", "participant-1", "participant-2")
    )
    assert current["round"] == 0
    assert current["status"] == "open"
    assert current["quorum"] == 3
    assert sorted(current["submitted"]) == run.first_submitters
    assert current["waiting_for"] == [d.addresses["participant-2"]]
    assert 0 < current["seconds_to_deadline"] <= 600


def test_status_text_says_the_round_is_open_and_names_who_it_waits_for(run: Run) -> None:
    d = run.deployment
    assert "round 0 is open: 2/3 submitted, quorum 3, deadline in " in run.status_text
    for a in run.first_submitters:
        assert f"    submitted: {a}" in run.status_text
    assert f"    waiting for: {d.addresses['participant-2']}" in run.status_text


def test_the_audit_of_the_new_tasks_federation_passes_from_chain_and_store_without_torch(run: Run) -> None:
    audit = fedchain_cli(
        "audit", *run.deployment.where(), "--expect-rounds", str(ROUNDS), cwd=run.deployment.root, torch=False
    )
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert "audit PASSED: every ended round verifies" in audit.stdout
    assert f"{ROUNDS} rounds ended ({ROUNDS} finalized)" in audit.stdout
    assert "task mytask 1, rule fedavg" in audit.stdout
    for r in range(ROUNDS):
        assert f"round {r} finalized: 3 recorded, 3 valid, 3 included" in audit.stdout
