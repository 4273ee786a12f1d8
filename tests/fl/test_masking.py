"""Masked updates: fixed point, masks, canonical blobs, unmasking with dropouts, attributed reveal checks."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pytest
from eth_utils.address import to_checksum_address
from scipy import stats

from fedchain.errors import CodecError
from fedchain.fl import masking
from fedchain.fl.dp import DpSpend
from fedchain.fl.masking import (
    MaskedExpect,
    MaskedHeader,
    MaskingKey,
    MaskingParams,
    PairCommitmentError,
    RevealError,
)
from fedchain.types import Address, Digest, RoundId

CHAIN_ID = 31337
LEDGER = bytes.fromhex("5fbdb2315678afecb367f032d93f642f64180aa3")
ROUND = 7
BASE = Digest(hashlib.sha256(b"base model").digest())
PARAMS = MaskingParams(frac_bits=24, clip=1.0)
SHAPES = {"b": (5,), "w": (3, 4)}
SIZE = sum(math.prod(s) for s in SHAPES.values())


def _address(i: int) -> Address:
    return Address(to_checksum_address(hashlib.sha256(b"participant %d" % i).digest()[:20]))


@dataclass(frozen=True)
class Member:
    address: Address
    key: MaskingKey
    self_seed: bytes
    samples: int
    delta: dict[str, np.ndarray]


def _members(k: int, seed: int = 0) -> list[Member]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(k):
        delta = {n: rng.normal(0.0, 0.3, size=s).astype(np.float32) for n, s in SHAPES.items()}
        key = MaskingKey.from_private_bytes(hashlib.sha256(b"mask key %d %d" % (seed, i)).digest())
        self_seed = hashlib.sha256(b"self seed %d %d" % (seed, i)).digest()
        out.append(Member(_address(i), key, self_seed, int(rng.integers(10, 500)), delta))
    return out


def _pair_seeds(me: Member, roster: Sequence[Member]) -> dict[Address, bytes]:
    seeds = {}
    for other in roster:
        if other.address == me.address:
            continue
        low, high = sorted((me.address, other.address), key=masking.address_key)
        seeds[other.address] = masking.pair_seed(
            me.key, other.key.public_bytes(), chain_id=CHAIN_ID, ledger=LEDGER, round_id=ROUND, low=low, high=high
        )
    return seeds


def _submit(me: Member, roster: Sequence[Member]) -> tuple[bytes, dict[Address, bytes]]:
    """A member's masked blob and its pair seeds."""
    pairs = _pair_seeds(me, roster)
    q = masking.quantize(me.delta, me.samples, PARAMS)
    y = masking.mask_update(q, self_seed=me.self_seed, pair_seeds=pairs, me=me.address)
    header = MaskedHeader(
        round_id=RoundId(ROUND),
        base=BASE,
        sender=me.address,
        samples=me.samples,
        params=PARAMS,
        self_commitment=masking.commit(me.self_seed, masking.self_salt(ROUND, me.address)),
        pair_commitments={j: masking.commit(s, masking.pair_salt(ROUND, me.address, j)) for j, s in pairs.items()},
    )
    return masking.encode_masked(y, header), pairs


def _run_round(k: int, dropped: set[int], seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[Member], list[Member]]:
    """Unmask a round of ``k`` members of which ``dropped`` never submitted; the unmasked and the plain sums."""
    members = _members(k, seed)
    survivors = [m for i, m in enumerate(members) if i not in dropped]
    gone = [m for i, m in enumerate(members) if i in dropped]
    roster = [m.address for m in members]
    decoded, pairs = {}, {}
    for m in survivors:
        blob, pairs[m.address] = _submit(m, members)
        decoded[m.address] = masking.decode_masked(blob, num_elements=SIZE, expect=MaskedExpect(roster=roster))
    sum_y = masking.sum_words(d.words for d in decoded.values())
    sum_q = masking.unmask(
        sum_y,
        roster=roster,
        survivors=[m.address for m in survivors],
        headers={a: d.header for a, d in decoded.items()},
        self_seeds={m.address: m.self_seed for m in survivors},
        pair_seeds={(m.address, j.address): pairs[m.address][j.address] for m in survivors for j in gone},
    )
    plain = masking.sum_words(masking.quantize(m.delta, m.samples, PARAMS) for m in survivors)
    return sum_q, plain, survivors, gone


