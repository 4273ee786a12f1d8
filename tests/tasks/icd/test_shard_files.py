"""The local shard format: JSON Lines of {"text", "label"} with the label as a class name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedchain.errors import DataError
from fedchain.tasks.icd.data import Dataset, export_shard, load_shard

NAMES = ("Neoplasms", "Diseases of the eye")


def _shard() -> Dataset:
    return Dataset(
        name="clinic", texts=("Benign neoplasm of ovary", "Cataract, ünspecified"), labels=(0, 1), label_names=NAMES
    )


def test_an_exported_shard_loads_back_identically(tmp_path: Path) -> None:
    path = tmp_path / "clinic.jsonl"
    export_shard(_shard(), path)
    assert load_shard(path, NAMES) == _shard()
    assert (
        path.read_text(encoding="utf-8").splitlines()[1]
        == '{"text": "Cataract, ünspecified", "label": "Diseases of the eye"}'
    )


def test_blank_lines_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_text('\n{"text": "a", "label": "Neoplasms"}\n   \n', encoding="utf-8")
    assert load_shard(path, NAMES).texts == ("a",)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('{"text": "a", "label": 0}', "'label' must be a class name"),
        ('{"text": "a", "label": "Cardiology"}', "unknown label 'Cardiology'"),
        ('{"text": "", "label": "Neoplasms"}', "'text' must be a non-empty string"),
        ('{"text": 5, "label": "Neoplasms"}', "'text' must be a non-empty string"),
        ('{"text": "a"}', "missing key 'label'"),
        ('{"text": "a", "label": "Neoplasms", "id": 3}', "unknown key"),
        ('["a", "Neoplasms"]', "expected a JSON object"),
        ('{"text": "a", "label": "Neoplasms"', "not valid JSON"),
    ],
)
def test_a_bad_line_is_a_data_error_naming_file_and_line(tmp_path: Path, line: str, problem: str) -> None:
    path = tmp_path / "s.jsonl"
    path.write_text('{"text": "fine", "label": "Neoplasms"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=f"s.jsonl:2: .*{problem}"):
        load_shard(path, NAMES)


def test_bytes_that_are_not_utf8_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_bytes(b'{"text": "fine", "label": "Neoplasms"}\n{"text": "\xff", "label": "Neoplasms"}\n')
    with pytest.raises(DataError, match=r"s.jsonl:2: not UTF-8"):
        load_shard(path, NAMES)


def test_an_empty_or_missing_file_is_a_data_error(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("\n", encoding="utf-8")
    with pytest.raises(DataError, match="holds no records"):
        load_shard(tmp_path / "empty.jsonl", NAMES)
    with pytest.raises(DataError, match="cannot read"):
        load_shard(tmp_path / "absent.jsonl", NAMES)


def test_the_real_data_round_trips(tmp_path: Path, icd10: Dataset) -> None:
    part = Dataset(name="part", texts=icd10.texts[:500], labels=icd10.labels[:500], label_names=icd10.label_names)
    export_shard(part, tmp_path / "part.jsonl")
    assert load_shard(tmp_path / "part.jsonl", icd10.label_names) == part
    first = json.loads((tmp_path / "part.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert first == {"text": icd10.texts[0], "label": icd10.label_names[icd10.labels[0]]}
