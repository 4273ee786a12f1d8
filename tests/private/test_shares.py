"""Self seeds as Shamir shares: splitting, sealing to each holder, the header's sealed shares, reconstruction."""

from __future__ import annotations

import hashlib
from itertools import combinations

import numpy as np
import pytest
from eth_utils.address import to_checksum_address

from fedchain.errors import CodecError, ConfigError
from fedchain.fl import masking
from fedchain.fl.masking import MaskedExpect, MaskingKey
from fedchain.protocol.masked import build_masked_update, self_seed
from fedchain.protocol.privacy import default_masked, parse_privacy
from fedchain.types import Address, Digest

CHAIN, LEDGER, ROUND = 31337, bytes(range(20)), 7
SEED = hashlib.sha256(b"a self seed").digest()


def address(i: int) -> Address:
    return Address(to_checksum_address(f"0x{(i + 1) * 0x1111:040x}"))


def test_any_threshold_of_the_shares_give_the_seed_back_and_fewer_do_not() -> None:
    shares = masking.split_seed(SEED, threshold=3, holders=5)
    assert [len(s) for s in shares] == [32] * 5
    for chosen in combinations(range(5), 3):
        assert masking.combine_seed({k + 1: shares[k] for k in chosen}) == SEED
    for chosen in combinations(range(5), 2):
        assert masking.combine_seed({k + 1: shares[k] for k in chosen}) != SEED
    again = masking.split_seed(SEED, threshold=3, holders=5)
    assert again != shares  # fresh coefficients: the shares of one seed differ every time


def test_a_threshold_below_two_or_above_the_holders_is_refused() -> None:
    for threshold in (1, 6):
        with pytest.raises(ValueError, match=r"threshold must be an int in \[2, 5\]"):
            masking.split_seed(SEED, threshold=threshold, holders=5)


def test_a_sealed_share_opens_only_for_its_holder_in_its_round_and_ledger() -> None:
    alice, bob, carol = MaskingKey.generate(), MaskingKey.generate(), MaskingKey.generate()
    a, b = address(0), address(1)
    share = hashlib.sha256(b"share").digest()
    where = {"chain_id": CHAIN, "ledger": LEDGER, "round_id": ROUND}
    sealed = masking.seal_share(alice, bob.public_bytes(), share, sender=a, recipient=b, **where)
    assert len(sealed) == masking.SEALED_SIZE
    assert masking.open_share(bob, alice.public_bytes(), sealed, sender=a, recipient=b, **where) == share
    refused = [
        (carol, alice.public_bytes(), where, a, b),  # another member's key
        (bob, alice.public_bytes(), {**where, "round_id": ROUND + 1}, a, b),  # another round
        (bob, alice.public_bytes(), {**where, "ledger": bytes(20)}, a, b),  # another ledger
        (bob, alice.public_bytes(), {**where, "chain_id": 1}, a, b),  # another chain
        (bob, alice.public_bytes(), where, b, a),  # the other direction (another nonce and AAD)
    ]
    for key, public, context, sender, recipient in refused:
        with pytest.raises(masking.ShareError):
            masking.open_share(key, public, sealed, sender=sender, recipient=recipient, **context)
    tampered = bytes([sealed[0] ^ 1]) + sealed[1:]
    with pytest.raises(masking.ShareError):
        masking.open_share(bob, alice.public_bytes(), tampered, sender=a, recipient=b, **where)


def test_the_two_directions_of_a_pair_use_different_nonces_and_the_share_key_is_not_the_pair_seed() -> None:
    a, b = address(0), address(1)
    assert masking.share_nonce(ROUND, a, b) != masking.share_nonce(ROUND, b, a)
    assert masking.share_nonce(ROUND, a, b) != masking.share_nonce(ROUND + 1, a, b)
    alice, bob = MaskingKey.generate(), MaskingKey.generate()
    seed = masking.pair_seed(alice, bob.public_bytes(), chain_id=CHAIN, ledger=LEDGER, round_id=ROUND, low=a, high=b)
    # sealing with the pair seed as if it were the share key gives another ciphertext: the keys differ
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    share = bytes(32)
    as_if = ChaCha20Poly1305(seed).encrypt(
        masking.share_nonce(ROUND, a, b), share, masking.share_aad(CHAIN, LEDGER, ROUND, a, b)
    )
    sealed = masking.seal_share(
        alice, bob.public_bytes(), share, chain_id=CHAIN, ledger=LEDGER, round_id=ROUND, sender=a, recipient=b
    )
    assert sealed != as_if


CONFIG = parse_privacy({**default_masked(4), "clip": 10.0, "share_threshold": 3}).masked
assert CONFIG is not None


