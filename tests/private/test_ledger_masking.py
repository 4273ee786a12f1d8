"""The contract's private-round additions: masking keys, the roster at the open, reveals only into a closed round."""

from __future__ import annotations

import pytest

from fedchain.chain import EmbeddedChain, Ledger, Signer
from fedchain.errors import ContractRevertError, EmptyHashError, NotRegisteredError, RoundNotClosedError
from fedchain.hashing import sha256
from fedchain.types import Cid


def deployed() -> tuple[EmbeddedChain, Ledger, Signer, list[Signer]]:
    chain = EmbeddedChain()
    coordinator = Signer.create("coordinator")
    members = [Signer.create(f"p{i}") for i in range(3)]
    for s in (coordinator, *members):
        chain.fund(s.address)
    ledger, _ = Ledger.deploy(
        chain, coordinator, sha256(b"genesis"), Cid("QmGenesis"), sha256(b"manifest"), Cid("QmManifest")
    )
    for m in members:
        ledger.register_participant(coordinator, m.address, 100)
    return chain, ledger, coordinator, members


def test_the_roster_is_who_had_a_key_when_the_round_opened_with_their_last_key_before_it() -> None:
    chain, ledger, coordinator, (a, b, c) = deployed()
    ledger.register_masking_key(a, b"\x01" * 32)
    ledger.register_masking_key(b, b"\x02" * 32)
    ledger.register_masking_key(a, b"\x03" * 32)
    ledger.open_round(coordinator, 0, sha256(b"genesis"), Cid("QmGenesis"), chain.now() + 100, 1)
    ledger.register_masking_key(c, b"\x04" * 32)  # too late for round 0
    roster = ledger.roster(0, ledger.round_state(0).opened_block)
    assert roster == dict(
        sorted({a.address: b"\x03" * 32, b.address: b"\x02" * 32}.items(), key=lambda kv: int(kv[0], 16))
    )
    assert ledger.masking_key(c.address) == b"\x04" * 32


def test_keys_and_reveals_come_only_from_registered_participants_into_a_closed_round() -> None:
    chain, ledger, coordinator, (a, b, _) = deployed()
    outsider = Signer.create("outsider")
    chain.fund(outsider.address)
    with pytest.raises(NotRegisteredError):
        ledger.register_masking_key(outsider, b"\x01" * 32)
    with pytest.raises(EmptyHashError):
        ledger.register_masking_key(a, bytes(32))
    ledger.open_round(coordinator, 0, sha256(b"genesis"), Cid("QmGenesis"), chain.now() + 100, 1)
    with pytest.raises(RoundNotClosedError):
        ledger.reveal_shares(a, 0, {b.address: b"\x05" * 32})
    ledger.close_round(coordinator, 0)
    with pytest.raises(NotRegisteredError):
        ledger.reveal_shares(outsider, 0, {b.address: b"\x05" * 32})
    shares_tx = ledger.reveal_shares(a, 0, {b.address: b"\x05" * 32, a.address: b"\x07" * 32})
    pair_tx = ledger.reveal_pair_seeds(b, 0, {a.address: b"\x06" * 32})
    reveals = ledger.reveals(0)
    assert [(r.participant, dict(r.shares), dict(r.pair_seeds)) for r in reveals] == [
        (a.address, {a.address: b"\x07" * 32, b.address: b"\x05" * 32}, {}),
        (b.address, {}, {a.address: b"\x06" * 32}),
    ]
    assert shares_tx.gas_used < 35_000 and pair_tx.gas_used < 35_000
    with pytest.raises(ContractRevertError, match="RevealLengthMismatch"):
        ledger._transact(a, "a short reveal", ledger._contract.functions.revealShares(0, [a.address], []))
    ledger.abandon_round(coordinator, 0)
    with pytest.raises(RoundNotClosedError):
        ledger.reveal_shares(a, 0, {b.address: b"\x05" * 32})