# --------------------------------------------------------------------------- fixed point


def test_overflow_check_accepts_a_sum_below_two_to_the_63():
    MaskingParams(frac_bits=24, clip=1.0).check_overflow(max_total_samples=10**9, max_participants=100)


def test_overflow_check_refuses_a_sum_that_could_reach_two_to_the_63_and_names_the_numbers():
    params = MaskingParams(frac_bits=40, clip=10.0)
    with pytest.raises(ValueError, match=r"sum\(max_samples\) = 1000000 \* clip = 10.0 \* 2\*\*40"):
        params.check_overflow(max_total_samples=10**6, max_participants=3)


def test_overflow_check_is_tight_at_the_boundary():
    params = MaskingParams(frac_bits=0, clip=1.0)
    params.check_overflow(max_total_samples=2**62, max_participants=2)
    with pytest.raises(ValueError):
        params.check_overflow(max_total_samples=2**63 - 1, max_participants=2)


def test_quantize_rounds_half_to_even_in_units_of_two_to_the_minus_f():
    params = MaskingParams(frac_bits=1, clip=100.0)
    delta = {"a": np.array([0.25, 0.75, -0.25, -0.75, 1.0], dtype=np.float32)}  # times n=1, 2**1: .5 1.5 -.5 -1.5 2
    q = masking.quantize(delta, 1, params).view(np.int64)
    assert q.tolist() == [0, 2, 0, -2, 2]


def test_quantize_clips_the_l2_norm_and_leaves_an_update_within_the_bound_unchanged():
    params = MaskingParams(frac_bits=20, clip=5.0)
    big = {"a": np.array([3.0, 4.0], dtype=np.float32) * 2}  # norm 10 -> scaled by 1/2
    small = {"a": np.array([3.0, 4.0], dtype=np.float32)}  # norm 5: not scaled
    assert masking.quantize(big, 3, params).view(np.int64).tolist() == [3 * 3 << 20, 3 * 4 << 20]
    assert masking.quantize(small, 3, params).view(np.int64).tolist() == [3 * 3 << 20, 3 * 4 << 20]


def test_quantize_orders_tensors_by_name_and_refuses_non_finite_values():
    params = MaskingParams(frac_bits=0, clip=100.0)
    q = masking.quantize({"z": np.array([1.0], np.float32), "a": np.array([2.0], np.float32)}, 1, params)
    assert q.view(np.int64).tolist() == [2, 1]
    with pytest.raises(ValueError, match="NaN or infinite"):
        masking.quantize({"a": np.array([np.nan], np.float32)}, 1, params)


def test_dequantize_reads_twos_complement_words():
    words = np.array([-3 << 10, 5 << 10], dtype=np.int64).view(np.uint64)
    assert masking.dequantize(words, 2, MaskingParams(frac_bits=10, clip=1.0)).tolist() == [-1.5, 2.5]


# --------------------------------------------------------------------------- keys, seeds, PRG


def test_pair_seeds_are_the_same_at_both_ends():
    a, b = _members(2)
    assert _pair_seeds(a, [a, b])[b.address] == _pair_seeds(b, [a, b])[a.address]


def test_pair_seeds_differ_between_rounds_and_ledgers():
    a, b = _members(2)
    low, high = sorted((a.address, b.address), key=masking.address_key)
    seeds = {
        masking.pair_seed(a.key, b.key.public_bytes(), chain_id=c, ledger=led, round_id=r, low=low, high=high)
        for c, led, r in [(1, LEDGER, 0), (2, LEDGER, 0), (1, bytes(20), 0), (1, LEDGER, 1)]
    }
    assert len(seeds) == 4


def test_a_masking_key_round_trips_through_its_private_bytes():
    key = MaskingKey.generate()
    assert MaskingKey.from_private_bytes(key.private_bytes()).public_bytes() == key.public_bytes()
    assert len(key.public_bytes()) == 32


