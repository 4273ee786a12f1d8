"""Domain scalars shared by every layer.

``NewType`` wrappers cost nothing at run time and let mypy tell a digest from a CID.
"""

from __future__ import annotations

from typing import NewType

#: A checksummed Ethereum address, ``0x`` + 40 hex digits.
Address = NewType("Address", str)

#: A 32-byte sha256 digest of a blob's bytes: what the ledger records.
Digest = NewType("Digest", bytes)

#: An IPFS content identifier in its string form (CIDv0 ``Qm...`` or CIDv1 ``b...``).
Cid = NewType("Cid", str)

#: A round number; round 0 builds on the genesis model.
RoundId = NewType("RoundId", int)

#: Gas units.
Gas = NewType("Gas", int)

__all__ = ["Address", "Cid", "Digest", "Gas", "RoundId"]
