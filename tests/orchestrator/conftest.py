"""Fixtures of the orchestrator tests: the small demo data and a fresh store."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.federation import small_demo

from fedchain.storage import LocalBlockStore
from fedchain.tasks.api import DemoData


@pytest.fixture(scope="session")
def demo() -> DemoData:
    return small_demo()


@pytest.fixture
def store(tmp_path: Path) -> LocalBlockStore:
    return LocalBlockStore(tmp_path / "store")
