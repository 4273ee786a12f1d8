"""``fedchain store``: add prints kubo's CID, get/export-car/import-car move blobs, exit codes.

Exit codes come from the one table in :mod:`fedchain.cli`: a store that cannot serve a blob, a blob
over the limit and a bad CAR are errors of the command (2); only a verification failure is 1.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from fedchain.cli import main
from fedchain.storage import cid_of

DATA = random.Random(3).randbytes(700_000)


@pytest.fixture
def blob(tmp_path: Path) -> Path:
    path = tmp_path / "blob.bin"
    path.write_bytes(DATA)
    return path


def add(store: Path, path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    assert main(["store", "--store", str(store), "add", str(path), *extra]) == 0
    return capsys.readouterr().out.strip()


def test_add_prints_what_ipfs_add_q_prints(tmp_path: Path, blob: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cid = add(tmp_path / "s", blob, capsys)
    assert cid == cid_of(DATA)
    oracle = shutil.which("ipfs_cid")
    if oracle is None:
        pytest.fail("ipfs_cid not found: install the Debian package ipfs-cid (scripts/test.sh does)")
    expected = json.loads(subprocess.run([oracle, str(blob)], capture_output=True, text=True, check=True).stdout)
    assert cid == expected["CIDv0"]
    assert add(tmp_path / "s", blob, capsys, "--cid-version", "1") == expected["CIDv1"]


def test_get_writes_the_verified_blob(tmp_path: Path, blob: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cid = add(tmp_path / "s", blob, capsys)
    out = tmp_path / "out.bin"
    assert main(["store", "--store", str(tmp_path / "s"), "get", cid, "-o", str(out)]) == 0
    assert out.read_bytes() == DATA


def test_car_export_and_import_move_a_blob_between_stores(
    tmp_path: Path, blob: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cid = add(tmp_path / "a", blob, capsys)
    car = tmp_path / "blob.car"
    assert main(["store", "--store", str(tmp_path / "a"), "export-car", cid, "-o", str(car)]) == 0
    assert main(["store", "--store", str(tmp_path / "b"), "import-car", str(car)]) == 0
    assert capsys.readouterr().out.split() == [cid]
    out = tmp_path / "out.bin"
    assert main(["store", "--store", str(tmp_path / "b"), "get", cid, "-o", str(out)]) == 0
    assert out.read_bytes() == DATA


def test_the_store_may_also_follow_the_action(tmp_path: Path, blob: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["store", "add", str(blob), "--store", str(tmp_path / "after")]) == 0
    cid = capsys.readouterr().out.strip()
    out = tmp_path / "out.bin"
    assert (
        main(["store", "--store", str(tmp_path / "after"), "get", cid, "-o", str(out), "--max-blob-size", "800000"])
        == 0
    )
    assert out.read_bytes() == DATA


def test_the_default_store_is_fedchain_store_in_the_working_directory(
    tmp_path: Path, blob: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["store", "add", str(blob)]) == 0
    assert (tmp_path / "fedchain-store" / "blocks").is_dir()


def test_a_corrupt_store_fails_get_with_exit_2_and_no_output_file(
    tmp_path: Path, blob: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cid = add(tmp_path / "s", blob, capsys)
    for path in (tmp_path / "s" / "blocks").rglob("*.data"):
        if path.stat().st_size > 200_000:
            path.write_bytes(path.read_bytes()[:-1] + b"?")
    out = tmp_path / "out.bin"
    assert main(["store", "--store", str(tmp_path / "s"), "get", cid, "-o", str(out)]) == 2
    assert "integrity check failed" in capsys.readouterr().err
    assert not out.exists()
    assert not list(tmp_path.glob(".out.bin.*"))


def test_an_unknown_cid_fails_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["store", "--store", str(tmp_path / "s"), "get", cid_of(b"nope"), "-o", str(tmp_path / "o")]) == 2
    assert "not in the store" in capsys.readouterr().err


def test_a_blob_over_the_limit_is_refused_with_exit_2(
    tmp_path: Path, blob: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["store", "--store", str(tmp_path / "s"), "--max-blob-size", "1000", "add", str(blob)]) == 2
    assert "exceeds the limit of 1000 bytes" in capsys.readouterr().err


def test_a_malformed_cid_or_missing_file_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["store", "--store", str(tmp_path / "s"), "get", "Qm-not-a-cid", "-o", str(tmp_path / "o")]) == 2
    assert "not a usable CID" in capsys.readouterr().err
    assert main(["store", "--store", str(tmp_path / "s"), "add", str(tmp_path / "missing.bin")]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main(["store", "--store", str(tmp_path / "s"), "import-car", str(tmp_path / "missing.car")]) == 2


def test_a_bad_car_fails_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    car = tmp_path / "bad.car"
    car.write_bytes(b"\x05hello")
    assert main(["store", "--store", str(tmp_path / "s"), "import-car", str(car)]) == 2
    assert "CAR" in capsys.readouterr().err


def test_missing_arguments_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["store", "--store", str(tmp_path / "s"), "get", cid_of(b"x")]) == 2
    assert "required: -o/--output" in capsys.readouterr().err
    assert main(["store", "add", "x", "--cid-version", "2"]) == 2
    assert "invalid choice" in capsys.readouterr().err


def test_errors_are_one_line_with_the_command_prefix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["store", "--store", str(tmp_path / "s"), "get", cid_of(b"nope"), "-o", str(tmp_path / "o")]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("fedchain store: error: ") and "not in the store" in line
