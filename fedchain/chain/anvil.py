"""Start and stop a local anvil node (npm ``@foundry-rs/anvil``) for development and tests.

anvil is started on a loopback port with ``--prune-history 256`` (the last 256 states, in
memory only: a bare ``--prune-history`` kept so few that a call at a block just mined was
refused) and a temporary ``HOME``: otherwise it keeps every historical state and writes under
``~/.foundry`` (gigabytes over a long run) and can stall. With ``state_file`` it loads and dumps its state there, so a
restarted node carries on from where it stopped.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import requests

from fedchain.errors import ChainConnectionError, ChainError

logger = logging.getLogger(__name__)

_PLATFORMS = {
    ("Linux", "x86_64"): "linux-amd64",
    ("Linux", "aarch64"): "linux-arm64",
    ("Darwin", "arm64"): "darwin-arm64",
    ("Darwin", "x86_64"): "darwin-amd64",
}


def find_anvil(explicit: str | None = None, search_from: Path | None = None) -> Path:
    """Locate the anvil binary.

    Looks at ``explicit``, then ``anvil`` on ``PATH``, then the platform package that
    ``npm ci`` installs under ``node_modules`` of ``search_from`` (default: the current
    directory and the fedchain source checkout) and their parents.

    Raises
    ------
    ChainError
        If no anvil binary is found, saying how to install one.
    """
    if explicit:
        path = Path(explicit)
        if path.is_file():
            return path
        raise ChainError(f"anvil not found at {explicit}")
    on_path = shutil.which("anvil")
    if on_path:
        return Path(on_path)
    suffix = _PLATFORMS.get((platform.system(), platform.machine()))
    roots = [search_from or Path.cwd(), Path(__file__).resolve().parents[2]]
    if suffix:
        for root in roots:
            for folder in (root, *root.parents):
                candidate = folder / "node_modules" / "@foundry-rs" / f"anvil-{suffix}" / "bin" / "anvil"
                if candidate.is_file():
                    return candidate
    raise ChainError("anvil not found: run `npm ci` in the fedchain checkout (package.json pins @foundry-rs/anvil)")


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class AnvilNode:
    """A running anvil process on ``127.0.0.1``.

    Parameters
    ----------
    port:
        Port to listen on (default: a free one).
    state_file:
        If given, anvil loads its state from here at start and dumps it here on exit and
        periodically (``--state`` and ``--state-interval``).
    binary:
        Path of the anvil binary (default: :func:`find_anvil`).
    block_time:
        Seconds between blocks; ``None`` mines one block per transaction.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        state_file: Path | None = None,
        binary: str | None = None,
        block_time: float | None = None,
    ) -> None:
        self.port = port or free_port()
        self.state_file = state_file
        self._binary = find_anvil(binary)
        self._block_time = block_time
        self._home: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The node's JSON-RPC URL."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The anvil process id while it runs."""
        return self._proc.pid if self._proc is not None else None

    def start(self, timeout: float = 30.0) -> AnvilNode:
        """Start anvil and wait until it answers ``eth_chainId``."""
        self._home = tempfile.TemporaryDirectory(prefix="fedchain-anvil-home-")
        args = [
            str(self._binary),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--prune-history",
            "256",
            "--silent",
        ]
        if self.state_file is not None:
            args += ["--state", str(self.state_file), "--state-interval", "1"]
        if self._block_time is not None:
            args += ["--block-time", str(self._block_time)]
        env = dict(os.environ, HOME=self._home.name)
        self._proc = subprocess.Popen(
            args, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                raise ChainConnectionError(self.url, f"anvil exited with {self._proc.returncode}: {err.strip()[:500]}")
            try:
                r = requests.post(
                    self.url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}, timeout=1
                )
                if r.ok:
                    logger.info("anvil %s up at %s (pid %d)", self._binary, self.url, self._proc.pid)
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.05)
        self.stop()
        raise ChainConnectionError(self.url, f"anvil did not answer within {timeout:.0f}s")

    def stop(self, *, kill: bool = False) -> None:
        """Stop anvil (SIGTERM so it dumps its state; SIGKILL with ``kill``)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._proc is not None and self._proc.stderr is not None:
            self._proc.stderr.close()
        self._proc = None
        if self._home is not None:
            self._home.cleanup()
            self._home = None

    def __enter__(self) -> AnvilNode:  # noqa: PYI034 - subclasses are not expected
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


__all__ = ["AnvilNode", "find_anvil", "free_port"]
