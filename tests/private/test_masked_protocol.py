"""The masked round's protocol, chain-free: 10 members, dropouts before the close, silence at each reveal phase.

Real keys, masks, blobs and the same replay the services and the audit run; the reveals are
``RevealRecord`` values as the ledger decodes them, so each scenario is exactly a chain history.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from fedchain.chain.ledger import RevealRecord
from fedchain.fl import masking
from fedchain.fl.masking import MaskingKey
from fedchain.protocol.masked import (
    MaskedRoundData,
    build_masked_update,
    open_my_shares,
    pair_seeds,
    replay_reveals,
    self_seed,
)
from fedchain.protocol.privacy import parse_privacy
from fedchain.records import UpdateRecord
from fedchain.types import Address, Digest, RoundId

CONFIG = parse_privacy(
    {
        "mode": "masked",
        "frac_bits": 32,
        "clip": 10.0,
        "min_survivors": 2,
        "max_samples": 1000,
        "max_participants": 16,
        "phase_seconds": 60,
    }
).masked
assert CONFIG is not None
CHAIN, LEDGER, ROUND, BASE, CLOSE = 31337, bytes(range(20)), 4, Digest(bytes(32)), 1_000
P = 257


def members(k: int) -> list[tuple[Address, MaskingKey, dict[str, np.ndarray], int]]:
    rng = np.random.default_rng(k)
    out = []
    for i in range(k):
        address = Address(masking.ordered([f"0x{(i + 1) * 0x1111:040x}"])[0])
        from eth_utils.address import to_checksum_address

        address = Address(to_checksum_address(address))
        delta = {"w": rng.normal(size=(P,)).astype(np.float32)}
        out.append((address, MaskingKey.generate(), delta, int(rng.integers(10, 100))))
    return out


def round_of(k: int, submitting: int, config=CONFIG):  # type: ignore[no-untyped-def]
    ms = members(k)
    roster = {a: key.public_bytes() for a, key, _, _ in ms}
    records, headers, words = [], {}, {}
    for a, key, delta, n in ms[:submitting]:
        sub = build_masked_update(
            delta,
            num_samples=n,
            config=config,
            key=key,
            roster=roster,
            me=a,
            chain_id=CHAIN,
            ledger=LEDGER,
            round_id=ROUND,
            base_hash=BASE,
        )
        decoded = masking.decode_masked(sub.blob, num_elements=P)
        records.append(UpdateRecord(RoundId(ROUND), a, sub.digest, sub.cid, n, 1, "0x"))
        headers[a], words[a] = decoded.header, decoded.words
    data = MaskedRoundData(ROUND, roster, tuple(records), headers, {}, CLOSE)
    return ms, data, words


def reveal(
    who: Address,
    at: int,
    *,
    pairs: dict[Address, bytes] | None = None,
    shares: dict[Address, bytes] | None = None,
    index: int = 0,
) -> RevealRecord:
    return RevealRecord(RoundId(ROUND), who, pairs or {}, shares or {}, at, index, at, "0x")


def honest_reveals(ms, data, state, at: int, silent: set[Address] = frozenset()):  # type: ignore[no-untyped-def]
    """What every member the plan asks reveals, as the participant service does (the silent ones excepted)."""
    keys = {a: key for a, key, _, _ in ms}
    out = []
    plan = state.plan
    for i, who in enumerate(plan.survivors):
        if who in silent:
            continue
        if plan.phase == "pairs" and who in plan.pair_requests:
            everyone = pair_seeds(keys[who], data.roster, me=who, chain_id=CHAIN, ledger=LEDGER, round_id=ROUND)
            out.append(reveal(who, at, pairs={j: everyone[j] for j in plan.pair_requests[who]}, index=i))
        elif plan.phase == "shares" and who in plan.share_requests:
            mine = open_my_shares(keys[who], data, plan.share_requests[who], me=who, chain_id=CHAIN, ledger=LEDGER)
            out.append(reveal(who, at, shares=mine, index=i))
    return out


def run(ms, data, silent_by_phase: list[set[Address]], config=CONFIG):  # type: ignore[no-untyped-def]
    """Drive the phases as the services do: each phase, the asked reveals (minus the silent ones), then time passes.

    Returns the final state, every reveal, and every plan seen on the way.
    """
    reveals: list[RevealRecord] = []
    plans = []
    now = CLOSE
    for phase in range(12):
        state = replay_reveals(data, reveals, now=now, config=config)
        plans.append(state.plan)
        if state.plan.phase in ("done", "abandon"):
            return state, reveals, plans
        silent = silent_by_phase[phase] if phase < len(silent_by_phase) else set()
        now += 1
        reveals += honest_reveals(ms, data, state, now, silent)
        after = replay_reveals(data, reveals, now=now, config=config)
        plans.append(after.plan)
        if after.deadline is not None and after.plan.phase == state.plan.phase:
            now = after.deadline + 1  # the silent ones are laggards once the deadline passes
    raise AssertionError("the reveals never ended")


def shared_owners(reveals) -> set[Address]:  # type: ignore[no-untyped-def]
    """Every member a share of whose self seed is on chain."""
    return {o for r in reveals for o in r.shares}


def paired_with(reveals) -> set[Address]:  # type: ignore[no-untyped-def]
    """Every member some pair seed with whom is on chain."""
    return {j for r in reveals for j in r.pair_seeds}


def expected_sum(ms, survivors):  # type: ignore[no-untyped-def]
    qs = [masking.quantize(d, n, CONFIG.params) for a, _, d, n in ms if a in survivors]
    return masking.sum_words(qs)


def unmasked(data, state, words):  # type: ignore[no-untyped-def]
    survivors = state.plan.survivors
    dropped = [a for a in data.roster if a not in survivors]
    return masking.unmask(
        masking.sum_words(words[a] for a in survivors),
        roster=tuple(data.roster),
        survivors=survivors,
        headers={a: data.headers[a] for a in survivors},
        self_seeds=dict(state.self_seeds),
        pair_seeds={k: v for k, v in state.pair_seeds.items() if k[0] in survivors and k[1] in dropped},
    )


@pytest.mark.parametrize(("k", "submitting"), [(3, 2), (10, 7)])
def test_dropouts_before_the_close_end_in_the_exact_fixed_point_sum(k: int, submitting: int) -> None:
    ms, data, words = round_of(k, submitting)
    state, reveals, _ = run(ms, data, [])
    assert state.plan.phase == "done"
    assert state.plan.survivors == tuple(a for a, *_ in ms[:submitting])
    assert np.array_equal(unmasked(data, state, words), expected_sum(ms, state.plan.survivors))
    dropped = {a for a, *_ in ms[submitting:]}
    assert not any(r.participant in dropped for r in reveals)  # a dropped member reveals nothing
    assert paired_with(reveals) == dropped and shared_owners(reveals) == set(state.plan.survivors)
    # every survivor's self seed is the one it masked with, reconstructed from its holders' shares
    keys = {a: key for a, key, _, _ in ms}
    assert dict(state.self_seeds) == {
        a: self_seed(keys[a], chain_id=CHAIN, ledger=LEDGER, round_id=ROUND, me=a) for a in state.plan.survivors
    }


def test_one_member_silent_at_the_pair_phase_is_dropped_and_one_silent_at_the_share_phase_is_reconstructed() -> None:
    ms, data, words = round_of(10, 8)
    at_pairs, at_shares = ms[2][0], ms[5][0]
    state, reveals, _ = run(ms, data, [{at_pairs}, set(), {at_shares}])
    assert state.plan.phase == "done"
    assert state.plan.survivors == tuple(a for a, *_ in ms[:8] if a != at_pairs)
    assert at_shares in state.plan.survivors  # silent, and included: its seed came from the others' shares
    assert np.array_equal(unmasked(data, state, words), expected_sum(ms, state.plan.survivors))
    assert dict(state.dropped) == {at_pairs: "pairs"}
    assert not any(r.participant == at_shares and r.shares for r in reveals)
    # the dropped member's update stays hidden: no share of its seed exists on chain
    assert at_pairs not in shared_owners(reveals) and at_pairs in paired_with(reveals)


def test_below_the_minimum_the_round_is_abandoned_before_any_share_is_revealed() -> None:
    ms, data, _ = round_of(4, 3)
    state, reveals, _ = run(ms, data, [{ms[0][0], ms[1][0]}])
    assert state.plan.phase == "abandon"
    assert state.plan.survivors == (ms[2][0],)
    assert shared_owners(reveals) == set()


def test_a_wrong_pair_seed_is_not_counted_its_revealer_is_named_and_dropped() -> None:
    ms, data, words = round_of(5, 4)
    liar, absent = ms[1][0], ms[4][0]
    state = replay_reveals(data, [], now=CLOSE, config=CONFIG)
    assert (state.plan.phase, state.plan.pair_requests[liar]) == ("pairs", (absent,))
    reveals = [r for r in honest_reveals(ms, data, state, CLOSE + 1) if r.participant != liar]
    reveals.append(reveal(liar, CLOSE + 1, pairs={absent: bytes(32)}, index=9))
    state = replay_reveals(data, reveals, now=CLOSE + 1, config=CONFIG)
    assert state.wrong == ((liar, f"pair seed with {absent}"),)
    now = CLOSE + CONFIG.phase_seconds + 1  # the liar never corrects itself: a laggard at the deadline
    state = replay_reveals(data, reveals, now=now, config=CONFIG)
    assert (state.plan.phase, dict(state.dropped)) == ("pairs", {liar: "pairs"})
    while state.plan.phase not in ("done", "abandon"):
        reveals += honest_reveals(ms, data, state, now + 1)
        now += 1
        state = replay_reveals(data, reveals, now=now, config=CONFIG)
    assert state.plan.phase == "done" and state.plan.survivors == (ms[0][0], ms[2][0], ms[3][0])
    assert np.array_equal(unmasked(data, state, words), expected_sum(ms, state.plan.survivors))


def test_a_wrong_share_is_named_and_ignored_and_its_revealer_stays_included() -> None:
    ms, data, words = round_of(4, 4)
    liar, victim = ms[1][0], ms[3][0]
    state = replay_reveals(data, [], now=CLOSE, config=CONFIG)
    assert state.plan.phase == "shares"  # nobody dropped: straight to the shares
    reveals = honest_reveals(ms, data, state, CLOSE + 2)
    [lie] = [r for r in reveals if r.participant == liar]
    forged = dict(lie.shares)
    forged[victim] = bytes(32)
    # the liar's reveal is mined first, so it is read before the others complete the phase
    reveals = [reveal(liar, CLOSE + 1, shares=forged)] + [r for r in reveals if r.participant != liar]
    state = replay_reveals(data, reveals, now=CLOSE + 2, config=CONFIG)
    assert state.wrong == ((liar, f"share of {victim}'s self seed"),)
    assert state.plan.phase == "done" and state.plan.survivors == tuple(a for a, *_ in ms)
    assert (victim, liar) not in state.shares and (ms[0][0], liar) in state.shares
    assert np.array_equal(unmasked(data, state, words), expected_sum(ms, state.plan.survivors))


def test_fewer_than_threshold_shares_abandon_the_round_and_no_pair_seed_of_a_survivor_is_asked() -> None:
    config = replace(CONFIG, share_threshold=3)
    ms, data, _ = round_of(4, 4, config)
    silent = {ms[0][0], ms[2][0]}
    state, reveals, plans = run(ms, data, [silent], config)
    assert state.plan.phase == "abandon"
    assert state.why == (f"the share phase ended with 4 self seeds short of 3 shares: {', '.join(a for a, *_ in ms)}")
    assert state.self_seeds == {} and paired_with(reveals) == set()
    assert all(p.pair_requests == {} for p in plans)


def test_a_reveal_after_the_phase_deadline_does_not_count() -> None:
    ms, data, _ = round_of(3, 3)
    state = replay_reveals(data, [], now=CLOSE, config=CONFIG)
    late = honest_reveals(ms, data, state, CLOSE + CONFIG.phase_seconds + 5)
    state = replay_reveals(data, late, now=CLOSE + CONFIG.phase_seconds + 5, config=CONFIG)
    assert state.plan.phase == "abandon"  # nobody's seed has its shares: abandoned, nobody dropped
    assert state.self_seeds == {} and state.shares == {} and dict(state.dropped) == {}


def test_a_delayed_member_never_has_both_its_pair_seeds_and_its_self_seed_exposed() -> None:
    """The front-running schedule: the adversary delays the victim's reveals past every deadline it can.

    Delayed in phase 1, the victim is dropped: the others reveal their pair seeds with it, and no share
    of its seed is ever asked for, so its update ``y_v - masks`` stays behind ``PRG(b_v)`` even for the
    threshold minus one colluders pooling the shares sealed to them. Delayed in phase 2, it stays in S:
    no pair seed with it is ever asked for, and its seed is reconstructed for the aggregate only.
    """
    k = 6
    for delayed_at in (0, 1):
        ms, data, words = round_of(k, k - 1)  # one member never submitted: a pair phase first
        victim = ms[1][0]
        schedule = [set(), set()]
        schedule[delayed_at] = {victim}
        state, reveals, plans = run(ms, data, schedule)
        assert state.plan.phase == "done"
        assert not (shared_owners(reveals) & paired_with(reveals))  # nobody is both
        shares_started = False
        for p in plans:  # once shares are asked for, no pair seed ever is: S is final
            shares_started = shares_started or p.phase == "shares"
            assert not (shares_started and p.pair_requests)
        if delayed_at == 0:
            assert victim not in state.plan.survivors and victim in paired_with(reveals)
            assert victim not in shared_owners(reveals)
            colluders = [m for m in ms if m[0] != victim][: CONFIG.share_threshold - 1]
            pooled = {
                a: open_my_shares(key, data, [victim], me=a, chain_id=CHAIN, ledger=LEDGER)[victim]
                for a, key, _, _ in colluders
            }
            with pytest.raises(masking.RevealError, match="missing: 1 shares, 2 needed"):
                masking.reconstruct_seed(data.roster, data.headers[victim], pooled, threshold=CONFIG.share_threshold)
            # and what is public does not unmask it: y_v minus every pair mask differs from q_v
            keys = {a: key for a, key, _, _ in ms}
            seeds = pair_seeds(keys[victim], data.roster, me=victim, chain_id=CHAIN, ledger=LEDGER, round_id=ROUND)
            unpaired = masking.mask_update(
                np.zeros(P, np.uint64), self_seed=bytes(32), pair_seeds=seeds, me=victim
            ) - masking.prg(bytes(32), P)
            q_v = masking.quantize(ms[1][2], ms[1][3], CONFIG.params)
            assert not np.array_equal(words[victim] - unpaired, q_v)
            assert np.array_equal(
                words[victim]
                - unpaired
                - masking.prg(self_seed(keys[victim], chain_id=CHAIN, ledger=LEDGER, round_id=ROUND, me=victim), P),
                q_v,
            )  # only b_v, which nobody holds, is missing
        else:
            assert victim in state.plan.survivors and victim not in paired_with(reveals)
            assert not any(r.participant == victim and r.shares for r in reveals)
        assert np.array_equal(unmasked(data, state, words), expected_sum(ms, state.plan.survivors))


def test_every_silence_schedule_keeps_pair_seeds_and_shares_of_one_member_apart() -> None:
    rng = np.random.default_rng(7)
    ms, data, words = round_of(6, 5)
    outcomes = set()
    for _ in range(12):
        schedule = [{a for a, *_ in ms if rng.random() < 0.25} for _ in range(4)]
        state, reveals, plans = run(ms, data, schedule)
        outcomes.add(state.plan.phase)
        first_share = next((n for n, p in enumerate(plans) if p.phase == "shares"), len(plans))
        assert all(p.pair_requests == {} for p in plans[first_share:])
        assert not (shared_owners(reveals) & paired_with(reveals))
        assert shared_owners(reveals) <= set(state.plan.survivors)
        if state.plan.phase == "done":
            assert np.array_equal(unmasked(data, state, words), expected_sum(ms, state.plan.survivors))
    assert outcomes == {"done", "abandon"}


def test_masked_words_are_uniform_and_uncorrelated_with_the_update() -> None:
    ms, _, words = round_of(10, 10)
    y = np.concatenate([words[a] for a, *_ in ms])
    # chi-square over 16 buckets of the top 4 bits
    counts = np.bincount((y >> np.uint64(60)).astype(np.int64), minlength=16)
    expected = y.size / 16
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 37.7  # p = 0.001 at 15 degrees of freedom
    for a, _, delta, _ in ms:
        as_float = words[a].view(np.int64).astype(np.float64)
        r = np.corrcoef(as_float, delta["w"].astype(np.float64))[0, 1]
        assert abs(r) < 4 / np.sqrt(P)


def test_a_member_whose_shares_do_not_combine_into_its_committed_seed_gets_the_round_abandoned_naming_it() -> None:
    ms, data, _ = round_of(4, 4)
    cheat, cheat_key = ms[2][0], ms[2][1]
    header = data.headers[cheat]
    other = masking.split_seed(bytes(32), threshold=CONFIG.share_threshold, holders=4)  # a sharing of another seed
    forged = {
        holder: masking.SealedShare(
            masking.seal_share(
                cheat_key,
                data.roster[holder],
                share,
                chain_id=CHAIN,
                ledger=LEDGER,
                round_id=ROUND,
                sender=cheat,
                recipient=holder,
            ),
            masking.commit(share, masking.share_salt(ROUND, cheat, holder)),
        )
        for holder, share in zip(masking.ordered(data.roster), other, strict=True)
    }
    data = replace(data, headers={**data.headers, cheat: replace(header, shares=forged)})
    state, reveals, _ = run(ms, data, [])
    assert state.plan.phase == "abandon" and state.wrong == ()  # every share matches its commitment
    assert state.why == f"round {ROUND}: participant {cheat}: self seed not reconstructible from its shares"
    assert paired_with(reveals) == set()
