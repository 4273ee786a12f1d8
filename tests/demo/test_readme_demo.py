"""The README's first command: `fedchain demo` on the embedded defaults, and the digest the README states."""

from __future__ import annotations

import re
from pathlib import Path

from fedchain.cli import main

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_default_demo_ends_with_the_final_aggregate_the_readme_states(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    stated = re.search(r"final aggregate \(round 4\): (0x[0-9a-f]{64}) at (Qm\w+)", README.read_text(encoding="utf-8"))
    assert stated is not None, "the README states the demo's final aggregate"
    assert main(["demo", "--workdir", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert f"final aggregate (round 4): {stated.group(1)} at {stated.group(2)}" in out
    assert "audit PASSED" in out
    assert out.startswith("ledger ")  # no blank first line
