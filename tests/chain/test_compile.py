"""The committed contract artifact: current, stamped, reproducible, and checked loudly.

Each compile runs solc-js (a couple of seconds), so only four tests compile.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from fedchain.chain import compile as compile_module
from fedchain.chain.compile import (
    ARTIFACT_PATH,
    SOURCE_FILES,
    Compiler,
    CompilerNotFoundError,
    _parse_solcjs_output,
    compile_contracts,
    describe_differences,
    find_compiler,
    input_digest,
    load_artifact,
    render_artifact,
    standard_json_input,
)
from fedchain.cli import main
from fedchain.errors import CompilationError

CONTRACTS = compile_module.default_contracts_dir()
LONG_VERSION = "0.8.30+commit.73712a01"


@pytest.fixture(scope="module")
def solcjs() -> Path:
    path = compile_module.find_checkout() / compile_module.SOLCJS_IN_CHECKOUT
    assert path.is_file(), f"{path} is missing: run `npm ci` in the repository root"
    return path


@pytest.fixture
def contracts_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "contracts"
    shutil.copytree(CONTRACTS, copy)
    return copy


def _fake_native_solc(directory: Path, solcjs: Path, version: str) -> Path:
    """A stand-in for a native solc, which cannot be installed here: it answers ``--version``
    as native solc does and hands ``--standard-json`` to solc-js (the same compiler)."""
    script = directory / "solc"
    script.write_text(
        f"""#!{sys.executable}
import subprocess, sys, tempfile
if sys.argv[1:] == ["--version"]:
    print("solc, the solidity compiler commandline interface")
    print("Version: {version}+commit.73712a01.Linux.g++")
    sys.exit(0)
assert sys.argv[1:] == ["--standard-json"], sys.argv
with tempfile.TemporaryFile() as stdin, tempfile.TemporaryFile() as stdout:
    stdin.write(sys.stdin.buffer.read())
    stdin.seek(0)
    subprocess.run([{str(solcjs)!r}, "--standard-json"], stdin=stdin, stdout=stdout, check=True)
    stdout.seek(0)
    text = stdout.read().decode()
