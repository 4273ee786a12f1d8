"""Fixtures for the storage tests: the CID oracle, random files, a store, a kubo stand-in."""

from __future__ import annotations

import email.parser
import email.policy
import io
import json
import random
import shutil
import subprocess
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from fedchain.errors import FedchainError
from fedchain.storage import LocalBlockStore
from fedchain.storage._cid import parse_cid
from fedchain.storage._unixfs import iter_dag

ORACLE = "ipfs_cid"


@pytest.fixture(scope="session")
def oracle() -> Callable[[Path], dict[str, str]]:
    """``ipfs_cid PATH`` (Debian package ipfs-cid): an independent UnixFS importer.

    It prints ``{"CIDv0": ..., "CIDv1": ...}`` for kubo's default import settings.
    The README's test command installs it; a missing oracle fails the tests rather than
    letting them pass unchecked.
    """
    exe = shutil.which(ORACLE)
    if exe is None:
        pytest.fail("ipfs_cid not found: install the Debian package ipfs-cid (scripts/test.sh does)")

    def run(path: Path) -> dict[str, str]:
        out = subprocess.run([exe, str(path)], capture_output=True, text=True, check=True, timeout=120)
        result: dict[str, str] = json.loads(out.stdout)
        return result

    return run


def random_bytes(size: int, seed: int) -> bytes:
    """Deterministic pseudo-random bytes."""
    return random.Random(seed).randbytes(size)


@pytest.fixture(name="random_bytes")
def random_bytes_fixture() -> Callable[[int, int], bytes]:
    """:func:`random_bytes` for test modules (which cannot import conftest in importlib mode)."""
    return random_bytes


@pytest.fixture
def write_file(tmp_path: Path) -> Callable[[bytes, str], Path]:
    def write(data: bytes, name: str = "blob.bin") -> Path:
        path = tmp_path / name
        path.write_bytes(data)
        return path

    return write


@pytest.fixture
def store(tmp_path: Path) -> LocalBlockStore:
    return LocalBlockStore(tmp_path / "store")


# --------------------------------------------------------------------------- kubo stand-in


@dataclass
class RecordedRequest:
    method: str
    path: str
    params: dict[str, list[str]]
    content_type: str


@dataclass
class KuboStandIn:
    """A stand-in for a kubo daemon's RPC API (not kubo): answers as kubo's RPC docs say.

    Implements the endpoints :class:`fedchain.storage.KuboStore` uses, POST-only, with
    JSON answers and kubo's error shape (HTTP 500, ``{"Message", "Code", "Type"}``).
    Blocks are kept in a :class:`LocalBlockStore` (whose CIDs the oracle tests pin down).
    Faults can be switched on to play a misbehaving daemon.
    """

    store: LocalBlockStore
    version: str = "0.32.1"
    url: str = ""
    requests: list[RecordedRequest] = field(default_factory=list)
    pins: set[str] = field(default_factory=set)
    #: Multihashes whose blocks ``block/get`` returns with one byte flipped.
    corrupt: set[bytes] = field(default_factory=set)
    #: If set, ``add`` answers this CID whatever was sent.
    lie_on_add: str | None = None
    #: If set, ``block/get`` answers at most this many bytes of a block.
    truncate_blocks: int | None = None
    #: If set, a missing block is answered as kubo does when the request's ``timeout`` option
    #: expires (an online daemon that looked for it), not as an offline lookup.
    missing_times_out: bool = False

    @property
    def multiaddr(self) -> str:
        parsed = urllib.parse.urlsplit(self.url)
        return f"/ip4/{parsed.hostname}/tcp/{parsed.port}"

    def calls(self, path: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == f"/api/v0/{path}"]


def _multipart_files(content_type: str, body: bytes) -> list[tuple[str, bytes]]:
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    )
    files = []
    for part in message.iter_parts():
        payload = part.get_payload(decode=True)
        files.append((str(part.get_filename() or ""), payload if isinstance(payload, bytes) else b""))
    return files


