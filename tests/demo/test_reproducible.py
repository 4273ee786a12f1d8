"""`fedchain demo --seed S` derives every key from the seed: the same seed gives the same digests anywhere."""

from __future__ import annotations

import json
from pathlib import Path

from fedchain.cli import main


def _digests(workdir: Path, capsys) -> list[str | None]:  # type: ignore[no-untyped-def]
    capsys.readouterr()
    assert main(["audit", "--workdir", str(workdir), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    return [report["genesis"]["hash"], report["manifest"]["hash"], report["ledger"]] + [
        r["aggregate"]["hash"] if r["aggregate"] else None for r in report["rounds"]
    ]


def _demo(workdir: Path, seed: int) -> None:
    args = ["demo", "--task", "digits", "--rounds", "2", "--seed", str(seed), "--workdir", str(workdir)]
    assert main(args) == 0


def test_two_demos_with_the_same_seed_give_identical_digests_and_another_seed_does_not(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    _demo(tmp_path / "a", 5)
    _demo(tmp_path / "b", 5)
    _demo(tmp_path / "c", 6)
    a, b, c = (_digests(tmp_path / name, capsys) for name in ("a", "b", "c"))
    assert a == b
    assert len(a) == 5 and all(a)
    assert a[0] != c[0] and a[3] != c[3] and a[4] != c[4]
