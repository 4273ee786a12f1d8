"""The masked round's protocol, chain-free: 10 members, dropouts before the close, silence at each reveal phase.

Real keys, masks, blobs and the same replay the services and the audit run; the reveals are
``RevealRecord`` values as the ledger decodes them, so each scenario is exactly a chain history.
"""

from __future__ import annotations

import numpy as np
import pytest

from fedchain.chain.ledger import RevealRecord
from fedchain.fl import masking
from fedchain.fl.masking import MaskingKey
from fedchain.protocol.masked import MaskedRoundData, build_masked_update, pair_seeds, replay_reveals, self_seed
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


def round_of(k: int, submitting: int):  # type: ignore[no-untyped-def]
    ms = members(k)
    roster = {a: key.public_bytes() for a, key, _, _ in ms}
    records, headers, words = [], {}, {}
    for a, key, delta, n in ms[:submitting]:
        sub = build_masked_update(
            delta,
            num_samples=n,
            config=CONFIG,
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
    who: Address, at: int, *, pairs: dict[Address, bytes] | None = None, seed: bytes | None = None, index: int = 0
) -> RevealRecord:
    return RevealRecord(RoundId(ROUND), who, pairs or {}, seed, at, index, at, "0x")


def honest_reveals(ms, data, state, at: int, silent: set[Address] = frozenset()):  # type: ignore[no-untyped-def]
    keys = {a: key for a, key, _, _ in ms}
    out = []
    plan = state.plan
    for i, who in enumerate(plan.survivors):
        if who in silent:
            continue
        if plan.phase == "pairs" and who in plan.pair_requests:
            everyone = pair_seeds(keys[who], data.roster, me=who, chain_id=CHAIN, ledger=LEDGER, round_id=ROUND)
            out.append(reveal(who, at, pairs={j: everyone[j] for j in plan.pair_requests[who]}, index=i))
        elif plan.phase == "selves" and who in plan.self_requests:
            out.append(
                reveal(
                    who, at, seed=self_seed(keys[who], chain_id=CHAIN, ledger=LEDGER, round_id=ROUND, me=who), index=i
                )
            )
    return out


def run(ms, data, silent_by_phase: list[set[Address]]):  # type: ignore[no-untyped-def]
    """Drive the phases as the services do: each phase, the asked reveals (minus the silent ones), then time passes."""
    reveals: list[RevealRecord] = []
    now = CLOSE
    for phase in range(12):
        state = replay_reveals(data, reveals, now=now, config=CONFIG)
        if state.plan.phase in ("done", "abandon"):
            return state, reveals
        silent = silent_by_phase[phase] if phase < len(silent_by_phase) else set()
        now += 1
        reveals += honest_reveals(ms, data, state, now, silent)
        after = replay_reveals(data, reveals, now=now, config=CONFIG)
        if after.deadline is not None and after.plan.phase == state.plan.phase:
            now = after.deadline + 1  # the silent ones are laggards once the deadline passes
    raise AssertionError("the reveals never ended")


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
    state, reveals = run(ms, data, [])
    assert state.plan.phase == "done"
    assert set(state.plan.survivors) == {a for a, *_ in ms[:submitting]}
    assert np.array_equal(unmasked(data, state, words), expected_sum(ms, state.plan.survivors))
    dropped = {a for a, *_ in ms[submitting:]}
    assert not any(
        r.participant in dropped for r in reveals
    )  # a dropped member reveals nothing, and no self seed of it exists


def test_one_member_silent_at_the_pair_phase_and_one_at_the_self_phase_are_both_dropped_and_stay_masked() -> None:
    ms, data, words = round_of(10, 8)
    at_pairs, at_selves = ms[2][0], ms[5][0]
    state, reveals = run(ms, data, [{at_pairs}, set(), {at_selves}])
    assert state.plan.phase == "done"
    assert at_pairs not in state.plan.survivors and at_selves not in state.plan.survivors
    assert len(state.plan.survivors) == 6
    assert np.array_equal(unmasked(data, state, words), expected_sum(ms, state.plan.survivors))
    assert dict(state.dropped) == {at_pairs: "pairs", at_selves: "selves"}
    # their updates stay hidden: neither self seed was ever revealed
    assert not any(r.self_seed is not None and r.participant in (at_pairs, at_selves) for r in reveals)


def test_below_the_minimum_the_round_is_abandoned_before_any_self_seed_is_revealed() -> None:
    ms, data, _ = round_of(4, 3)
    state, reveals = run(ms, data, [{ms[0][0], ms[1][0]}])
    assert state.plan.phase == "abandon"
    assert not any(r.self_seed is not None for r in reveals)


def test_a_wrong_reveal_is_not_counted_its_revealer_is_named_and_dropped() -> None:
    ms, data, words = round_of(4, 4)
    liar = ms[1][0]
    state = replay_reveals(data, [], now=CLOSE, config=CONFIG)
    assert state.plan.phase == "selves"
    reveals = [r for r in honest_reveals(ms, data, state, CLOSE + 1) if r.participant != liar]
    reveals.append(reveal(liar, CLOSE + 1, seed=bytes(32), index=9))
    state = replay_reveals(data, reveals, now=CLOSE + 1, config=CONFIG)
    assert state.wrong == ((liar, "self seed"),)
    state = replay_reveals(data, reveals, now=CLOSE + CONFIG.phase_seconds + 1, config=CONFIG)
    assert state.plan.phase == "pairs" and liar not in state.plan.survivors
    reveals += honest_reveals(ms, data, state, CLOSE + CONFIG.phase_seconds + 2)
    state = replay_reveals(data, reveals, now=CLOSE + CONFIG.phase_seconds + 2, config=CONFIG)
    assert state.plan.phase == "done"
    assert np.array_equal(unmasked(data, state, words), expected_sum(ms, state.plan.survivors))


def test_a_reveal_after_the_phase_deadline_does_not_count() -> None:
    ms, data, _ = round_of(3, 3)
    state = replay_reveals(data, [], now=CLOSE, config=CONFIG)
    late = honest_reveals(ms, data, state, CLOSE + CONFIG.phase_seconds + 5)
    state = replay_reveals(data, late, now=CLOSE + CONFIG.phase_seconds + 5, config=CONFIG)
    assert state.plan.phase == "abandon"  # every member was a laggard: none left
    assert state.self_seeds == {}


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
