"""Compile the ledger contract into the committed artifact, and prove the artifact is current.

Deploying needs no compiler: the artifact ``artifacts/FederatedLedger.json`` ships in the
package and :func:`load_artifact` reads it. This module regenerates it from ``contracts/``
with solc 0.8.30, either a native ``solc`` (through py-solc-x) or solc-js from npm, and
:func:`check_artifact` proves the committed file equals a fresh compile byte for byte.

Native solc and solc-js give identical artifacts: the bytecode ends in the CBOR-encoded
IPFS hash of the compiler's metadata JSON, which holds the source hashes, the settings
and the compiler's long version *without* its platform suffix
(``0.8.30+commit.73712a01``), and the artifact is stamped with that same version.

py-solc-x is imported lazily, only when a native compiler is looked for, so that reading
the artifact never touches it.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypedDict, cast

from fedchain.errors import ArtifactMismatchError, CompilationError

logger = logging.getLogger(__name__)

#: The one compiler version the contracts are built with (their pragma pins it too).
SOLC_VERSION = "0.8.30"
#: The contract the artifact describes, and the source unit that defines it.
CONTRACT_NAME = "FederatedLedger"
SOURCE_NAME = "FederatedLedger.sol"
#: Every source unit compiled, by the name the compiler sees (imports are ``./<name>``).
SOURCE_FILES = (SOURCE_NAME, "IFederatedLedger.sol")

#: Where ``npm ci`` puts the pinned solc-js, relative to a checkout's root.
SOLCJS_IN_CHECKOUT = Path("node_modules") / ".bin" / "solcjs"
#: The committed artifact (package data).
ARTIFACT_PATH = Path(__file__).resolve().parent / "artifacts" / f"{CONTRACT_NAME}.json"

#: Compiler settings. ``cancun`` is what py-evm (the in-process chain) and anvil both run;
#: the metadata hash is solc's default, spelled out so the artifact's stamp says it.
SETTINGS: dict[str, Any] = {
    "evmVersion": "cancun",
    "metadata": {"bytecodeHash": "ipfs"},
    "optimizer": {"enabled": True, "runs": 10000},
    "outputSelection": {
        "*": {
            "*": [
                "abi",
                "evm.bytecode.object",
                "evm.deployedBytecode.object",
                "evm.deployedBytecode.immutableReferences",
                "metadata",
            ],
        },
    },
    "remappings": [],
}

_COMPILE_TIMEOUT_S = 600
_SOLC_VERSION_RE = re.compile(r"Version:\s*(\d+\.\d+\.\d+)")


class SourceStamp(TypedDict):
    """The digest of one compiled source file."""

    sha256: str


class CompilerStamp(TypedDict):
    """The compiler that produced an artifact."""

    name: str
    version: str


class Artifact(TypedDict):
    """The committed artifact: what deploying and verifying the ledger need, and its provenance.

    The ABI is the contract's, which holds the interface's events and errors too.
    ``immutableReferences`` locates the immutables in ``deployedBytecode`` (zero there, filled
    in at deployment): mask them to compare on-chain code with the artifact.
    ``metadata`` is the compiler's metadata JSON, whose IPFS hash ends the bytecode.
    ``standardJsonInputSha256`` is the sha256 of the standard-JSON input serialized with
    sorted keys and no whitespace (see :func:`input_digest`).
    """

    abi: list[dict[str, Any]]
    bytecode: str
    compiler: CompilerStamp
    contractName: str
    deployedBytecode: str
    immutableReferences: dict[str, list[dict[str, int]]]
    metadata: str
    settings: dict[str, Any]
    sourceName: str
    sources: dict[str, SourceStamp]
    standardJsonInputSha256: str


class CompilerNotFoundError(CompilationError, FileNotFoundError):
    """No usable solc 0.8.30 (native or solc-js) was found."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"no Solidity compiler {SOLC_VERSION} found: {reason}")


@dataclass(frozen=True)
class Compiler:
    """A compiler to run: a native ``solc`` (through py-solc-x) or solc-js (``solcjs``).

    Attributes
    ----------
    kind:
        ``"solc"`` for a native binary, ``"solcjs"`` for solc-js's command line.
    path:
        The executable.
    """

    kind: Literal["solc", "solcjs"]
    path: Path

    def __str__(self) -> str:
        return f"{'native solc' if self.kind == 'solc' else 'solc-js'} at {self.path}"


# --------------------------------------------------------------------------- the checkout


