"""Several processes adding to one store, and a writer killed mid-add, leave a consistent store."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedchain.storage import CHUNK_SIZE, LocalBlockStore, cid_of

# The child writes blobs made from seeds, so the parent can rebuild the expected bytes.
ADDER = """
import json, os, random, sys, time
from fedchain.storage import LocalBlockStore
store_dir, go, seeds = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
store = LocalBlockStore(store_dir)
while not os.path.exists(go):
    time.sleep(0.001)
cids = [store.put(random.Random(seed).randbytes(size)) for seed, size in seeds]
print(json.dumps(cids))
"""

SLOW_ADDER = """
import io, random, sys, time
from fedchain.storage import LocalBlockStore
store = LocalBlockStore(sys.argv[1], max_blob_size=1 << 30)
class Slow(io.RawIOBase):
    def __init__(self):
        self.rng = random.Random(42)
    def readable(self):
        return True
    def readinto(self, buf):
        time.sleep(0.005)
        n = min(len(buf), 65536)
        buf[:n] = self.rng.randbytes(n)
        return n
store.put_stream(Slow())
"""


def blob(seed: int, size: int) -> bytes:
    import random

    return random.Random(seed).randbytes(size)


def assert_every_block_file_is_whole(store_dir: Path) -> int:
    """Each ``.data`` file hashes to its name; returns how many there are."""
    count = 0
    for path in (store_dir / "blocks").rglob("*.data"):
        multihash = b"\x12\x20" + hashlib.sha256(path.read_bytes()).digest()
        assert base64.b32encode(multihash).decode().rstrip("=") == path.stem, path
        count += 1
    return count


def test_two_processes_adding_same_and_different_blobs_leave_a_consistent_store(
    tmp_path: Path, repo_env: dict[str, str]
) -> None:
    store_dir = tmp_path / "shared-store"
    go = tmp_path / "go"
    shared = [(1, 3 * CHUNK_SIZE + 11), (2, 200_000), (3, 0)]
    own = {"a": [(10, 2 * CHUNK_SIZE), (11, 5)], "b": [(20, CHUNK_SIZE + 1), (21, 70_000)]}
    children = {
        name: subprocess.Popen(
            [sys.executable, "-c", ADDER, str(store_dir), str(go), json.dumps(shared + mine)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=repo_env,
        )
        for name, mine in own.items()
    }
    time.sleep(0.3)  # both import fedchain and open the store, then start together
    go.touch()
    results = {}
    for name, child in children.items():
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        results[name] = json.loads(out)
    store = LocalBlockStore(store_dir)
    for name, mine in own.items():
        for (seed, size), cid in zip(shared + mine, results[name]):
            data = blob(seed, size)
            assert cid == cid_of(data)
            assert store.get(cid) == data
    assert results["a"][:3] == results["b"][:3]
    assert not list(store_dir.rglob("*.tmp"))
    assert assert_every_block_file_is_whole(store_dir) > 0


@pytest.mark.slow
def test_a_writer_killed_mid_add_leaves_no_partial_block(tmp_path: Path, repo_env: dict[str, str]) -> None:
    store_dir = tmp_path / "store"
    child = subprocess.Popen([sys.executable, "-c", SLOW_ADDER, str(store_dir)], env=repo_env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while len(list((store_dir / "blocks").rglob("*.data"))) < 8:
            assert child.poll() is None, child.stderr.read() if child.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        if child.stderr:
            child.stderr.close()
    assert assert_every_block_file_is_whole(store_dir) >= 8
    # The store is still usable: new adds work and read back.
    store = LocalBlockStore(store_dir)
    data = blob(5, 3 * CHUNK_SIZE)
    assert store.get(store.put(data)) == data