def test_prg_is_the_rfc_8439_chacha20_keystream_as_little_endian_words():
    # RFC 8439 appendix A.1, test vector 1: zero key, zero nonce, block counter 0
    first = bytes.fromhex("76b8e0ada0f13d90405d6ae55386bd28bdd219b8a08ded1aa836efcc8b770dc7")
    assert masking.prg(bytes(32), 4).tobytes() == first


def test_mask_update_over_several_keystream_chunks_equals_the_plain_formula():
    n = 2 * (1 << 17) + 3
    rng = np.random.default_rng(1)
    q = rng.integers(0, 2**63, size=n, dtype=np.uint64)
    me, lower, higher = _address(0), _address(1), _address(2)
    lower, me, higher = sorted((me, lower, higher), key=masking.address_key)
    b, s_low, s_high = (bytes([i]) * 32 for i in (1, 2, 3))
    y = masking.mask_update(q, self_seed=b, pair_seeds={lower: s_low, higher: s_high}, me=me)
    expected = q + masking.prg(b, n) + masking.prg(s_high, n) - masking.prg(s_low, n)
    assert np.array_equal(y, expected)


# --------------------------------------------------------------------------- a reader learns nothing


def test_masked_words_are_uniform_bytes_even_for_a_constant_update():
    members = _members(3)
    constant = {n: np.full(s, 0.01, dtype=np.float32) for n, s in SHAPES.items()}
    counts = np.zeros(256, dtype=np.int64)
    for r in range(200):
        m = replace(members[0], delta=constant, self_seed=hashlib.sha256(b"round %d" % r).digest())
        blob, _ = _submit(m, members)
        words = masking.decode_masked(blob, num_elements=SIZE).words
        counts += np.bincount(words.view(np.uint8), minlength=256)
    assert stats.chisquare(counts).pvalue > 1e-3
    # the same test has the power to see the structure of the unmasked words
    q = masking.quantize(constant, members[0].samples, PARAMS)
    plain = np.bincount(np.tile(q, 200).view(np.uint8), minlength=256)
    assert stats.chisquare(plain).pvalue < 1e-100


def test_masked_words_do_not_correlate_with_the_true_words():
    members = _members(3)
    rng = np.random.default_rng(5)
    n = 20_000
    q = masking.quantize({"a": rng.normal(0.0, 1e-3, size=n).astype(np.float32)}, 100, PARAMS)
    pairs = _pair_seeds(members[0], members)
    y = masking.mask_update(q, self_seed=members[0].self_seed, pair_seeds=pairs, me=members[0].address)
    signed_q, signed_y = q.view(np.int64).astype(np.float64), y.view(np.int64).astype(np.float64)
    r = np.corrcoef(signed_q, signed_y)[0, 1]
    assert abs(r) < 4 / math.sqrt(n)  # four standard errors of a correlation at chance
    assert np.corrcoef(signed_q, signed_q + rng.normal(size=n) * signed_q.std())[0, 1] > 0.5  # a leak would show


# --------------------------------------------------------------------------- exact unmasking with dropouts


@pytest.mark.parametrize(("k", "dropped"), [(3, set()), (3, {1}), (10, set()), (10, {0, 4, 9})])
def test_the_unmasked_aggregate_is_exactly_the_plain_fixed_point_sum(k, dropped):
    sum_q, plain, _, _ = _run_round(k, dropped)
    assert np.array_equal(sum_q, plain)


@pytest.mark.parametrize(("k", "dropped"), [(3, {1}), (10, {0, 4, 9})])
def test_the_decoded_aggregate_is_within_the_quantization_bound_of_float_fedavg(k, dropped):
    sum_q, _, survivors, _ = _run_round(k, dropped)
    n = sum(m.samples for m in survivors)
    avg = masking.dequantize(sum_q, n, PARAMS)
    clipped = []
    for m in survivors:
        x = masking.flatten(m.delta).astype(np.float64)
        norm = math.sqrt(math.fsum(x * x))
        clipped.append(x * (PARAMS.clip / norm) if norm > PARAMS.clip else x)
    assert any(not np.array_equal(c, masking.flatten(m.delta)) for c, m in zip(clipped, survivors))  # some clipped
    reference = sum(m.samples * c for m, c in zip(survivors, clipped)) / n
    # each word is off by at most 1/2 unit of 2**-f; the mean by K/2 units over n, plus float64 roundings
    bound = len(survivors) * 2.0 ** -(PARAMS.frac_bits + 1) / n
    err = np.abs(avg - reference)
    assert float(err.max()) <= bound + 1e-15
    assert float(err.max()) > 0.0  # quantization is visible: the comparison is not vacuous


