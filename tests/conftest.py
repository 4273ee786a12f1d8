"""Shared fixtures: real chains (eth-tester in process, anvil and hardhat processes), funded actors, a real IPFS daemon.

Real nodes are session-scoped: one per test worker, on free loopback ports, stopped at the end.
A missing node binary fails the tests that need it (``npm ci`` installs them all); nothing is
skipped unless asked:

- ``-m "not hardhat"`` deselects the hardhat runs (the ``chain`` fixture's ``hardhat`` parameter
  and ``tests/chain/test_hardhat.py``);
- ``FEDCHAIN_KUBO_API=http://HOST:PORT`` runs the real-daemon storage tests against that kubo
  instead of starting js-ipfs; ``FEDCHAIN_SKIP_IPFS_DAEMON=1`` skips them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedchain.chain import Chain, EmbeddedChain, Signer, connect
from fedchain.chain.anvil import AnvilNode
from fedchain.chain.hardhat import HardhatNode
from fedchain.config import kubo_api
from fedchain.errors import FedchainError
from fedchain.storage.jsipfs import JsIpfsNode


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "hardhat: runs on a hardhat node from npm (deselect with -m 'not hardhat')")
    config.addinivalue_line(
        "markers", "ipfs_daemon: runs against a real IPFS daemon (js-ipfs from npm, or FEDCHAIN_KUBO_API's kubo)"
    )


@pytest.fixture(scope="session")
def anvil_node() -> Iterator[AnvilNode]:
    """One anvil process per test worker, on a free loopback port, stopped at the end."""
    with AnvilNode() as node:
        yield node


@pytest.fixture(scope="session")
def hardhat_node() -> Iterator[HardhatNode]:
    """One ``hardhat node`` per test worker (Cancun, chain id 31337), on a free loopback port."""
    try:
        node = HardhatNode()
    except FedchainError as err:
        pytest.fail(f"{err} (or deselect the hardhat runs with -m 'not hardhat')")
    with node:
        yield node


@pytest.fixture(scope="session")
def ipfs_api() -> Iterator[str]:
    """The RPC API of a real IPFS daemon: ``FEDCHAIN_KUBO_API``'s kubo, else a js-ipfs started here.

    js-ipfs runs offline on loopback ports with a temporary repository (see
    :mod:`fedchain.storage.jsipfs`) and is stopped at the end of the session.
    """
    given = kubo_api()
    if given:
        yield given
        return
    if os.environ.get("FEDCHAIN_SKIP_IPFS_DAEMON") == "1":
        pytest.skip("FEDCHAIN_SKIP_IPFS_DAEMON=1: the real-daemon storage tests were asked not to run")
    try:
        node = JsIpfsNode()
    except FedchainError as err:
        pytest.fail(f"{err} (or set FEDCHAIN_KUBO_API to a kubo daemon)")
    with node:
        yield node.url


@pytest.fixture
def repo_env() -> dict[str, str]:
    """Environment for child Python processes that import fedchain from this checkout."""
    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


@pytest.fixture(params=["embedded", "anvil", pytest.param("hardhat", marks=pytest.mark.hardhat)])
def chain(request: pytest.FixtureRequest) -> Iterator[Chain]:
    """The same tests against the in-process chain and two real nodes."""
    if request.param == "embedded":
        c: Chain = EmbeddedChain()
    else:
        c = connect(request.getfixturevalue(f"{request.param}_node").url)
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