def submission(k: int = 4):  # type: ignore[no-untyped-def]
    keys = [MaskingKey.generate() for _ in range(k)]
    members = [address(i) for i in range(k)]
    roster = {a: key.public_bytes() for a, key in zip(members, keys, strict=True)}
    delta = {"w": np.linspace(-1, 1, 33, dtype=np.float32)}
    sub = build_masked_update(
        delta,
        num_samples=5,
        config=CONFIG,
        key=keys[0],
        roster=roster,
        me=members[0],
        chain_id=CHAIN,
        ledger=LEDGER,
        round_id=ROUND,
        base_hash=Digest(bytes(32)),
    )
    return sub, keys, members, roster


def test_a_submission_seals_a_committed_share_of_its_self_seed_to_every_roster_member_itself_included() -> None:
    sub, keys, members, roster = submission()
    header = masking.decode_masked(
        sub.blob, num_elements=33, expect=MaskedExpect(ROUND, roster=tuple(roster), shared=True)
    ).header
    assert list(header.shares) == members
    opened = {}
    for holder, key in zip(members, keys, strict=True):
        share = masking.open_share(
            key,
            roster[members[0]],
            header.shares[holder].sealed,
            chain_id=CHAIN,
            ledger=LEDGER,
            round_id=ROUND,
            sender=members[0],
            recipient=holder,
        )
        assert masking.check_share(header, holder, share)
        assert not masking.check_share(header, members[(members.index(holder) + 1) % 4], share)
        opened[holder] = share
    seed = self_seed(keys[0], chain_id=CHAIN, ledger=LEDGER, round_id=ROUND, me=members[0])
    assert masking.reconstruct_seed(roster, header, opened, threshold=3) == seed
    assert masking.reconstruct_seed(roster, header, {a: opened[a] for a in members[1:]}, threshold=3) == seed
    with pytest.raises(masking.RevealError, match="missing: 2 shares, 3 needed"):
        masking.reconstruct_seed(roster, header, {a: opened[a] for a in members[2:]}, threshold=3)


def test_shares_that_do_not_combine_into_the_committed_seed_name_their_owner() -> None:
    sub, _, members, roster = submission()
    header = masking.decode_masked(sub.blob, num_elements=33).header
    others = masking.split_seed(bytes(32), threshold=3, holders=4)  # a sharing of another seed
    with pytest.raises(masking.RevealError) as caught:
        masking.reconstruct_seed(roster, header, dict(zip(members, others, strict=True)), threshold=3)
    assert (caught.value.participant, caught.value.problem) == (members[0], "not reconstructible from its shares")


def test_a_header_without_a_share_for_every_roster_member_is_refused() -> None:
    sub, _, members, roster = submission()
    decoded = masking.decode_masked(sub.blob, num_elements=33)
    from dataclasses import replace

    fewer = replace(decoded.header, shares={a: v for a, v in decoded.header.shares.items() if a != members[2]})
    blob = masking.encode_masked(np.asarray(decoded.words), fewer)
    masking.decode_masked(blob, num_elements=33, expect=MaskedExpect(roster=tuple(roster)))  # without shared: fine
    with pytest.raises(CodecError) as caught:
        masking.decode_masked(blob, num_elements=33, expect=MaskedExpect(roster=tuple(roster), shared=True))
    assert (caught.value.reason, caught.value.detail) == (
        "roster",
        "sealed shares cover 3 members, the roster has 4",
    )
    value = decoded.header.shares[members[1]].to_hex()
    assert value.encode() in sub.blob
    upper = sub.blob.replace(value.encode(), ("0x" + value[2:].upper()).encode())  # the same bytes, not canonical hex
    with pytest.raises(CodecError) as caught:
        masking.decode_masked(upper, num_elements=33)
    assert caught.value.reason == "metadata"


def test_a_roster_smaller_than_the_threshold_cannot_submit() -> None:
    with pytest.raises(ValueError, match="a roster of 2 cannot hold 3-of-n shares"):
        submission(2)


def test_the_share_threshold_defaults_to_the_minimum_and_is_checked_at_manifest_construction() -> None:
    parsed = parse_privacy(default_masked(3)).masked
    assert parsed is not None and parsed.share_threshold == parsed.min_survivors == 2
    for value, message in ((1, "must be an integer >= 2, got 1"), (17, "17 shares needed, more than the 16")):
        with pytest.raises(ConfigError) as caught:
            parse_privacy({**default_masked(3), "share_threshold": value})
        assert caught.value.key == "manifest.privacy.share_threshold"
        assert message in str(caught.value)