def test_an_honest_mean_is_within_the_aggregate_norm_bound_and_an_unclipped_word_is_not():
    sum_q, _, survivors, _ = _run_round(3, {1})
    n = sum(m.samples for m in survivors)
    bound = masking.aggregate_norm_bound(PARAMS, SIZE, len(survivors), n)
    assert math.sqrt(math.fsum(masking.dequantize(sum_q, n, PARAMS) ** 2)) <= bound
    cheat = sum_q.copy()
    cheat[:2] += np.uint64(n << PARAMS.frac_bits)  # one participant added an unclipped 1.0 to two elements
    assert math.sqrt(math.fsum(masking.dequantize(cheat, n, PARAMS) ** 2)) > bound


def test_the_new_model_is_the_frozen_float_step_over_the_decoded_mean():
    sum_q, _, survivors, _ = _run_round(3, {1})
    n = sum(m.samples for m in survivors)
    theta = np.linspace(-1, 1, SIZE, dtype=np.float32)
    new = masking.apply_masked_aggregate(theta, sum_q, n, 0.5, PARAMS)
    by_hand = (theta.astype(np.float64) + 0.5 * (sum_q.view(np.int64).astype(np.float64) * 2.0**-24 / n)).astype(
        np.float32
    )
    assert new.dtype == np.float32 and np.array_equal(new, by_hand)
    assert hashlib.sha256(new.tobytes()).hexdigest() == hashlib.sha256(by_hand.tobytes()).hexdigest()


def test_a_tampered_masked_word_changes_the_unmasked_sum_at_that_element():
    members = _members(3)
    roster = [m.address for m in members]
    decoded, pairs = {}, {}
    for m in members:
        blob, pairs[m.address] = _submit(m, members)
        decoded[m.address] = masking.decode_masked(blob, num_elements=SIZE)
    honest = masking.sum_words(d.words for d in decoded.values())
    tampered_words = decoded[roster[0]].words.copy()
    tampered_words[3] ^= np.uint64(1)
    tampered = masking.sum_words([tampered_words, *(decoded[a].words for a in roster[1:])])
    args = {
        "roster": roster,
        "survivors": roster,
        "headers": {a: d.header for a, d in decoded.items()},
        "self_seeds": {m.address: m.self_seed for m in members},
        "pair_seeds": {},
    }
    good, bad = masking.unmask(honest, **args), masking.unmask(tampered, **args)
    assert np.flatnonzero(good != bad).tolist() == [3]


# --------------------------------------------------------------------------- attributed reveal checks


def _three_with_one_dropped():
    members = _members(3)
    survivors, gone = [members[0], members[2]], members[1]
    decoded, pairs = {}, {}
    for m in survivors:
        blob, pairs[m.address] = _submit(m, members)
        decoded[m.address] = masking.decode_masked(blob, num_elements=SIZE)
    args = {
        "roster": [m.address for m in members],
        "survivors": [m.address for m in survivors],
        "headers": {a: d.header for a, d in decoded.items()},
        "self_seeds": {m.address: m.self_seed for m in survivors},
        "pair_seeds": {(m.address, gone.address): pairs[m.address][gone.address] for m in survivors},
    }
    return masking.sum_words(d.words for d in decoded.values()), args, survivors, gone


def test_a_wrong_self_seed_reveal_names_the_revealer():
    sum_y, args, survivors, _ = _three_with_one_dropped()
    args["self_seeds"] = {**args["self_seeds"], survivors[1].address: bytes(32)}
    with pytest.raises(RevealError) as caught:
        masking.unmask(sum_y, **args)
    assert (caught.value.participant, caught.value.what) == (survivors[1].address, "self seed")


