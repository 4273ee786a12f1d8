"""The audit's differential-privacy accounting: every recorded epsilon recomputed, every participant's spending composed.

Each update whose header records DP-SGD (``dp_noise_multiplier``, ``dp_sample_rate``,
``dp_steps``, ``dp_delta``, ``dp_epsilon``) has its epsilon recomputed with ``dp_accounting``'s
RDP accountant (:func:`fedchain.fl.dp.check_recorded_epsilon`): a different value is a failure
naming the round and the participant. Each participant's spends are then composed in one
accountant at the manifest's delta (or the recorded one, without a budget) and reported per
participant and round; a total past the manifest's budget is a failure.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fedchain.errors import VerificationError
from fedchain.fl.dp import Spend, check_recorded_epsilon, compose
from fedchain.protocol import Manifest, RoundVerdict
from fedchain.protocol.privacy import parse_privacy

logger = logging.getLogger(__name__)

_KEYS = ("dp_delta", "dp_epsilon", "dp_noise_multiplier", "dp_sample_rate", "dp_steps")


def dp_accounting(
    verdicts: Sequence[RoundVerdict], manifest: Manifest | None
) -> tuple[dict[str, Any] | None, list[VerificationError]]:
    """The report's ``privacy`` section and the DP failures (see the module docstring).

    Returns ``(None, [])`` when no update records DP-SGD and the manifest sets no budget.
    """
    budget = parse_privacy(manifest.privacy).dp if manifest is not None else None
    failures: list[VerificationError] = []
    spends: dict[str, list[tuple[int, Spend, float]]] = {}
    deltas: set[float] = set()
    for v in verdicts:
        for o in v.outcomes:
            m = o.metrics
            if not all(k in m for k in _KEYS):
                continue
            who = o.record.participant
            steps = float(m["dp_steps"])
            noise, rate, delta, eps = (
                float(m[k]) for k in ("dp_noise_multiplier", "dp_sample_rate", "dp_delta", "dp_epsilon")
            )
            problem = None if steps == int(steps) else f"dp_steps {steps!r} is not an integer"
            if problem is None:
                problem = check_recorded_epsilon(eps, noise, rate, int(steps), delta)
            if problem is not None:
                failures.append(
                    VerificationError(
                        v.round_id, "dp epsilon", participant=who, expected="the accountant's epsilon", actual=problem
                    )
                )
                continue
            deltas.add(delta)
            spends.setdefault(who, []).append((v.round_id, (noise, rate, int(steps)), eps))
    if budget is None and not spends:
        return None, failures
    at: float | None = budget.delta if budget is not None else (min(deltas) if deltas else None)
    per: dict[str, Any] = {}
    for account in sorted(spends, key=lambda a: int(a, 16)):
        items = spends[account]
        total = compose([s for _, s, _ in items], at) if at is not None else 0.0
        per[account] = {"epsilon": total, "rounds": [{"round": r, "epsilon": e} for r, _, e in items]}
        if budget is not None and total > budget.epsilon:
            last = items[-1][0]
            failures.append(
                VerificationError(
                    last,
                    "dp budget",
                    participant=account,
                    expected=f"epsilon <= {budget.epsilon!r}",
                    actual=f"{total!r}",
                )
            )
    section = {
        "delta": at,
        "epsilon_budget": budget.epsilon if budget is not None else None,
        "per_participant": per,
    }
    return section, failures


__all__ = ["dp_accounting"]
