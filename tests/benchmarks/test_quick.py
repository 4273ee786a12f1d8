"""The benchmarks run end to end on their quick grid, report every part, and patch nothing of fedchain.

Timings are not asserted: speed targets live in the benchmarks' output (and ``--check``), not in tests.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PARTS = ("gas", "overhead", "aggregation", "audit", "scale")


@pytest.fixture(scope="module")
def quick() -> tuple[int, dict]:  # type: ignore[type-arg]
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.returncode, json.loads(proc.stdout)


def test_the_quick_run_exits_0_and_reports_every_part_with_the_machine(quick: tuple[int, dict]) -> None:  # type: ignore[type-arg]
    code, doc = quick
    assert code == 0
    assert tuple(doc["parts"]) == PARTS
    assert {"date", "nproc", "cpu", "caches"} <= set(doc["machine"])
    figures = " ".join(v["figure"] for v in doc["verdicts"])
    for needle in (
        "gas submitUpdate",
        "ledger overhead",
        "vs numpy float32 floor",
        "vs Flower",
        "audit vs sha256",
        "coordinator peak RSS",
        "verifier peak RSS",
    ):
        assert needle in figures


def test_the_ledger_arm_ends_on_the_plain_arms_model_bit_for_bit(quick: tuple[int, dict]) -> None:  # type: ignore[type-arg]
    cell = quick[1]["parts"]["overhead"]["cells"][0]
    assert cell["same_model"] is True
    for arm in ("plain", "ledger"):
        # participants in parallel can only shorten a round that ran them one after the other
        assert 0 < cell[arm]["critical_seconds"] <= cell[arm]["serial_seconds"]


def test_a_fresh_interpreter_recomputes_the_finalized_aggregate_and_verifies_the_round(quick: tuple[int, dict]) -> None:  # type: ignore[type-arg]
    cell = quick[1]["parts"]["scale"]["cells"][0]
    assert cell["aggregate"]["same_digest"] is True
    assert cell["verify"]["verified"] is True


def test_every_aggregation_contender_reports_its_page_faults(quick: tuple[int, dict]) -> None:  # type: ignore[type-arg]
    for row in quick[1]["parts"]["aggregation"]["rows"]:
        assert set(row["page_faults"]) == set(row["seconds"])
        assert all(count >= 0 for count in row["page_faults"].values())


def test_every_audit_of_the_benchmarks_own_history_reads_at_least_the_blobs_it_hashes(quick: tuple[int, dict]) -> None:  # type: ignore[type-arg]
    for point in quick[1]["parts"]["audit"]["chains"]["embedded"]["points"]:
        assert point["bytes_read"] >= point["mb"] * 2**20 - 1


def _fedchain_names(tree: ast.Module) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names if a.name.startswith("fedchain")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fedchain"):
            names |= {a.asname or a.name for a in node.names}
    return names


def test_no_benchmark_module_patches_a_fedchain_module() -> None:
    sources = sorted((ROOT / "benchmarks").glob("*.py"))
    assert sources
    for path in sources:
        text = path.read_text()
        assert "monkeypatch" not in text, path
        tree = ast.parse(text)
        imported = _fedchain_names(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in ("setattr", "delattr"), f"{path}:{node.lineno}"
            if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for t in targets:
                    if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name):
                        assert t.value.id not in imported, f"{path}:{node.lineno} assigns {t.value.id}.{t.attr}"