def test_a_wrong_pair_seed_reveal_names_the_revealer_and_the_pair():
    sum_y, args, survivors, gone = _three_with_one_dropped()
    args["pair_seeds"] = {**args["pair_seeds"], (survivors[0].address, gone.address): bytes(32)}
    with pytest.raises(RevealError) as caught:
        masking.unmask(sum_y, **args)
    assert (caught.value.participant, caught.value.what) == (survivors[0].address, f"pair seed with {gone.address}")


def test_a_missing_reveal_names_who_owes_it():
    sum_y, args, survivors, gone = _three_with_one_dropped()
    del args["pair_seeds"][(survivors[1].address, gone.address)]
    with pytest.raises(RevealError) as caught:
        masking.unmask(sum_y, **args)
    assert (caught.value.participant, caught.value.problem) == (survivors[1].address, "missing")


def test_headers_that_disagree_on_a_pair_commitment_name_both_participants():
    sum_y, args, survivors, _ = _three_with_one_dropped()
    a, b = survivors[0].address, survivors[1].address
    header = args["headers"][a]
    args["headers"] = {
        **args["headers"],
        a: replace(header, pair_commitments={**header.pair_commitments, b: bytes(32)}),
    }
    with pytest.raises(PairCommitmentError) as caught:
        masking.unmask(sum_y, **args)
    assert {caught.value.first, caught.value.second} == {a, b}


# --------------------------------------------------------------------------- the blob


def _header(**changes) -> MaskedHeader:
    members = _members(3)
    blob, _ = _submit(members[0], members)
    return replace(masking.decode_masked(blob, num_elements=SIZE).header, **changes)


def test_a_masked_blob_round_trips_and_its_bytes_are_pinned():
    members = _members(3)
    blob, _ = _submit(members[0], members)
    decoded = masking.decode_masked(blob, num_elements=SIZE)
    assert masking.encode_masked(decoded.words, decoded.header) == blob
    assert decoded.header.sender == members[0].address and decoded.header.samples == members[0].samples
    assert blob[8:9] == b"{" and b'"codec":"fedchain/masked-u64-v1"' in blob
    assert hashlib.sha256(blob).hexdigest() == PINNED_BLOB_DIGEST


PINNED_BLOB_DIGEST = "fee17f12fd40a49103530b7c1f968b186e552cfda07ac2ea2c0b8efe64413ca3"


def test_a_masked_blob_is_an_ordinary_safetensors_file():
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    members = _members(3)
    blob, _ = _submit(members[0], members)
    loaded = safetensors_numpy.load(blob)
    assert list(loaded) == ["masked"] and loaded["masked"].dtype == np.uint64
    assert np.array_equal(loaded["masked"], masking.decode_masked(blob, num_elements=SIZE).words)


def test_a_dp_spend_in_the_header_round_trips():
    spend = DpSpend.measured(1.1, 0.01, 100, 1e-5)
    header = _header(dp=spend)
    blob = masking.encode_masked(np.zeros(SIZE, np.uint64), header)
    assert masking.decode_masked(blob, num_elements=SIZE).header.dp == spend


def test_decoding_refuses_a_non_canonical_header():
    blob = masking.encode_masked(np.zeros(SIZE, np.uint64), _header())
    size = int.from_bytes(blob[:8], "little")
    head = blob[8 : 8 + size].rstrip(b" ")
    assert head.endswith(b"}}")
    loose = head[:-1] + b" }"  # one space inside the object: the same JSON, other bytes
    padded = loose + b" " * (-len(loose) % 8)
    forged = len(padded).to_bytes(8, "little") + padded + blob[8 + size :]
    with pytest.raises(CodecError) as caught:
        masking.decode_masked(forged, num_elements=SIZE)
    assert caught.value.reason == "non-canonical"


