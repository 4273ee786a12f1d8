"""The embedded chain's gas estimates: py-evm's binary search's answers, found with fewer executions."""

from __future__ import annotations

from typing import Any

import pytest
from eth.estimators import get_gas_estimator

from fedchain.chain import EmbeddedChain, Ledger, Signer
from fedchain.errors import RoundNotOpenError
from fedchain.hashing import sha256
from fedchain.types import Cid

CID = Cid("QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG")


class BothEstimates:
    """The chain's estimator and py-evm's own default, both asked every estimate (py-evm's answer is used)."""

    def __init__(self, chain: EmbeddedChain) -> None:
        evm = chain._backend.chain
        self.measured = evm.gas_estimator
        self.search = get_gas_estimator()  # what eth-tester's chain estimates with, left alone
        self.answers: list[tuple[int, int]] = []
        evm.gas_estimator = self

    def __call__(self, state: Any, transaction: Any) -> int:
        searched = int(self.search(state, transaction))
        self.answers.append((int(self.measured(state, transaction)), searched))
        return searched


def test_every_estimate_of_a_ledgers_life_is_the_binary_searchs() -> None:
    chain = EmbeddedChain()
    try:
        both = BothEstimates(chain)
        coordinator, *members = (Signer.create(n) for n in ("coordinator", "a", "b", "c"))
        for s in (coordinator, *members):
            chain.fund(s.address)
        ledger, _ = Ledger.deploy(chain, coordinator, sha256(b"genesis"), Cid("QmGenesis"), sha256(b"m"), Cid("QmM"))
        base = ledger.last_aggregate()
        for m in members:
            ledger.register_participant(coordinator, m.address, 1_000)
        for r in range(2):
            ledger.open_round(coordinator, r, base, CID, chain.now() + 600, 2)
            for m in members:
                ledger.submit_update(m, r, sha256(f"{r}/{m.address}".encode()), CID, 100 + r)
            ledger.close_round(coordinator, r)
            base = sha256(f"aggregate {r}".encode())
            ledger.finalize_round(coordinator, r, base, CID, [m.address for m in members])
        ledger.remove_participant(coordinator, members[0].address)
        with pytest.raises(RoundNotOpenError):
            ledger.close_round(coordinator, 1)  # a revert is still the contract's error
    finally:
        chain.close()
    assert both.measured is not both.search  # the chain estimates its own way
    assert len(both.answers) == 1 + 3 + 2 * (1 + 3 + 2) + 1  # deploy, register, 2 rounds, remove
    assert [measured for measured, _ in both.answers] == [searched for _, searched in both.answers]
