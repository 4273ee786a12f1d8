"""The benchmark harness runs end to end on its smallest grid and reports every field.

Timings are not asserted: speed targets live in the benchmark's output, not in tests.
"""

from __future__ import annotations

import json

import pytest

from fedchain.bench import main


def _run(capsys: pytest.CaptureFixture[str], *parts: str) -> dict:  # type: ignore[type-arg]
    assert main(["--tiny", "--json", "--parts", *parts]) == 0
    return json.loads(capsys.readouterr().out)


def test_aggregation_and_scale_report_ratios_and_memory(capsys: pytest.CaptureFixture[str]) -> None:
    out = _run(capsys, "aggregation", "scale")
    row = out["parts"]["aggregation"]["rows"][0]
    assert {
        "k",
        "p",
        "fedchain_seconds",
        "fedchain_list_seconds",
        "floor_seconds",
        "vs_floor",
        "list_vs_floor",
        "flower",
    } <= set(row)
    scale = out["parts"]["scale"]
    assert scale["verified"] is True
    assert {"baseline_rss", "peak_aggregate", "peak_verify", "rss_model_multiple", "model_bytes"} <= set(scale)
    assert {"aggregation.vs_floor", "scale.rss_model_multiple"} <= set(out["targets"])
    assert {"date", "nproc", "cpu"} <= set(out["machine"])


def test_overhead_runs_the_same_federation_with_and_without_the_ledger(capsys: pytest.CaptureFixture[str]) -> None:
    cell = _run(capsys, "overhead")["parts"]["overhead"]["cells"][0]
    assert cell["same_model"] is True  # the ledger arm computes exactly the plain arm's model
    assert cell["ratio"] > 0 and cell["serial_ratio"] > 0
    for arm in ("plain", "ledger"):
        # participants in parallel can only shorten a round that ran them one after the other
        assert 0 < cell[arm]["critical_seconds"] <= cell[arm]["round_seconds"]
    assert cell["train_for_1_10"] >= 0
    assert {"train", "encode", "hash", "store", "chain", "verify", "aggregate"} <= set(cell["ledger"]["split"]) & set(
        cell["ledger"]["critical_split"]
    )


def test_audit_measures_throughput_against_sha256_at_each_history_length(capsys: pytest.CaptureFixture[str]) -> None:
    audit = _run(capsys, "audit")["parts"]["audit"]["chains"]["embedded"]
    assert [p["rounds"] for p in audit["points"]] == [2, 4]
    assert all(p["vs_sha256"] > 0 and p["mb"] > 0 for p in audit["points"])
    assert audit["per_round_growth"] > 0
