"""The store's own CID text forms are parsed and formatted without multiformats, and agree with it.

CIDv0 (base58btc) and base32 CIDv1 of sha2-256 dag-pb/raw blocks take a direct path (a parse
and a format through multiformats cost as much as hashing a 100k-parameter update); every
other form goes through multiformats. Both must give the same answers.
"""

from __future__ import annotations

import random

import pytest
from multiformats import CID

from fedchain.errors import CidFormatError
from fedchain.storage._cid import DAG_PB, RAW, BlockRef, parse_cid

_NAMES = {DAG_PB: "dag-pb", RAW: "raw"}


def _reference_text(version: int, codec: int, multihash: bytes) -> str:
    if version == 0:
        return str(CID("base58btc", 0, "dag-pb", multihash))
    return str(CID("base32", 1, _NAMES[codec], multihash).encode("base32"))


@pytest.mark.parametrize(("version", "codec"), [(0, DAG_PB), (1, DAG_PB), (1, RAW)])
def test_the_direct_path_agrees_with_multiformats(version: int, codec: int) -> None:
    rng = random.Random(version * 1000 + codec)
    digests = [bytes(32), b"\xff" * 32] + [rng.randbytes(32) for _ in range(500)]
    for digest in digests:
        ref = BlockRef(version, codec, b"\x12\x20" + digest)
        text = ref.text()
        assert text == _reference_text(version, codec, ref.multihash)
        assert parse_cid(text) == ref
        cid = CID.decode(text)
        assert (cid.version, cid.codec.code, bytes(cid.digest)) == (version, codec, ref.multihash)


def test_other_forms_still_parse_through_multiformats() -> None:
    ref = BlockRef(1, DAG_PB, b"\x12\x20" + bytes(range(32)))
    for text in (
        CID("base58btc", 1, "dag-pb", ref.multihash).encode("base58btc"),
        ref.text().upper(),
        " " + ref.with_version(0).text() + "\n",
    ):
        assert parse_cid(text).multihash == ref.multihash


@pytest.mark.parametrize(
    "text",
    [
        "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbd0",  # '0' is not base58
        "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdGG",  # one character too many
        "QmzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzX",  # more than 34 bytes
        "bafybeie5nqv6kd3qnfjupgvz34woh3oksc3iau6abmyajn7qvtf6d2ho3",  # truncated
        "bafyreib4pff766vhpbxbhjbqqnsh5emeznvujayjj4z2iu533cprgbz23m",  # dag-cbor
    ],
)
def test_malformed_or_foreign_cids_are_refused(text: str) -> None:
    with pytest.raises(CidFormatError):
        parse_cid(text)
