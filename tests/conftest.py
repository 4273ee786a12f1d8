"""Shared fixtures: real chains (eth-tester in process, and an anvil process), funded actors."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fedchain.chain import Chain, EmbeddedChain, Signer, connect
from fedchain.chain.anvil import AnvilNode


@pytest.fixture(scope="session")
def anvil_node() -> Iterator[AnvilNode]:
    """One anvil process per test worker, on a free loopback port, stopped at the end."""
    with AnvilNode() as node:
        yield node


@pytest.fixture(params=["embedded", "anvil"])
def chain(request: pytest.FixtureRequest) -> Iterator[Chain]:
    """The same tests against the in-process chain and a real node."""
    if request.param == "embedded":
        c: Chain = EmbeddedChain()
    else:
        c = connect(request.getfixturevalue("anvil_node").url)
    yield c
    c.close()


@pytest.fixture
def coordinator(chain: Chain) -> Signer:
    signer = Signer.create("coordinator")
    chain.fund(signer.address)
    return signer


@pytest.fixture
def participants(chain: Chain) -> list[Signer]:
    """Three funded hospital accounts, sorted by address (the aggregation order)."""
    signers = [Signer.create(name) for name in ("st-mary", "northgate", "riverside")]
    for s in signers:
        chain.fund(s.address)
    return sorted(signers, key=lambda s: int(s.address, 16))
