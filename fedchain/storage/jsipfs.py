"""Start and stop a local js-ipfs daemon (npm ``ipfs`` 0.66.1) for development and tests.

js-ipfs serves the same RPC API as kubo for everything :class:`~fedchain.storage.KuboStore`
sends (``version``, ``add``, ``block/get``, ``block/stat``, ``pin/add``, ``pin/rm``,
``dag/import``) and builds the same DAGs, so it stands in for kubo where no kubo binary can be
installed: ``npm ci`` installs it from the repository's ``package.json`` (whose ``overrides``
keep its loose dependency ranges on versions that start on Node 20).

The daemon is confined: a temporary ``IPFS_PATH`` initialised with the ``test`` profile,
every listener (API, gateway, gRPC, swarm) on ``127.0.0.1`` port 0, no bootstrap peers, no
MDNS, no delegates, no preload nodes, ``--offline``. It contacts nothing; the API port it
picked is read back from its log.

One difference from kubo matters: js-ipfs ignores ``offline`` when asked for a block it does
not hold and waits for bitswap until the request's ``timeout`` option expires, where kubo
answers "not found" at once; :class:`~fedchain.storage.KuboStore` sends a short ``timeout``
for that reason.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from fedchain.errors import StorageError, StoreUnavailableError

if TYPE_CHECKING:
    from typing_extensions import Self

logger = logging.getLogger(__name__)

#: The daemon's own config, merged over the ``test`` profile at initialisation.
_CONFIG = {
    "Addresses": {
        "Swarm": ["/ip4/127.0.0.1/tcp/0"],
        "API": "/ip4/127.0.0.1/tcp/0",
        "Gateway": "/ip4/127.0.0.1/tcp/0",
        "RPC": "/ip4/127.0.0.1/tcp/0",
        "Delegates": [],
    },
    "Bootstrap": [],
    "Discovery": {"MDNS": {"Enabled": False}, "webRTCStar": {"Enabled": False}},
}

_API_LINE = re.compile(r"HTTP API listening on /ip4/(127\.0\.0\.1)/tcp/(\d+)/http")
_READY = "Daemon is ready"


def find_jsipfs(search_from: Path | None = None) -> Path:
    """Locate js-ipfs's command-line entry point, ``node_modules/ipfs/src/cli.js``.

    Looks under ``node_modules`` of ``search_from`` (default: the current directory) and of the
    fedchain source checkout, and their parents.

    Raises
    ------
    StorageError
        If it is not installed, saying how to install it.
    """
    roots = [search_from or Path.cwd(), Path(__file__).resolve().parents[2]]
    for root in roots:
        for folder in (root, *root.parents):
            candidate = folder / "node_modules" / "ipfs" / "src" / "cli.js"
            if candidate.is_file():
                return candidate
    raise StorageError("js-ipfs not found: run `npm ci` in the fedchain checkout (package.json pins ipfs 0.66.1)")


class JsIpfsNode:
    """A running js-ipfs daemon on ``127.0.0.1``, with a repository of its own that is deleted at stop.

    Parameters
    ----------
    cli:
        Path of js-ipfs's ``cli.js`` (default: :func:`find_jsipfs`).
    node:
        The Node.js executable (default: ``node`` on ``PATH``).
    """

    def __init__(self, *, cli: Path | None = None, node: str | None = None) -> None:
        self._cli = cli or find_jsipfs()
        found = node or shutil.which("node")
        if found is None:
            raise StorageError("js-ipfs needs Node.js: `node` is not on PATH")
        self._node = found
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None

    @property
    def url(self) -> str:
        """The RPC API's address, ``http://127.0.0.1:PORT``."""
        if self._port is None:
            raise StorageError("js-ipfs is not running")
        return f"http://127.0.0.1:{self._port}"

    @property
    def pid(self) -> int | None:
        """The daemon's process id while it runs."""
        return self._proc.pid if self._proc is not None else None

    def start(self, timeout: float = 90.0) -> Self:
        """Initialise a repository, start the daemon and wait until it says it is ready.

        Raises
        ------
        StoreUnavailableError
            If the daemon exits or is not ready within ``timeout`` seconds (with its log's tail).
        """
        self._dir = tempfile.TemporaryDirectory(prefix="fedchain-jsipfs-")
        home = Path(self._dir.name)
        config = home / "config.json"
        config.write_text(json.dumps(_CONFIG), encoding="utf-8")
        log_path = home / "daemon.log"
        args = [
            self._node,
            str(self._cli),
            "daemon",
            "--offline",
            "--enable-preload=false",
            "--init-profile",
            "test",
            "--init-config",
            str(config),
        ]
        env = dict(os.environ, IPFS_PATH=str(home / "repo"), HOME=str(home))
        started = time.monotonic()
        with open(log_path, "wb") as log:
            self._proc = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = started + timeout
        while time.monotonic() < deadline:
            text = log_path.read_text(encoding="utf-8", errors="replace")
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self.stop()
                raise StoreUnavailableError("js-ipfs", f"daemon exited with {code}: {text.strip()[-800:]}")
            match = _API_LINE.search(text)
            if match and _READY in text:
                self._port = int(match.group(2))
                logger.info("js-ipfs up at %s (pid %d) in %.1f s", self.url, self._proc.pid, time.monotonic() - started)
                return self
            time.sleep(0.1)
        text = log_path.read_text(encoding="utf-8", errors="replace")
        self.stop()
        raise StoreUnavailableError("js-ipfs", f"daemon not ready within {timeout:.0f} s: {text.strip()[-800:]}")

    def stop(self) -> None:
        """Stop the daemon (SIGTERM, then SIGKILL after 15 s) and delete its repository."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None
        self._port = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


__all__ = ["JsIpfsNode", "find_jsipfs"]
