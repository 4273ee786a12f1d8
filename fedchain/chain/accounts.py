"""Actors' keys and locally signed transactions.

Every transaction fedchain sends is signed here, with the acting organisation's own key
(eth-account), and submitted raw: no node ever holds a key, so the same code runs against
any node. Each :class:`Signer` tracks its own nonce, so several actors (or several threads
of one actor) can send at once without colliding.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

import coincurve
import rlp
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_canonical_address
from eth_utils.crypto import keccak
from hexbytes import HexBytes

from fedchain.errors import ConfigError
from fedchain.types import Address

logger = logging.getLogger(__name__)

#: The fields of the EIP-1559 transactions :meth:`Signer.sign` serializes itself.
_EIP1559_FIELDS = frozenset(
    {"type", "chainId", "nonce", "maxPriorityFeePerGas", "maxFeePerGas", "gas", "to", "value", "data"}
)


class Signer:
    """One actor's key plus its nonce counter.

    Parameters
    ----------
    account:
        The local account (private key) of the actor.
    name:
        A human label for logs and reports (``coordinator``, ``st-mary``...).
    """

    def __init__(self, account: LocalAccount, name: str | None = None) -> None:
        self._account = account
        self.name = name or account.address[:10]
        self._lock = threading.Lock()
        self._next_nonce: dict[int, int] = {}
        self._secp256k1: coincurve.PrivateKey | None = None

    @property
    def address(self) -> Address:
        """The actor's checksummed address."""
        return Address(self._account.address)

    @classmethod
    def from_key(cls, key: str | bytes, name: str | None = None) -> Signer:
        """A signer from a raw private key (hex or bytes)."""
        try:
            return cls(Account.from_key(key), name)
        except Exception as err:  # eth-keys raises ValidationError/ValueError/TypeError
            raise ConfigError(name or "key", "not a valid private key") from err

    @classmethod
    def create(cls, name: str | None = None) -> Signer:
        """A signer with a fresh random key."""
        return cls(Account.create(), name)

    @classmethod
    def from_keystore(cls, path: Path, password: str, name: str | None = None) -> Signer:
        """Decrypt an eth-account (Web3 Secret Storage) keystore file."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise ConfigError(str(path), f"cannot read keystore: {err}") from err
        try:
            key = Account.decrypt(data, password)
        except ValueError as err:
            raise ConfigError(str(path), "wrong password or corrupted keystore") from err
        return cls(Account.from_key(key), name)

    def to_keystore(self, path: Path, password: str, *, kdf_iterations: int | None = None) -> None:
        """Write the key encrypted to ``path`` (mode 0600); refuses to overwrite."""
        kwargs: dict[str, Any] = {}
        if kdf_iterations is not None:
            kwargs["iterations"] = kdf_iterations
            kwargs["kdf"] = "pbkdf2"
        data = Account.encrypt(self._account.key, password, **kwargs)
        path = Path(path)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f)

    def reserve_nonce(self, chain_id: int, fetch: Any) -> int:
        """Hand out the next nonce for ``chain_id``; ``fetch()`` gives the chain's pending count."""
        with self._lock:
            nonce = self._next_nonce.get(chain_id)
            if nonce is None:
                nonce = int(fetch())
            self._next_nonce[chain_id] = nonce + 1
            return nonce

    def forget_nonce(self, chain_id: int) -> None:
        """Drop the cached nonce so the next transaction asks the chain again."""
        with self._lock:
            self._next_nonce.pop(chain_id, None)

    def sign(self, tx: dict[str, Any]) -> HexBytes:
        """Sign a transaction dict; return the raw bytes.

        The EIP-1559 transactions fedchain sends (no access list) are serialized and signed here
        directly with libsecp256k1: the same bytes eth-account gives (RFC 6979 nonces, low ``s``),
        in a sixth of the time (0.2 ms, not 1.2 ms; every transaction of a round waits for it).
        Any other transaction goes through eth-account.
        """
        if tx.get("type") == 2 and set(tx) <= _EIP1559_FIELDS:
            return HexBytes(self._sign_eip1559(tx))
        return HexBytes(self._account.sign_transaction(tx).raw_transaction)

    def _sign_eip1559(self, tx: dict[str, Any]) -> bytes:
        """EIP-1559 (type 2): ``0x02 || rlp([chainId, nonce, tip, maxFee, gas, to, value, data, [], v, r, s])``."""
        to = tx.get("to")
        fields: list[Any] = [
            int(tx["chainId"]),
            int(tx["nonce"]),
            int(tx["maxPriorityFeePerGas"]),
            int(tx["maxFeePerGas"]),
            int(tx["gas"]),
            to_canonical_address(to) if to else b"",
            int(tx.get("value", 0)),
            bytes(HexBytes(tx.get("data", b""))),
            [],  # access list
        ]
        if self._secp256k1 is None:
            self._secp256k1 = coincurve.PrivateKey(bytes(self._account.key))
        signature = self._secp256k1.sign_recoverable(keccak(b"\x02" + rlp.encode(fields)), hasher=None)
        r, s, v = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:64], "big"), signature[64]
        return b"\x02" + bytes(rlp.encode([*fields, v, r, s]))

    def __repr__(self) -> str:
        return f"Signer({self.name!r}, {self.address})"


__all__ = ["Signer"]