def find_checkout(start: str | Path | None = None) -> Path:
    """The source checkout holding ``start`` (default: the current directory) or one of its parents.

    A checkout is a directory with ``contracts/FederatedLedger.sol`` and
    ``contracts/IFederatedLedger.sol``. It is looked for from the working directory, never from
    where the package is installed: an installed wheel holds no contracts and no ``node_modules``.

    Raises
    ------
    CompilationError
        No directory from ``start`` upwards is a checkout.
    """
    here = Path(start if start is not None else Path.cwd()).resolve()
    for directory in (here, *here.parents):
        if all((directory / "contracts" / name).is_file() for name in SOURCE_FILES):
            return directory
    raise CompilationError(
        f"no fedchain checkout (a contracts/ directory with {' and '.join(SOURCE_FILES)}) in {here} "
        "or any parent: run from the repository, or pass the contracts directory (--contracts DIR)"
    )


def default_contracts_dir() -> Path:
    """``contracts/`` of the checkout the working directory is in (:func:`find_checkout`)."""
    return find_checkout() / "contracts"


# --------------------------------------------------------------------------- input


def standard_json_input(contracts_dir: str | Path | None = None) -> dict[str, Any]:
    """Build the standard-JSON input for the ledger sources in ``contracts_dir``.

    Parameters
    ----------
    contracts_dir:
        The directory holding ``FederatedLedger.sol`` and ``IFederatedLedger.sol``
        (default: ``contracts/`` of the checkout the working directory is in).

    Returns
    -------
    dict
        The input: sources given by content under their file names, and :data:`SETTINGS`.

    Raises
    ------
    CompilationError
        A source file is missing or is not UTF-8.
    """
    sources = {name: {"content": text} for name, text in _read_sources(_contracts_dir(contracts_dir)).items()}
    return {"language": "Solidity", "sources": sources, "settings": json.loads(json.dumps(SETTINGS))}


def input_digest(input_json: Mapping[str, Any]) -> str:
    """sha256 (hex) of a standard-JSON input serialized with sorted keys and no whitespace."""
    canonical = json.dumps(input_json, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- compiler


def find_compiler(*, solcjs: str | Path | None = None, root: str | Path | None = None) -> Compiler:
    """Find solc 0.8.30: ``solcjs`` if given, else native, else the repository's solc-js.

    The native compiler is ``solc`` on ``PATH`` if it reports version 0.8.30, else a 0.8.30
    that py-solc-x installed earlier (nothing is ever downloaded). The fallback is
    ``<root>/node_modules/.bin/solcjs``, which ``npm ci`` installs.

    Parameters
    ----------
    solcjs:
        Use this solc-js executable and look for nothing else.
    root:
        The repository root holding ``node_modules`` (default: the checkout the working
        directory is in, :func:`find_checkout`).

    Raises
    ------
    CompilerNotFoundError
        Nothing usable was found; the message says what was looked at.
    """
    if solcjs is not None:
        path = Path(solcjs)
        if not path.is_file() or not os.access(path, os.X_OK):
            raise CompilerNotFoundError(f"the solc-js given, {path}, is not an executable file")
        return Compiler("solcjs", path)

    looked: list[str] = []
    on_path = shutil.which("solc")
    if on_path is not None:
        version = _native_version(Path(on_path))
        if version == SOLC_VERSION:
            return Compiler("solc", Path(on_path))
        looked.append(f"`solc` on PATH ({on_path}) is version {version or 'unknown'}")
    else:
        looked.append("no `solc` on PATH")

    installed = _solcx_executable()
    if installed is not None:
        return Compiler("solc", installed)
    looked.append(f"py-solc-x has no solc {SOLC_VERSION} installed")

    if root is None:
        try:
            root = find_checkout()
        except CompilationError:
            looked.append(f"no checkout with node_modules in {Path.cwd()} or above")
            raise CompilerNotFoundError(
                f"{'; '.join(looked)}. Run `npm ci` in the repository root to install solc-js, and compile from there"
            ) from None
    default = Path(root) / SOLCJS_IN_CHECKOUT
    if default.is_file() and os.access(default, os.X_OK):
        return Compiler("solcjs", default)
    looked.append(f"no solc-js at {default}")
    raise CompilerNotFoundError(f"{'; '.join(looked)}. Run `npm ci` in {root} to install solc-js")


def _native_version(path: Path) -> str | None:
    try:
        out = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=60, check=False).stdout
    except (OSError, subprocess.SubprocessError) as err:
        logger.info("cannot run %s --version: %s", path, err)
        return None
    match = _SOLC_VERSION_RE.search(out)
    return match.group(1) if match else None


