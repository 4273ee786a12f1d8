"""Fixtures of the orchestrator tests: a small data split and a fresh store."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.federation import small_split

from fedchain.fl import FederatedSplit
from fedchain.storage import LocalBlockStore


@pytest.fixture(scope="module")
def split() -> FederatedSplit:
    return small_split()


@pytest.fixture
def store(tmp_path: Path) -> LocalBlockStore:
    return LocalBlockStore(tmp_path / "store")


@pytest.fixture
def make_federation(chain, store, split):  # type: ignore[no-untyped-def]
    """Build a federation on the test's chain and store, with optional settings."""
    from support.federation import SETTINGS, Federation

    def make(settings=SETTINGS):  # type: ignore[no-untyped-def]
        return Federation(chain, store, split, settings)

    return make