@pytest.mark.parametrize(
    ("expect", "reason"),
    [
        (MaskedExpect(round_id=8), "round"),
        (MaskedExpect(samples=1), "samples"),
        (MaskedExpect(params=MaskingParams(frac_bits=16, clip=1.0)), "params"),
        (MaskedExpect(roster=[_address(0), _address(1)]), "roster"),
        (MaskedExpect(sender=_address(1)), "sender"),
    ],
)
def test_decoding_refuses_a_header_that_differs_from_what_the_ledger_says(expect, reason):
    blob = masking.encode_masked(np.zeros(SIZE, np.uint64), _header())
    with pytest.raises(CodecError) as caught:
        masking.decode_masked(blob, num_elements=SIZE, expect=expect)
    assert caught.value.reason == reason


def test_decoding_refuses_the_wrong_size_and_trailing_bytes():
    blob = masking.encode_masked(np.zeros(SIZE, np.uint64), _header())
    with pytest.raises(CodecError) as caught:
        masking.decode_masked(blob, num_elements=SIZE + 1)
    assert caught.value.reason == "shape"
    with pytest.raises(CodecError) as caught:
        masking.decode_masked(blob + bytes(8), num_elements=SIZE)
    assert caught.value.reason == "offsets"
    with pytest.raises(CodecError) as caught:
        masking.decode_masked(blob[:-1], num_elements=SIZE)
    assert caught.value.reason == "truncated"


# --------------------------------------------------------------------------- the reveal planner


ROSTER = [_address(i) for i in range(5)]
A, B, C, D, E = masking.ordered(ROSTER)


def plan(survivors, pairs=(), shares=(), threshold=2, minimum=2):  # type: ignore[no-untyped-def]
    return masking.plan_reveals(
        ROSTER, survivors, pairs_revealed=pairs, shares_revealed=shares, threshold=threshold, minimum=minimum
    )


def test_the_planner_asks_survivors_for_pair_seeds_with_the_dropped_first():
    first = plan([A, B, D])
    assert first.phase == "pairs"
    assert dict(first.pair_requests) == {A: (C, E), B: (C, E), D: (C, E)}
    assert dict(first.share_requests) == {}


def test_the_planner_asks_for_shares_of_survivors_seeds_once_every_pair_seed_is_revealed():
    pairs = [(i, j) for i in (A, B, D) for j in (C, E)]
    asked = plan([A, B, D], pairs, shares=[(A, A), (B, A), (D, A)])
    assert (asked.phase, dict(asked.share_requests)) == ("shares", {B: (A, B, D), D: (A, B, D)})
    done = plan([A, B, D], pairs, shares=[(o, h) for o in (A, B, D) for h in (A, B)])
    assert done.phase == "done"  # two shares of each seed, the threshold: D's silence does not matter


def test_a_laggard_in_the_pair_phase_is_dropped_and_the_others_reveal_their_seeds_with_it():
    first = plan([A, B, D], [(A, C), (A, E), (B, C), (B, E)])
    assert first.laggards == (D,)
    survivors = masking.next_survivors(first)
    again = plan(survivors, [(A, C), (A, E), (B, C), (B, E)])
    assert (again.phase, dict(again.pair_requests)) == ("pairs", {A: (D,), B: (D,)})


def test_nobody_lags_in_the_share_phase():
    pairs = [(i, j) for i in (A, B, D) for j in (C, E)]
    asked = plan([A, B, D], pairs, shares=[(A, A), (B, A), (D, A)])
    assert asked.laggards == () and masking.next_survivors(asked) == (A, B, D)


def test_the_round_is_abandoned_below_the_minimum_or_the_share_threshold():
    assert plan([A, B], minimum=3).phase == "abandon"
    below = plan([A, B, D], threshold=4)
    assert (below.phase, below.pair_requests, below.laggards) == ("abandon", {}, ())


def test_a_member_with_a_share_of_its_seed_public_is_never_unmasked_by_dropping_it():
    # a share of A's seed is public and A is not a survivor any more: revealing pair seeds with A would help expose y_A
    pairs = [(i, j) for i in (A, B, D) for j in (C, E)]
    assert plan([B, D], pairs, shares=[(A, B)]).phase == "abandon"
    # a pair seed still owed while shares are counted: the same
    assert plan([A, B, D], pairs[:-1], shares=[(A, B)]).phase == "abandon"
