"""Start and stop a local Hardhat Network node (npm ``hardhat`` 2.28.6) for development and tests.

A second real Ethereum node beside anvil, from other code (Nomic Foundation's EDR, whose
native binary ships inside the npm package). The node runs ``hardhat node`` on a loopback port
with a generated config (hardfork ``cancun``, which the ledger's bytecode needs, chain id
31337) in a temporary project directory; that directory's ``node_modules`` is a link to the
checkout's, because hardhat refuses to run from an installation outside its project (HH12).

Hardhat's development methods differ from anvil's: it refuses ``anvil_setBalance`` ("method
not supported") and answers ``hardhat_setBalance``; both answer ``evm_increaseTime`` and
``evm_mine``. :meth:`fedchain.chain.RpcChain.fund` tries one family, then the other.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import requests

from fedchain.chain.anvil import free_port
from fedchain.errors import ChainConnectionError, ChainError

if TYPE_CHECKING:
    from typing_extensions import Self

logger = logging.getLogger(__name__)

#: The hardfork the node runs: the ledger's bytecode uses Cancun opcodes.
HARDFORK = "cancun"
#: Hardhat Network's default chain id, set explicitly.
CHAIN_ID = 31337


def find_hardhat(search_from: Path | None = None) -> Path:
    """Locate the ``node_modules`` folder holding hardhat.

    Looks under ``search_from`` (default: the current directory) and the fedchain source
    checkout, and their parents.

    Raises
    ------
    ChainError
        If hardhat is not installed, saying how to install it.
    """
    roots = [search_from or Path.cwd(), Path(__file__).resolve().parents[2]]
    for root in roots:
        for folder in (root, *root.parents):
            modules = folder / "node_modules"
            if (modules / "hardhat" / "internal" / "cli" / "bootstrap.js").is_file():
                return modules
    raise ChainError("hardhat not found: run `npm ci` in the fedchain checkout (package.json pins hardhat)")


class HardhatNode:
    """A running ``hardhat node`` on ``127.0.0.1``.

    Parameters
    ----------
    port:
        Port to listen on (default: a free one).
    node_modules:
        The ``node_modules`` folder holding hardhat (default: :func:`find_hardhat`).
    node:
        The Node.js executable (default: ``node`` on ``PATH``).
    """

    def __init__(self, port: int | None = None, *, node_modules: Path | None = None, node: str | None = None) -> None:
        self.port = port or free_port()
        self._modules = node_modules or find_hardhat()
        found = node or shutil.which("node")
        if found is None:
            raise ChainError("hardhat needs Node.js: `node` is not on PATH")
        self._node = found
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The node's JSON-RPC URL."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The node's process id while it runs."""
        return self._proc.pid if self._proc is not None else None

    def start(self, timeout: float = 90.0) -> Self:
        """Write the project, start ``hardhat node`` and wait until it answers ``eth_chainId``.

        Raises
        ------
        ChainConnectionError
            If the node exits or does not answer within ``timeout`` seconds (with its log's tail).
        """
        self._dir = tempfile.TemporaryDirectory(prefix="fedchain-hardhat-")
        project = Path(self._dir.name)
        (project / "node_modules").symlink_to(self._modules.resolve(), target_is_directory=True)
        settings = {"networks": {"hardhat": {"hardfork": HARDFORK, "chainId": CHAIN_ID}}}
        config = project / "hardhat.config.js"
        config.write_text(f"module.exports = {json.dumps(settings)};\n", encoding="utf-8")
        log_path = project / "node.log"
        args = [
            self._node,
            str(project / "node_modules" / "hardhat" / "internal" / "cli" / "bootstrap.js"),
            "--config",
            str(config),
            "node",
            "--hostname",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        env = dict(os.environ, HOME=str(project), HARDHAT_DISABLE_TELEMETRY_PROMPT="true")
        started = time.monotonic()
        with open(log_path, "wb") as log:
            self._proc = subprocess.Popen(
                args, cwd=project, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = started + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                text = log_path.read_text(encoding="utf-8", errors="replace")
                self.stop()
                raise ChainConnectionError(self.url, f"hardhat exited with {code}: {text.strip()[-800:]}")
            try:
                r = requests.post(
                    self.url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}, timeout=1
                )
                if r.ok:
                    logger.info(
                        "hardhat up at %s (pid %d) in %.1f s", self.url, self._proc.pid, time.monotonic() - started
                    )
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        text = log_path.read_text(encoding="utf-8", errors="replace")
        self.stop()
        raise ChainConnectionError(self.url, f"hardhat did not answer within {timeout:.0f}s: {text.strip()[-800:]}")

    def stop(self) -> None:
        """Stop the node (SIGTERM, then SIGKILL after 15 s) and delete its project directory."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


__all__ = ["CHAIN_ID", "HARDFORK", "HardhatNode", "find_hardhat"]
