"""DP-SGD accounting: agreement with Opacus' RDP accountant, composition, recorded-epsilon checks, the budget."""

from __future__ import annotations

import math

import pytest

from fedchain.fl import dp
from fedchain.fl.dp import DpSpend

DELTA = 1e-5
CASES = [(1.1, 0.01, 1000), (1.5, 0.02, 2000), (2.0, 0.004, 5000), (1.0, 1.0, 10)]


@pytest.mark.parametrize(("noise", "rate", "steps"), CASES)
def test_epsilon_agrees_with_the_opacus_rdp_accountant(noise, rate, steps):
    accountants = pytest.importorskip("opacus.accountants")
    opacus = accountants.RDPAccountant()
    opacus.history = [(noise, rate, steps)]
    theirs = opacus.get_epsilon(DELTA)
    ours = dp.epsilon_dp_sgd(noise, rate, steps, DELTA)
    # the same event, orders and conversion: they differ only in the last digits of the RDP series
    assert math.isclose(ours, theirs, rel_tol=1e-6)


def test_at_small_noise_and_large_sampling_the_accountants_differ_by_a_fraction_of_a_percent():
    # dp_accounting drops the fractional orders whose series does not converge (it logs a warning),
    # opacus keeps its value for them: at sigma 0.8, q 0.05 the epsilons differ by 0.13%
    accountants = pytest.importorskip("opacus.accountants")
    opacus = accountants.RDPAccountant()
    opacus.history = [(0.8, 0.05, 200)]
    theirs = opacus.get_epsilon(DELTA)
    ours = dp.epsilon_dp_sgd(0.8, 0.05, 200, DELTA)
    assert math.isclose(ours, theirs, rel_tol=2e-3) and not math.isclose(ours, theirs, rel_tol=1e-4)


def test_epsilon_is_deterministic_to_the_bit():
    assert dp.epsilon_dp_sgd(1.1, 0.01, 1000, DELTA) == dp.epsilon_dp_sgd(1.1, 0.01, 1000, DELTA)


def test_composing_two_rounds_spends_more_than_either_and_less_than_their_sum():
    one = dp.epsilon_dp_sgd(1.1, 0.01, 1000, DELTA)
    both = dp.compose([(1.1, 0.01, 1000), (1.1, 0.01, 1000)], DELTA)
    assert one < both < 2 * one


def test_composing_rounds_equals_one_round_of_all_their_steps():
    assert dp.compose([(1.1, 0.01, 300), (1.1, 0.01, 700)], DELTA) == pytest.approx(
        dp.epsilon_dp_sgd(1.1, 0.01, 1000, DELTA), rel=1e-12
    )


def test_the_recorded_epsilon_of_the_accountant_passes():
    eps = dp.epsilon_dp_sgd(1.1, 0.01, 1000, DELTA)
    assert dp.check_recorded_epsilon(eps, 1.1, 0.01, 1000, DELTA, rel_tol=1e-9) is None


def test_a_wrong_recorded_epsilon_is_flagged_with_both_values():
    eps = dp.epsilon_dp_sgd(1.1, 0.01, 1000, DELTA)
    reason = dp.check_recorded_epsilon(eps * 0.9, 1.1, 0.01, 1000, DELTA, rel_tol=1e-9)
    assert reason is not None and repr(eps * 0.9) in reason and repr(eps) in reason


def test_a_recorded_epsilon_with_invalid_parameters_is_flagged():
    reason = dp.check_recorded_epsilon(1.0, -1.0, 0.01, 1000, DELTA)
    assert reason is not None and "noise_multiplier" in reason


def test_remaining_budget_goes_negative_past_the_budget_and_training_is_refused():
    spent = [(1.1, 0.01, 1000)] * 3
    total = dp.compose(spent, DELTA)
    assert dp.remaining(total + 1.0, spent, DELTA) == pytest.approx(1.0)
    assert dp.remaining(total - 0.5, spent, DELTA) < 0
    assert dp.would_exceed(total, spent, (1.1, 0.01, 1000), DELTA)
    assert not dp.would_exceed(total * 2, spent, (1.1, 0.01, 1000), DELTA)


def test_a_dp_spend_round_trips_through_header_strings_and_checks():
    spend = DpSpend.measured(1.1, 0.01, 1000, DELTA)
    assert DpSpend.from_metadata(spend.to_metadata()) == spend
    assert spend.check() is None
    assert DpSpend(1.1, 0.01, 1000, DELTA, spend.epsilon / 2).check() is not None


def test_a_dp_spend_refuses_non_canonical_header_strings():
    meta = DpSpend.measured(1.1, 0.01, 1000, DELTA).to_metadata()
    with pytest.raises(ValueError, match="canonical"):
        DpSpend.from_metadata({**meta, "dp_sample_rate": "0.010"})
    with pytest.raises(ValueError, match="exactly"):
        DpSpend.from_metadata({**meta, "dp_extra": "1"})
