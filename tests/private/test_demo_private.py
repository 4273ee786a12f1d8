"""``fedchain demo --private``: masked rounds of the icd demo on the embedded chain, audited, as accurate as plain rounds."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from fedchain.cli import main


def accuracies(out: str) -> list[float]:
    return [float(x) for x in re.findall(r"finalized\s+\d+\s+([0-9.]+)%", out)]


def test_demo_private_ends_with_a_passing_audit_of_private_rounds_as_accurate_as_plain_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--private", "--rounds", "2", "--workdir", str(tmp_path / "private")]) == 0
    private = capsys.readouterr().out
    assert "audit PASSED" in private
    assert main(["demo", "--rounds", "2", "--workdir", str(tmp_path / "plain")]) == 0
    plain = capsys.readouterr().out
    assert len(accuracies(private)) == len(accuracies(plain)) == 2
    assert abs(accuracies(private)[-1] - accuracies(plain)[-1]) <= 0.2
    assert main(["audit", "--workdir", str(tmp_path / "private"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True
    assert [r["private"] for r in report["rounds"]] == [True, True]
    assert report["manifest"]["privacy"]["mode"] == "masked"