def _make_handler(kubo: KuboStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature fixed by http.server
            pass

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                out = bytearray()
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return bytes(out)
                    out += self.rfile.read(size)
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length", "0") or 0))

        def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, *objects: Any) -> None:
            self._send(200, b"".join(json.dumps(o).encode() + b"\n" for o in objects))

        def _error(self, message: str, status: int = 500) -> None:
            self._send(status, json.dumps({"Message": message, "Code": 0, "Type": "error"}).encode() + b"\n")

        def _missing(self, arg: str) -> None:
            if kubo.missing_times_out:
                self._error("context deadline exceeded")
            else:
                self._error(f"block was not found locally (offline): ipld: could not find {arg}")

        def do_GET(self) -> None:  # noqa: N802 - http.server naming
            self._body()
            self._send(405, b"405 - Method Not Allowed\n", "text/plain")

        def do_POST(self) -> None:  # noqa: N802 - http.server naming
            url = urllib.parse.urlsplit(self.path)
            params = urllib.parse.parse_qs(url.query)
            try:
                body = self._body()
            except (ValueError, OSError):  # the client gave up mid-upload (a refused blob)
                self.close_connection = True
                return
            kubo.requests.append(RecordedRequest("POST", url.path, params, self.headers.get("Content-Type", "")))
            arg = params.get("arg", [""])[0]
            try:
                self._dispatch(url.path, params, arg, body)
            except FedchainError as err:
                self._error(str(err))

        def _dispatch(self, path: str, params: dict[str, list[str]], arg: str, body: bytes) -> None:
            store = kubo.store
            if path == "/api/v0/version":
                self._json(
                    {
                        "Version": kubo.version,
                        "Commit": "stand-in",
                        "Repo": "16",
                        "System": "amd64/linux",
                        "Golang": "go1.23.4",
                    }
                )
            elif path == "/api/v0/add":
                # Only the settings the stand-in can reproduce; kubo itself would honour others.
                expected = {
                    "cid-version": "0",
                    "raw-leaves": "false",
                    "chunker": "size-262144",
                    "trickle": "false",
                    "hash": "sha2-256",
                }
                for key, value in expected.items():
                    if params.get(key, [None])[0] not in (value, value.capitalize()):
                        self._error(f"stand-in: unsupported add option {key}={params.get(key)}")
                        return
                answers = []
                for name, data in _multipart_files(self.headers["Content-Type"], body):
                    cid = store.put(data)
                    if params.get("pin", ["true"])[0].lower() == "true":
                        kubo.pins.add(cid)
                    tsize = sum(len(block) for _, block in iter_dag(store._read_block, parse_cid(cid)))
                    answers.append({"Name": name or cid, "Hash": kubo.lie_on_add or cid, "Size": str(tsize)})
                self._json(*answers)
            elif path == "/api/v0/block/get":
                ref = parse_cid(arg)
                block = store._read_block(ref)
                if block is None:
                    self._missing(arg)
                    return
                if ref.multihash in kubo.corrupt:
                    block = block[:-1] + bytes([block[-1] ^ 1])
                if kubo.truncate_blocks is not None:
                    block = block[: kubo.truncate_blocks]
                self._send(200, block, "text/plain")
            elif path == "/api/v0/block/stat":
                ref = parse_cid(arg)
                block = store._read_block(ref)
                if block is None:
                    self._missing(arg)
                    return
                self._json({"Key": arg, "Size": len(block)})
            elif path == "/api/v0/pin/add":
                if not store.has(arg):
                    self._error(f"pin: block was not found locally (offline): ipld: could not find {arg}")
                    return
                kubo.pins.add(arg)
                self._json({"Pins": [arg]})
            elif path == "/api/v0/pin/rm":
                if arg not in kubo.pins:
                    self._error("not pinned or pinned indirectly")
                    return
                kubo.pins.discard(arg)
                self._json({"Pins": [arg]})
            elif path == "/api/v0/dag/import":
                ((_, car),) = _multipart_files(self.headers["Content-Type"], body)
                roots = store.import_car(io.BytesIO(car))
                kubo.pins.update(roots)
                self._json(*({"Root": {"Cid": {"/": root}, "PinErrorMsg": ""}} for root in roots))
            else:
                self._error(f"unknown command {path!r}", status=404)

    return Handler


@pytest.fixture
def kubo(tmp_path: Path) -> Iterator[KuboStandIn]:
    """A running kubo stand-in on a free loopback port."""
    standin = KuboStandIn(store=LocalBlockStore(tmp_path / "kubo-standin-repo"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(standin))
    server.daemon_threads = True
    standin.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="kubo-standin", daemon=True)
    thread.start()
    try:
        yield standin
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
