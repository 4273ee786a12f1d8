"""Every error a user can cause is one line, ``fedchain <command>: error: ...``, and exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedchain.cli import EXIT_CODES, EXIT_ERROR, EXIT_FAILED, exit_code, main
from fedchain.errors import ConfigError, ContractRevertError, StorageError, UnknownContractError, VerificationError


def _one_line(capsys: pytest.CaptureFixture[str], command: str) -> str:
    captured = capsys.readouterr()
    [line] = captured.err.splitlines()
    assert line.startswith(f"fedchain {command}: error: "), line
    assert "Traceback" not in captured.err and "unexpected" not in line
    return line


def test_an_audit_of_a_malformed_ledger_address_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "s").mkdir()
    argv = ["audit", "--rpc", "http://127.0.0.1:9", "--ledger", "0x1234", "--store", str(tmp_path / "s")]
    assert main(argv) == 2
    line = _one_line(capsys, "audit")
    assert "--ledger" in line and "0x1234" in line


def test_a_demo_into_an_existing_file_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "a-file"
    target.write_text("mine\n")
    assert main(["demo", "--workdir", str(target)]) == 2
    line = _one_line(capsys, "demo")
    assert "--workdir" in line and str(target) in line and "not a directory" in line
    assert target.read_text() == "mine\n"


def test_a_demo_into_an_unwritable_place_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--workdir", "/proc/x"]) == 2
    line = _one_line(capsys, "demo")
    assert "--workdir" in line and "/proc/x" in line


def test_a_demo_over_a_federation_without_overwrite_is_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "chain.jsonl").write_text("")
    assert main(["demo", "--workdir", str(tmp_path)]) == 2
    assert "--overwrite" in _one_line(capsys, "demo")


def test_an_audit_of_a_directory_that_is_no_workdir_is_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", "--workdir", str(tmp_path / "nothing-here")]) == 2
    _one_line(capsys, "audit")
    assert not (tmp_path / "nothing-here").exists()


def test_an_audit_needs_rpc_ledger_and_store_together(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "--rpc", "http://127.0.0.1:9"]) == 2
    assert "--ledger" in _one_line(capsys, "audit")
    assert main(["audit", "--workdir", str(tmp_path), "--rpc", "http://127.0.0.1:9"]) == 2
    assert "not both" in _one_line(capsys, "audit")


def test_the_exit_code_table_maps_failures_to_1_and_errors_to_2() -> None:
    assert exit_code(VerificationError(3, "aggregate", expected="a", actual="b")) == EXIT_FAILED
    assert exit_code(UnknownContractError("0x" + "11" * 20, "unknown contract code")) == EXIT_FAILED
    assert exit_code(ContractRevertError("X", {}, "reverted")) == EXIT_FAILED
    assert exit_code(ConfigError("--x", "bad")) == EXIT_ERROR
    assert exit_code(StorageError("gone")) == EXIT_ERROR
    assert exit_code(OSError(2, "No such file")) == EXIT_ERROR
    assert exit_code(RuntimeError("?")) == EXIT_ERROR
    assert [code for _, code in EXIT_CODES] == sorted(code for _, code in EXIT_CODES)  # failures first, then errors
