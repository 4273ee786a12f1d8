"""Fixtures of the audit tests: a small data split and a fresh store (as for the orchestrator tests)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.federation import small_split

from fedchain.fl import FederatedSplit
from fedchain.storage import LocalBlockStore


@pytest.fixture(scope="module")
def split() -> FederatedSplit:
    split: FederatedSplit = small_split()
    return split


@pytest.fixture
def store(tmp_path: Path) -> LocalBlockStore:
    return LocalBlockStore(tmp_path / "store")
