"""The chain and store a Flower process uses: opened once per process from the settings."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from fedchain.chain import Chain, connect
from fedchain.errors import ConfigError
from fedchain.flower._config import FlowerSettings
from fedchain.storage import BlobStore, open_store

EMBEDDED = "embedded"

_lock = threading.Lock()
_in_process: list[tuple[Chain, BlobStore]] = []
_opened: dict[tuple[str, str], tuple[Chain, BlobStore]] = {}


@contextmanager
def in_process(chain: Chain, store: BlobStore) -> Iterator[None]:
    """Within the block, ``fedchain-rpc = "embedded"`` means this chain and this store (simulation in one process)."""
    with _lock:
        _in_process.append((chain, store))
    try:
        yield
    finally:
        with _lock:
            _in_process.remove((chain, store))


def backends(settings: FlowerSettings) -> tuple[Chain, BlobStore]:
    """The chain and store ``settings`` name (the same objects for every caller in this process).

    Raises
    ------
    ConfigError
        If the chain or store is not set, or ``embedded`` is named outside :func:`in_process`.
    """
    rpc = settings.require("rpc")
    if rpc == EMBEDDED:
        with _lock:
            if not _in_process:
                raise ConfigError("fedchain-rpc", "'embedded' names the in-process chain, but none is registered")
            return _in_process[-1]
    location = settings.require("store")
    with _lock:
        key = (rpc, location)
        if key not in _opened:
            _opened[key] = (connect(rpc), open_store(location))
        return _opened[key]


__all__ = ["EMBEDDED", "backends", "in_process"]
