"""The privacy table of the manifest, the audit's DP accounting and the participant's budget refusal."""

from __future__ import annotations

import pytest

from fedchain.audit._privacy import dp_accounting
from fedchain.errors import ConfigError
from fedchain.fl.dp import compose, epsilon_dp_sgd
from fedchain.orchestrator._dp import DpBudgetExceededError, check_budget, record_dp
from fedchain.protocol import RoundVerdict, UpdateOutcome, UpdateStatus
from fedchain.protocol.privacy import DpBudget, default_masked, parse_privacy
from fedchain.records import RoundStatus, UpdateRecord
from fedchain.types import Address, Cid, Digest, RoundId
from tests.support.federation import small_manifest

A = Address("0x" + "11" * 20)
B = Address("0x" + "22" * 20)
SPEND = (1.1, 0.05, 40)
DELTA = 1e-5


def metrics(eps: float | None = None, spend: tuple[float, float, int] = SPEND) -> dict[str, float]:
    noise, rate, steps = spend
    return {
        "dp_noise_multiplier": noise,
        "dp_sample_rate": rate,
        "dp_steps": float(steps),
        "dp_delta": DELTA,
        "dp_epsilon": epsilon_dp_sgd(noise, rate, steps, DELTA) if eps is None else eps,
        "loss": 0.5,
    }


def verdict(round_id: int, per: dict[Address, dict[str, float]]) -> RoundVerdict:
    outcomes = tuple(
        UpdateOutcome(
            UpdateRecord(RoundId(round_id), who, Digest(bytes(32)), Cid("Qm"), 10, 1, "0x"),
            UpdateStatus.INCLUDED,
            metrics=m,
        )
        for who, m in per.items()
    )
    return RoundVerdict(round_id, RoundStatus.FINALIZED, tuple(per), (), (), None, (), outcomes)


def test_a_masked_manifest_whose_sums_could_overflow_is_refused_naming_the_numbers() -> None:
    with pytest.raises(ConfigError, match=r"manifest.privacy.*overflow"):
        small_manifest(min_updates=2, privacy={**default_masked(3), "frac_bits": 40})


def test_a_masked_manifest_needs_every_field_and_a_quorum_within_the_minimum_of_survivors() -> None:
    privacy = default_masked(3)
    del privacy["phase_seconds"]
    with pytest.raises(ConfigError, match=r"manifest.privacy.phase_seconds"):
        small_manifest(min_updates=2, privacy=privacy)
    with pytest.raises(ConfigError, match=r"manifest.rounds.min_updates"):
        small_manifest(min_updates=3, privacy=default_masked(3))


def test_the_dp_table_is_checked_in_both_modes() -> None:
    assert parse_privacy({"mode": "none", "dp": {"epsilon_budget": 8.0, "delta": 1e-5}}).dp == DpBudget(8.0, 1e-5)
    with pytest.raises(ConfigError, match=r"manifest.privacy.dp.delta"):
        parse_privacy({"mode": "none", "dp": {"epsilon_budget": 8.0, "delta": 1.5}})
    with pytest.raises(ConfigError, match=r"manifest.privacy.dp.epsilon"):
        small_manifest(privacy={"mode": "none", "dp": {"epsilon_budget": 8, "delta": 1e-5}})


def test_the_audit_composes_each_participants_spending_per_round() -> None:
    manifest = small_manifest(privacy={"mode": "none", "dp": {"epsilon_budget": 50.0, "delta": DELTA}})
    section, failures = dp_accounting([verdict(0, {A: metrics(), B: metrics()}), verdict(1, {A: metrics()})], manifest)
    assert failures == []
    assert section is not None and section["delta"] == DELTA
    one = epsilon_dp_sgd(*SPEND, DELTA)
    assert section["per_participant"][A] == {
        "epsilon": compose([SPEND, SPEND], DELTA),
        "rounds": [{"round": 0, "epsilon": one}, {"round": 1, "epsilon": one}],
    }
    assert section["per_participant"][B]["epsilon"] == one


def test_an_epsilon_that_differs_from_the_accountants_fails_the_audit_naming_round_and_participant() -> None:
    manifest = small_manifest(privacy={"mode": "none", "dp": {"epsilon_budget": 50.0, "delta": DELTA}})
    honest = epsilon_dp_sgd(*SPEND, DELTA)
    _, failures = dp_accounting([verdict(0, {A: metrics()}), verdict(1, {B: metrics(eps=honest / 2)})], manifest)
    assert [(f.round_id, f.what, f.participant) for f in failures] == [(1, "dp epsilon", B)]


def test_spending_past_the_budget_fails_the_audit() -> None:
    one = epsilon_dp_sgd(*SPEND, DELTA)
    manifest = small_manifest(privacy={"mode": "none", "dp": {"epsilon_budget": one * 1.2, "delta": DELTA}})
    _, failures = dp_accounting([verdict(0, {A: metrics()}), verdict(1, {A: metrics()})], manifest)
    assert [(f.round_id, f.what, f.participant) for f in failures] == [(1, "dp budget", A)]


def test_a_participant_refuses_to_train_past_its_budget() -> None:
    one = epsilon_dp_sgd(*SPEND, DELTA)
    budget = DpBudget(one * 1.2, DELTA)
    check_budget(budget, [], SPEND, round_id=0, who=A, before_training=True)
    with pytest.raises(DpBudgetExceededError, match=rf"round 1, participant {A}: refusing to train"):
        check_budget(budget, [SPEND], SPEND, round_id=1, who=A, before_training=True)


def test_the_participant_records_the_audits_accountants_epsilon() -> None:
    m = metrics(eps=1.0)
    assert record_dp(m) == SPEND
    assert m["dp_epsilon"] == epsilon_dp_sgd(*SPEND, DELTA)
