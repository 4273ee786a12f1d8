"""Real filesystem faults under the embedded store: a full disk and a read-only one.

Both are caused for real with small tmpfs mounts (the suite runs as root, as CI does);
without the privilege to mount, the tests skip and say why.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedchain.errors import StorageError
from fedchain.storage import LocalBlockStore, cid_of


def _mount(target: Path, options: str) -> None:
    target.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or proc.returncode}); needs root")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB filesystem."""
    target = tmp_path / "small"
    _mount(target, "size=1m")
    yield target
    subprocess.run(["umount", "-l", str(target)], check=False)


@pytest.fixture
def read_only_disk(tmp_path: Path) -> Iterator[Path]:
    """A store directory, created writable, then remounted read-only."""
    target = tmp_path / "ro"
    _mount(target, "size=4m")
    LocalBlockStore(target / "store")
    subprocess.run(["mount", "-o", "remount,ro", str(target)], check=True)
    yield target
    subprocess.run(["umount", "-l", str(target)], check=False)


def _block_files(root: Path) -> list[Path]:
    return [p for p in (root / "blocks").rglob("*") if p.is_file()] if (root / "blocks").exists() else []


def test_a_full_disk_during_add_is_a_clear_error_and_leaves_no_half_block(small_disk: Path) -> None:
    store = LocalBlockStore(small_disk / "store")
    blob = os.urandom(3 * 1024 * 1024)
    with pytest.raises(StorageError, match="No space left|ENOSPC|space"):
        store.put(blob)
    assert not store.has(cid_of(blob))
    # No temporary file is left behind, and whatever blocks made it are whole blocks.
    assert all(b.name.endswith(".data") and b.stat().st_size > 0 for b in _block_files(small_disk / "store"))
    small = os.urandom(1000)
    assert store.get(store.put(small)) == small


def test_a_read_only_store_refuses_adds_clearly_and_still_reads(read_only_disk: Path) -> None:
    store = LocalBlockStore(read_only_disk / "store", create=False)
    with pytest.raises(StorageError) as err:
        store.put(b"hello")
    assert "store" in str(err.value).lower() or "read-only" in str(err.value).lower()
    assert not store.has(cid_of(b"hello"))
