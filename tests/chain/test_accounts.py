"""Signer.sign: the EIP-1559 transactions it serializes itself are exactly eth-account's bytes."""

from __future__ import annotations

from typing import Any

import pytest
from eth_account import Account
from hypothesis import given, settings
from hypothesis import strategies as st

from fedchain.chain import Signer

KEY = bytes(range(1, 33))
LEDGER = "0xd946A7885a729d00DbEd4A80c9a923C102b012E5"


def eth_account_bytes(tx: dict[str, Any]) -> bytes:
    return bytes(Account.from_key(KEY).sign_transaction(tx).raw_transaction)


def call(**fields: Any) -> dict[str, Any]:
    tx: dict[str, Any] = {
        "type": 2,
        "chainId": 31337,
        "nonce": 7,
        "data": "0x" + "ab" * 68,
        "gas": 120_000,
        "maxFeePerGas": 2 * 875_000_000 + 10**9,
        "maxPriorityFeePerGas": 10**9,
        "value": 0,
        "to": LEDGER,
    }
    tx.update(fields)
    return tx


@pytest.mark.parametrize(
    "tx",
    [
        call(),
        call(data="0x"),
        call(nonce=0, value=10**18),
        {k: v for k, v in call(data="0x6080" + "00" * 5000).items() if k != "to"},  # a deployment
        call(chainId=1, nonce=2**40, gas=30_000_000),
    ],
    ids=["call", "no data", "value", "deployment", "large numbers"],
)
def test_a_signed_transaction_is_the_bytes_eth_account_gives(tx: dict[str, Any]) -> None:
    raw = bytes(Signer.from_key(KEY).sign(tx))
    assert raw == eth_account_bytes(tx)
    assert Account.recover_transaction(raw) == Account.from_key(KEY).address


@settings(max_examples=50, deadline=None)
@given(
    nonce=st.integers(0, 2**64 - 1),
    gas=st.integers(21_000, 2**32),
    fee=st.integers(0, 2**128),
    tip=st.integers(0, 2**64),
    data=st.binary(max_size=300),
)
def test_any_call_is_signed_as_eth_account_signs_it(nonce: int, gas: int, fee: int, tip: int, data: bytes) -> None:
    tx = call(nonce=nonce, gas=gas, maxFeePerGas=fee + tip, maxPriorityFeePerGas=tip, data="0x" + data.hex())
    assert bytes(Signer.from_key(KEY).sign(tx)) == eth_account_bytes(tx)


def test_a_transaction_of_another_shape_is_signed_by_eth_account() -> None:
    legacy = {"chainId": 31337, "nonce": 1, "gas": 21_000, "gasPrice": 10**9, "to": LEDGER, "value": 1, "data": "0x"}
    assert bytes(Signer.from_key(KEY).sign(legacy)) == eth_account_bytes(legacy)