sys.stdout.write(text[text.index("\\n{{") + 1:])
"""
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


# --------------------------------------------------------------------------- compiling


def test_the_committed_artifact_equals_a_fresh_compile(solcjs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compile", "--check"]) == 0
    assert "up to date" in capsys.readouterr().out


def test_check_fails_naming_the_source_that_changed(
    solcjs: Path, contracts_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = contracts_copy / "FederatedLedger.sol"
    text = source.read_text()
    source.write_text(text.replace("One storage slot per participant", "One storage slot per Participant", 1))
    assert source.read_text() != text

    assert main(["compile", "--check", "--contracts", str(contracts_copy)]) == 1
    err = capsys.readouterr().err
    assert "source FederatedLedger.sol changed" in err
    assert "IFederatedLedger.sol" not in err
    assert "bytecode differs" in err
    assert "`fedchain compile`" in err


def test_a_syntax_error_raises_compilation_error_with_solcs_message(solcjs: Path, contracts_copy: Path) -> None:
    source = contracts_copy / "FederatedLedger.sol"
    text = source.read_text()
    assert "address private immutable _coordinator;" in text
    source.write_text(
        text.replace("address private immutable _coordinator;", "address private immutable _coordinator", 1)
    )

    with pytest.raises(CompilationError) as caught:
        compile_contracts(contracts_copy)
    message = str(caught.value)
    assert "solc reported 1 error(s)" in message
    assert "ParserError: Expected ';' but got" in message
    assert "FederatedLedger.sol:" in message


def test_native_solc_through_py_solc_x_writes_the_same_artifact(
    solcjs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = _fake_native_solc(bin_dir, solcjs, "0.8.30")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("FEDCHAIN_SOLCJS", raising=False)
    assert find_compiler() == Compiler("solc", fake)

    output = tmp_path / "FederatedLedger.json"
    assert main(["compile", "--output", str(output)]) == 0
    assert output.read_bytes() == ARTIFACT_PATH.read_bytes()
    out = capsys.readouterr().out
    assert f"wrote {output}" in out
    assert f"compiler: solc {LONG_VERSION} (native solc at {fake})" in out


# --------------------------------------------------------------------------- finding a compiler


def test_a_native_solc_of_another_version_is_passed_over_for_solc_js(
    solcjs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_native_solc(tmp_path, solcjs, "0.8.29")
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SOLCX_BINARY_PATH", str(tmp_path / "solcx"))  # py-solc-x's own variable
    (tmp_path / "solcx").mkdir()
    assert find_compiler() == Compiler("solcjs", solcjs)


def test_no_compiler_exits_2_telling_to_run_npm_ci(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("SOLCX_BINARY_PATH", str(tmp_path))
    monkeypatch.delenv("FEDCHAIN_SOLCJS", raising=False)
    monkeypatch.chdir(tmp_path)  # no checkout here, so no node_modules either

    with pytest.raises(CompilerNotFoundError, match="Run `npm ci` in"):
        find_compiler()
    assert main(["compile", "--check"]) == 2
    err = capsys.readouterr().err
    assert "no Solidity compiler 0.8.30 found" in err
    assert "npm ci" in err


def test_a_missing_solcjs_given_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compile", "--check", "--solcjs", str(tmp_path / "solcjs")]) == 2
    assert f"the solc-js given, {tmp_path / 'solcjs'}, is not an executable file" in capsys.readouterr().err


# --------------------------------------------------------------------------- the artifact


def test_the_artifact_is_stamped_with_compiler_settings_and_source_digests() -> None:
    artifact = load_artifact()
    assert artifact["contractName"] == "FederatedLedger"
    assert artifact["sourceName"] == "FederatedLedger.sol"
    assert artifact["compiler"] == {"name": "solc", "version": LONG_VERSION}
    assert artifact["settings"]["optimizer"] == {"enabled": True, "runs": 10000}
    assert artifact["settings"]["evmVersion"] == "cancun"
    assert artifact["settings"] == standard_json_input()["settings"]
    assert artifact["sources"] == {
        name: {"sha256": hashlib.sha256((CONTRACTS / name).read_bytes()).hexdigest()} for name in SOURCE_FILES
    }
    assert artifact["standardJsonInputSha256"] == input_digest(standard_json_input())
    assert (
        0x60 <= int(artifact["bytecode"][2:4], 16) <= 0x7F
    )  # creation code opens with a PUSH of the free-memory pointer
    assert artifact["deployedBytecode"].startswith("0x60")
    names = {entry.get("name") for entry in artifact["abi"]}
    assert {"submitUpdate", "UpdateSubmitted", "FederatedLedgerAlreadySubmitted"} <= names


def test_the_bytecode_commits_to_metadata_that_names_no_platform() -> None:
    # Why native solc and solc-js give the same bytes: the code ends in CBOR holding the IPFS
    # hash of the metadata JSON and the bare version, and the metadata names the compiler
    # without a platform suffix.
    artifact = load_artifact()
    code = bytes.fromhex(artifact["deployedBytecode"][2:])
    cbor_length = int.from_bytes(code[-2:], "big")
    cbor = code[-2 - cbor_length : -2]
    multihash = b"\x12\x20" + hashlib.sha256(_unixfs_file_node(artifact["metadata"].encode("utf-8"))).digest()
    assert cbor == b"\xa2dipfsX\x22" + multihash + b"dsolcC" + bytes([0, 8, 30])
    metadata = json.loads(artifact["metadata"])
    assert metadata["compiler"] == {"version": LONG_VERSION}
    assert artifact["bytecode"].endswith(artifact["deployedBytecode"][-2 * (cbor_length + 2) :])


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _unixfs_file_node(data: bytes) -> bytes:
    """The dag-pb node ``ipfs add`` makes of a file of one chunk (< 256 KiB): what solc hashes."""
    unixfs = b"\x08\x02" + b"\x12" + _varint(len(data)) + data + b"\x18" + _varint(len(data))
    return b"\x0a" + _varint(len(unixfs)) + unixfs


def test_the_artifact_is_rendered_canonically() -> None:
    committed = ARTIFACT_PATH.read_bytes()
    assert render_artifact(json.loads(committed)) == committed
    assert committed.endswith(b"}\n")


def test_differences_are_named_field_by_field() -> None:
    artifact = load_artifact()
    changed: dict[str, Any] = dict(artifact, abi=[], compiler={"name": "solc", "version": "0.8.31+commit.0"})
    changed["sources"] = {
        "FederatedLedger.sol": artifact["sources"]["FederatedLedger.sol"],
        "Extra.sol": {"sha256": "ab"},
    }
    assert describe_differences(artifact, changed) == [
        "source Extra.sol is not in the artifact",
        "source IFederatedLedger.sol is in the artifact but was not compiled",
        f"compiler version differs ({LONG_VERSION} in the artifact, 0.8.31+commit.0 now)",
        "ABI differs",
    ]
    assert describe_differences(artifact, artifact) == []


# --------------------------------------------------------------------------- solc-js output


def test_the_solcjs_parser_skips_the_smt_line_before_the_json() -> None:
    text = '>>> Cannot retry compilation with SMT because there are no SMT solvers available.\n{"sources": {"a": {"id": 0}}}\n'
    assert _parse_solcjs_output(text) == {"sources": {"a": {"id": 0}}}
    assert _parse_solcjs_output('{"x": 1}\n') == {"x": 1}


def test_the_solcjs_parser_rejects_output_cut_short() -> None:
    with pytest.raises(CompilationError, match="not complete JSON"):
        _parse_solcjs_output('>>> chatter\n{"contracts": {"FederatedLedger.sol": {"abi": [')
    with pytest.raises(CompilationError, match="printed no JSON output"):
        _parse_solcjs_output(">>> chatter only\n")


def test_outside_a_checkout_the_contracts_are_not_guessed_from_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # as an installed wheel's user would be: no contracts/ anywhere above
    with pytest.raises(CompilationError, match="no fedchain checkout .* pass the contracts directory"):
        standard_json_input()
    assert compile_module.find_checkout(CONTRACTS / "nested" / "deeper") == CONTRACTS.parent


def test_an_explicit_contracts_directory_is_used_from_anywhere(
    contracts_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    sources = standard_json_input(contracts_copy)["sources"]
    assert sorted(sources) == sorted(SOURCE_FILES)
    assert sources["IFederatedLedger.sol"]["content"] == (CONTRACTS / "IFederatedLedger.sol").read_text()