def _solcx_executable() -> Path | None:
    import solcx  # lazily: reading the artifact must not need py-solc-x
    from solcx.exceptions import SolcNotInstalled

    try:
        return Path(solcx.install.get_executable(version=SOLC_VERSION))
    except SolcNotInstalled:
        return None


def _run_compiler(compiler: Compiler, input_json: Mapping[str, Any]) -> dict[str, Any]:
    """Run ``compiler`` on ``input_json``; return its output, raising on any error it reports."""
    started = time.monotonic()
    if compiler.kind == "solc":
        output = _run_native(compiler.path, input_json)
    else:
        output = _run_solcjs(compiler.path, input_json)
    logger.info("compiled with %s in %.1f s", compiler, time.monotonic() - started)
    _raise_on_errors(output.get("errors", []))
    return output


def _run_native(path: Path, input_json: Mapping[str, Any]) -> dict[str, Any]:
    import solcx  # lazily, as above
    from solcx.exceptions import SolcError

    try:
        output: dict[str, Any] = solcx.compile_standard(dict(input_json), solc_binary=path)
    except SolcError as err:
        if err.error_dict:  # the compiler ran and reported errors
            _raise_on_errors(cast(list[dict[str, Any]], err.error_dict))
        raise CompilationError(
            f"{path} failed: {err.message} (exit code {err.return_code}): {err.stderr_data}"
        ) from err
    except OSError as err:
        raise CompilationError(f"cannot run {path}: {err}") from err
    return output


def _run_solcjs(path: Path, input_json: Mapping[str, Any]) -> dict[str, Any]:
    # Files, not pipes: solcjs ends with console.log(output); process.exit(0), and node drops
    # whatever of a large output has not yet drained into a pipe (it came out cut at 62,861 bytes).
    with tempfile.TemporaryFile() as stdin, tempfile.TemporaryFile() as stdout:
        stdin.write(json.dumps(input_json).encode("utf-8"))
        stdin.seek(0)
        try:
            proc = subprocess.run(
                [str(path), "--standard-json"],
                stdin=stdin,
                stdout=stdout,
                stderr=subprocess.PIPE,
                timeout=_COMPILE_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.SubprocessError) as err:
            raise CompilationError(f"cannot run solc-js {path}: {err}") from err
        stdout.seek(0)
        text = stdout.read().decode("utf-8", errors="replace")
    if proc.returncode != 0:
        stderr = proc.stderr.decode("utf-8", errors="replace").strip()
        raise CompilationError(f"solc-js {path} exited with code {proc.returncode}: {stderr or text.strip()[:2000]}")
    return _parse_solcjs_output(text)


def _parse_solcjs_output(text: str) -> dict[str, Any]:
    """Parse solcjs's stdout: the JSON output, after lines of chatter such as
    ``>>> Cannot retry compilation with SMT because there are no SMT solvers available.``"""
    if text.startswith("{"):
        start = 0
    else:
        newline = text.find("\n{")
        if newline < 0:
            raise CompilationError(f"solc-js printed no JSON output: {text.strip()[:2000]!r}")
        start = newline + 1
    try:
        output, end = json.JSONDecoder().raw_decode(text, start)
    except json.JSONDecodeError as err:
        raise CompilationError(
            f"solc-js output is not complete JSON ({err.msg} at character {err.pos} of {len(text)})"
        ) from err
    if not isinstance(output, dict):
        raise CompilationError(f"solc-js output is a JSON {type(output).__name__}, not an object")
    if start or text[end:].strip():
        logger.debug("solc-js also printed: %r", (text[:start] + text[end:]).strip())
    return output


def _raise_on_errors(diagnostics: list[dict[str, Any]]) -> None:
    errors = [d for d in diagnostics if d.get("severity") == "error"]
    for diagnostic in diagnostics:
        if diagnostic.get("severity") != "error":
            logger.warning("solc: %s", _formatted(diagnostic))
    if errors:
        messages = "\n".join(_formatted(d) for d in errors)
        raise CompilationError(f"solc reported {len(errors)} error(s):\n{messages}")


def _formatted(diagnostic: Mapping[str, Any]) -> str:
    text = diagnostic.get("formattedMessage") or f"{diagnostic.get('type', 'Error')}: {diagnostic.get('message')}"
    return str(text).strip()


# --------------------------------------------------------------------------- artifact


