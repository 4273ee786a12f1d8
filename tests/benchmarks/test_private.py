"""The private-rounds part runs on its quick grid: masked rounds really ran, were audited, and their figures add up.

Timings are not asserted (speed targets live in the part's verdicts and ``--check``), only what
must hold on any machine.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
STRUCTURE = (
    "coordinator open",
    "slowest participant: submit",
    "coordinator close",
    "reveal phases (slowest participant each)",
    "coordinator reads the closed round (during the reveals)",
    "overlap: the shorter of the two",
    "coordinator reveal bookkeeping + finish",
)


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--only", "private", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out: dict[str, Any] = json.loads(proc.stdout)
    return out


def test_the_quick_run_reports_the_private_part_alone_with_its_cells(doc: dict[str, Any]) -> None:
    assert tuple(doc["parts"]) == ("private",)
    cells = doc["parts"]["private"]["cells"]
    assert [(c["k"], c["p"], c["dropouts"], c["chain"]) for c in cells] == [
        (3, 100_000, 0, "embedded"),
        (4, 100_000, 1, "embedded"),
    ]


def test_every_round_of_the_masked_arm_was_finalized_as_a_private_round_and_audited(doc: dict[str, Any]) -> None:
    for c in doc["parts"]["private"]["cells"]:
        live = c["k"] - c["dropouts"]
        masked, plain = c["masked"], c["plain"]
        assert masked["statuses"] == ["finalized"] * c["rounds"]
        assert masked["included"] == [live] * c["rounds"]
        assert masked["audit"] == {
            **masked["audit"],
            "ok": True,
            "rules": ["masked-fedavg"],
            "finalized": c["rounds"],
            "private": c["rounds"],
            "included": [live] * c["rounds"],
        }
        assert plain["audit"]["ok"] is True
        assert plain["audit"]["private"] == 0
        assert plain["audit"]["included"] == [live] * c["rounds"]


def test_the_critical_path_is_the_sum_of_its_parts_and_no_longer_than_the_serial_sum(doc: dict[str, Any]) -> None:
    for c in doc["parts"]["private"]["cells"]:
        for arm in ("plain", "masked"):
            a = c[arm]
            assert len(a["critical_per_round"]) == c["rounds"]
            mean = sum(a["critical_per_round"]) / c["rounds"]
            assert math.isclose(sum(a["critical_split"][k] for k in STRUCTURE), mean, rel_tol=1e-9)
            for critical, after, serial in zip(
                a["critical_per_round"], a["after_per_round"], a["serial_per_round"], strict=True
            ):
                assert 0 < critical <= after <= serial
        assert c["plain"]["critical_split"]["reveal phases (slowest participant each)"] == 0.0
        assert c["masked"]["critical_split"]["reveal phases (slowest participant each)"] > 0.0
        assert c["masked"]["critical_split"]["coordinator reads the closed round (during the reveals)"] > 0.0
        assert c["plain"]["critical_split"]["coordinator reads the closed round (during the reveals)"] == 0.0
        # a masked blob holds 8 bytes a parameter, a plain one 4: the masked path reads more
        assert (
            c["masked"]["critical_split"]["resource: bytes read"] > c["plain"]["critical_split"]["resource: bytes read"]
        )
        assert c["ratio"] == c["masked"]["critical_seconds"] / c["plain"]["critical_seconds"]
        # a dropout adds the pair-seed phase before the one every round has
        phases = [k for k in c["masked"]["critical_split"] if k.startswith("reveal phase ")]
        assert phases == [f"reveal phase {i + 1}" for i in range(2 if c["dropouts"] else 1)]
        assert not any(k.startswith("reveal phase ") for k in c["plain"]["critical_split"])
        assert ("dropout_cost_seconds" in c) is bool(c["dropouts"])


def test_the_verdicts_name_the_critical_path_target_the_audits_and_the_masking_rate(doc: dict[str, Any]) -> None:
    figures = [v["figure"] for v in doc["verdicts"]]
    assert "private round vs plain, critical path, K=3 P=100,000 (eth-tester)" in figures
    assert "private and plain rounds audited, K=4 P=100,000, 1 dropout (eth-tester)" in figures
    assert "mask_update vs raw ChaCha20 keystream, K=3 P=100,000" in figures
    audited = [v for v in doc["verdicts"] if v["figure"].startswith("private and plain rounds audited")]
    assert [v["met"] for v in audited] == [True, True]
    masking = doc["parts"]["private"]["masking"]
    assert masking["p"] == 100_000 and [r["k"] for r in masking["rosters"]] == [3]
    assert masking["raw_rate"] > 0 and masking["rosters"][0]["ratio"] > 0
