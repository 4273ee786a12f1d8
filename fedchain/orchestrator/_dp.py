"""A participant's differential-privacy bookkeeping: the recorded spend and the refusal to train past the budget."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, MutableMapping, Sequence

from fedchain.errors import FedchainError
from fedchain.fl.dp import Spend, compose, epsilon_dp_sgd, would_exceed
from fedchain.protocol.privacy import DpBudget

logger = logging.getLogger(__name__)

#: The five DP keys a DP-SGD update records in its header's metrics.
DP_KEYS = ("dp_delta", "dp_epsilon", "dp_noise_multiplier", "dp_sample_rate", "dp_steps")


class DpBudgetExceededError(FedchainError):
    """Training (another round of) DP-SGD would take this participant past the federation's budget."""

    def __init__(
        self, round_id: int, participant: str, spent: float, total: float, budget: float, planned: bool
    ) -> None:
        self.round_id = round_id
        self.participant = participant
        what = "would" if planned else "did"
        super().__init__(
            f"round {round_id}, participant {participant}: refusing to train: the round {what} take the"
            f" composed epsilon from {spent:.6g} to {total:.6g}, past the federation's budget of {budget:g}"
        )


def spend_of(metrics: Mapping[str, float]) -> Spend | None:
    """The ``(noise, sample rate, steps)`` an update's metrics record, or ``None`` if it records no DP-SGD."""
    if not all(k in metrics for k in DP_KEYS):
        return None
    steps = float(metrics["dp_steps"])
    if not math.isfinite(steps) or steps != int(steps) or steps < 0:
        return None
    return (float(metrics["dp_noise_multiplier"]), float(metrics["dp_sample_rate"]), int(steps))


def record_dp(metrics: MutableMapping[str, float]) -> Spend | None:
    """Record the epsilon of ``dp_accounting``'s RDP accountant (the one the audit composes with) in ``metrics``.

    The task's own accountant (Opacus) agrees to about 1e-7; the audit recomputes the recorded
    epsilon exactly, so the participant records the audit's accountant's value.
    """
    spend = spend_of(metrics)
    if spend is None or spend[2] == 0:
        return spend
    metrics["dp_epsilon"] = epsilon_dp_sgd(*spend, float(metrics["dp_delta"]))
    return spend


def check_budget(
    budget: DpBudget, spent: Sequence[Spend], next_spend: Spend, *, round_id: int, who: str, before_training: bool
) -> None:
    """Refuse (raise) when ``spent`` and then ``next_spend`` compose past the budget.

    Raises
    ------
    DpBudgetExceededError
        Naming the round, the participant, the epsilon so far, with the round, and the budget.
    """
    if not would_exceed(budget.epsilon, spent, next_spend, budget.delta):
        return
    so_far = compose(spent, budget.delta) if spent else 0.0
    total = compose([*spent, next_spend], budget.delta)
    raise DpBudgetExceededError(round_id, who, so_far, total, budget.epsilon, before_training)


__all__ = ["DP_KEYS", "DpBudgetExceededError", "check_budget", "record_dp", "spend_of"]
