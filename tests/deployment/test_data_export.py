"""``fedchain data export`` writes each demo participant's shard in its task's format, read back by ``load_data``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedchain.cli import main
from fedchain.tasks import load_task


def test_icd_shards_are_json_lines_with_every_60th_record_and_load_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "icd"
    assert main(["data", "export", "--task", "icd", "--set", "demo_every=60", "--out", str(out), "--json"]) == 0
    files = json.loads(capsys.readouterr().out)["files"]
    assert sorted(files) == ["northgate.jsonl", "riverside.jsonl", "st-mary.jsonl", "test.jsonl"]
    task = load_task("icd")
    demo = load_task("icd", {"demo_every": 60}).demo(3, 0)
    for member in [*demo.participants]:
        data = task.load_data(str(out / f"{member.name}.jsonl"))
        assert files[f"{member.name}.jsonl"] == len(data) == len(member.data)
        assert (data.texts, data.labels) == (member.data.texts, member.data.labels)
    first = json.loads((out / "st-mary.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert sorted(first) == ["label", "text"]
    full = sum(len(m.data) for m in task.demo(3, 0).participants)
    assert full // 61 <= sum(len(m.data) for m in demo.participants) <= full // 59


def test_digits_shards_are_npz_files_that_load_back(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "digits"
    assert main(["data", "export", "--task", "digits", "--out", str(out), "--json"]) == 0
    files = json.loads(capsys.readouterr().out)["files"]
    assert sorted(files) == ["participant-0.npz", "participant-1.npz", "participant-2.npz", "test.npz"]
    task = load_task("digits")
    for member in task.demo(3, 0).participants:
        data = task.load_data(str(out / f"{member.name}.npz"))
        assert files[f"{member.name}.npz"] == len(data) == len(member.data)
        np.testing.assert_array_equal(data.x, member.data.x)
        np.testing.assert_array_equal(data.y, member.data.y)