def compile_contracts(contracts_dir: str | Path | None = None, *, solc: Compiler | None = None) -> Artifact:
    """Compile the ledger contract and build its artifact.

    Parameters
    ----------
    contracts_dir:
        The directory holding the sources (default: ``contracts/`` of the checkout the working
        directory is in).
    solc:
        The compiler (default: :func:`find_compiler`).

    Returns
    -------
    Artifact
        ABI, bytecode, and their provenance (compiler, settings, source digests).

    Raises
    ------
    CompilationError
        The sources cannot be read, no compiler was found (:class:`CompilerNotFoundError`),
        or the compiler reported errors (their formatted messages are in the error).
    """
    directory = _contracts_dir(contracts_dir)
    raw_sources = _read_source_bytes(directory)
    input_json = standard_json_input(directory)
    output = _run_compiler(solc if solc is not None else find_compiler(), input_json)

    contract = _output_contract(output, SOURCE_NAME, CONTRACT_NAME)
    metadata_text = contract["metadata"]
    version = json.loads(metadata_text)["compiler"]["version"]
    if not version.startswith(f"{SOLC_VERSION}+commit."):
        raise CompilationError(f"the compiler is version {version}, not {SOLC_VERSION}")
    evm = contract["evm"]
    return Artifact(
        abi=contract["abi"],
        bytecode=_hex(evm["bytecode"]["object"]),
        compiler=CompilerStamp(name="solc", version=version),
        contractName=CONTRACT_NAME,
        deployedBytecode=_hex(evm["deployedBytecode"]["object"]),
        immutableReferences=evm["deployedBytecode"].get("immutableReferences", {}),
        metadata=metadata_text,
        settings=input_json["settings"],
        sourceName=SOURCE_NAME,
        sources={name: SourceStamp(sha256=hashlib.sha256(data).hexdigest()) for name, data in raw_sources.items()},
        standardJsonInputSha256=input_digest(input_json),
    )


def render_artifact(artifact: Mapping[str, Any]) -> bytes:
    """The artifact's one byte form: JSON, sorted keys, two-space indent, ASCII, final newline."""
    return (json.dumps(artifact, sort_keys=True, indent=2, ensure_ascii=True) + "\n").encode("ascii")


def write_artifact(artifact: Mapping[str, Any], path: str | Path | None = None) -> Path:
    """Write ``artifact`` (rendered by :func:`render_artifact`) to ``path`` atomically.

    Parameters
    ----------
    artifact:
        What :func:`compile_contracts` returned.
    path:
        Where to write (default: :data:`ARTIFACT_PATH`, the committed artifact).

    Returns
    -------
    Path
        The file written.
    """
    target = Path(path) if path is not None else ARTIFACT_PATH
    target.parent.mkdir(parents=True, exist_ok=True)
    data = render_artifact(artifact)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    logger.info("wrote %s (%d bytes)", target, len(data))
    return target


def check_artifact(
    contracts_dir: str | Path | None = None,
    *,
    solc: Compiler | None = None,
    artifact_path: str | Path | None = None,
) -> None:
    """Check that the committed artifact is byte-identical to a fresh compile.

    Parameters
    ----------
    contracts_dir:
        The sources to compile (default: ``contracts/`` of the checkout the working directory is in).
    solc:
        The compiler (default: :func:`find_compiler`).
    artifact_path:
        The artifact to check (default: :data:`ARTIFACT_PATH`).

    Raises
    ------
    ArtifactMismatchError
        They differ; the message names each difference (a changed source, the bytecode, the ABI...).
    CompilationError
        The fresh compile failed.
    """
    path = Path(artifact_path) if artifact_path is not None else ARTIFACT_PATH
    fresh = compile_contracts(contracts_dir, solc=solc)
    expected = render_artifact(fresh)
    try:
        committed_bytes = path.read_bytes()
    except FileNotFoundError:
        raise ArtifactMismatchError(f"there is no committed artifact at {path}") from None
    if committed_bytes == expected:
        return
    try:
        committed = json.loads(committed_bytes)
    except ValueError as err:
        raise ArtifactMismatchError(f"the committed artifact {path} is not valid JSON: {err}") from err
    differences = describe_differences(committed, fresh)
    if not differences:
        differences = ["same content, but not in canonical form (sorted keys, two-space indent, final newline)"]
    source_dir = _contracts_dir(contracts_dir)
    raise ArtifactMismatchError(
        f"the committed artifact {path} differs from a fresh compile of {source_dir}: " + "; ".join(differences)
    )


