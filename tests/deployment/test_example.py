"""scripts/example_federation.py, the example users start from, runs and ends with a clean audit."""

from __future__ import annotations

import subprocess
import sys

from support.processes import ROOT, WAIT, node_env


def test_the_example_federation_script_runs_two_rounds_and_its_audit_passes() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "example_federation.py"), "--rounds", "2", "--demo-every", "60"],
        check=False,
        capture_output=True,
        text=True,
        timeout=WAIT,
        stdin=subprocess.DEVNULL,
        env=node_env(),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("ledger 0x")
    assert [line.split(":")[0] for line in lines[1:3]] == ["round 0 finalized", "round 1 finalized"]
    assert all(": 3 updates, test accuracy " in line for line in lines[1:3])
    assert lines[3:] == ["audit: every round verifies"]