def describe_differences(committed: Mapping[str, Any], fresh: Mapping[str, Any]) -> list[str]:
    """Say, field by field, how a committed artifact differs from a fresh one (empty: no difference)."""
    differences: list[str] = []
    old_sources = committed.get("sources") or {}
    new_sources = fresh.get("sources") or {}
    for name in sorted(set(old_sources) | set(new_sources)):
        if name not in new_sources:
            differences.append(f"source {name} is in the artifact but was not compiled")
        elif name not in old_sources:
            differences.append(f"source {name} is not in the artifact")
        elif old_sources[name] != new_sources[name]:
            old = (old_sources[name] or {}).get("sha256")
            new = new_sources[name]["sha256"]
            differences.append(f"source {name} changed (sha256 {_short(old)} in the artifact, {_short(new)} now)")
    labels = {
        "compiler": "compiler version",
        "settings": "compiler settings",
        "standardJsonInputSha256": "standard-JSON input hash",
        "bytecode": "bytecode",
        "deployedBytecode": "deployed bytecode",
        "abi": "ABI",
        "immutableReferences": "immutable references",
        "metadata": "metadata",
    }
    for key, label in labels.items():
        if committed.get(key) != fresh.get(key):
            differences.append(f"{label} differs{_detail(key, committed, fresh)}")
    for key in sorted((set(committed) | set(fresh)) - set(labels) - {"sources"}):
        if committed.get(key) != fresh.get(key):
            differences.append(f"field {key} differs")
    return differences


def load_artifact() -> Artifact:
    """Read the committed artifact shipped in the package; needs no compiler.

    Raises
    ------
    CompilationError
        The package was built without its artifact.
    """
    resource = importlib.resources.files("fedchain.chain") / "artifacts" / f"{CONTRACT_NAME}.json"
    try:
        return cast(Artifact, json.loads(resource.read_bytes()))
    except FileNotFoundError as err:
        raise CompilationError(f"the package has no {CONTRACT_NAME} artifact (run `fedchain compile`)") from err


# --------------------------------------------------------------------------- helpers


def _contracts_dir(contracts_dir: str | Path | None) -> Path:
    return Path(contracts_dir) if contracts_dir is not None else default_contracts_dir()


def _read_source_bytes(directory: Path) -> dict[str, bytes]:
    sources: dict[str, bytes] = {}
    for name in SOURCE_FILES:
        try:
            sources[name] = (directory / name).read_bytes()
        except OSError as err:
            raise CompilationError(f"cannot read contract source {directory / name}: {err.strerror or err}") from err
    return sources


def _read_sources(directory: Path) -> dict[str, str]:
    texts: dict[str, str] = {}
    for name, data in _read_source_bytes(directory).items():
        try:
            texts[name] = data.decode("utf-8")
        except UnicodeDecodeError as err:
            raise CompilationError(f"contract source {directory / name} is not UTF-8: {err}") from err
    return texts


def _output_contract(output: Mapping[str, Any], source: str, name: str) -> dict[str, Any]:
    try:
        return cast(dict[str, Any], output["contracts"][source][name])
    except (KeyError, TypeError):
        raise CompilationError(f"the compiler output has no contract {name} in {source}") from None


def _hex(code: str) -> str:
    return code if code.startswith("0x") else f"0x{code}"


def _short(digest: object) -> str:
    return f"{digest[:12]}..." if isinstance(digest, str) else "none"


def _detail(key: str, committed: Mapping[str, Any], fresh: Mapping[str, Any]) -> str:
    if key == "compiler":
        old = (committed.get("compiler") or {}).get("version")
        new = (fresh.get("compiler") or {}).get("version")
        return f" ({old} in the artifact, {new} now)"
    if key in ("bytecode", "deployedBytecode"):
        old, new = committed.get(key), fresh.get(key)
        if isinstance(old, str) and isinstance(new, str):
            return f" ({(len(old) - 2) // 2} bytes in the artifact, {(len(new) - 2) // 2} bytes now)"
    return ""


__all__ = [
    "ARTIFACT_PATH",
    "CONTRACT_NAME",
    "SETTINGS",
    "SOLCJS_IN_CHECKOUT",
    "SOLC_VERSION",
    "Artifact",
    "Compiler",
    "CompilerNotFoundError",
    "check_artifact",
    "compile_contracts",
    "default_contracts_dir",
    "describe_differences",
    "find_checkout",
    "find_compiler",
    "input_digest",
    "load_artifact",
    "render_artifact",
    "standard_json_input",
    "write_artifact",
]
