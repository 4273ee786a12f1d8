"""Differential-privacy accounting for DP-SGD updates, with Google's ``dp_accounting``.

A participant trains with DP-SGD (per-sample clipping and Gaussian noise, Poisson
sampling of batches): each step is the event ``PoissonSampled(q, Gaussian(sigma))``, a
round's training is that event self-composed ``steps`` times, and a participant's total
spending is every round's events composed in one RDP accountant. This is the same event
Opacus' ``RDPAccountant`` models; :func:`epsilon_dp_sgd` agrees with it to about 1e-7
relative (tests/fl/test_dp.py). numpy-free and torch-free; the audit imports it.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import dp_accounting

logger = logging.getLogger(__name__)

#: One round's DP-SGD training as the accountant sees it: (noise multiplier, sample rate, steps).
Spend = tuple[float, float, int]

_DECIMAL = re.compile(r"0|[1-9][0-9]{0,18}")


def _check(noise_multiplier: float, sample_rate: float, steps: int) -> None:
    if not isinstance(noise_multiplier, float) or not math.isfinite(noise_multiplier) or noise_multiplier <= 0.0:
        raise ValueError(f"noise_multiplier must be a positive finite float, got {noise_multiplier!r}")
    if not isinstance(sample_rate, float) or not 0.0 < sample_rate <= 1.0:
        raise ValueError(f"sample_rate must be a float in (0, 1], got {sample_rate!r}")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise ValueError(f"steps must be a non-negative int, got {steps!r}")


def _check_delta(delta: float) -> None:
    if not isinstance(delta, float) or not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be a float in (0, 1), got {delta!r}")


def _accounting() -> Any:
    """``dp_accounting``, imported when first needed: it brings scipy, which a plain audit does not need."""
    import dp_accounting
    import dp_accounting.rdp

    return dp_accounting


def _event(noise_multiplier: float, sample_rate: float, steps: int) -> dp_accounting.DpEvent:
    _check(noise_multiplier, sample_rate, steps)
    dp_accounting = _accounting()
    step = dp_accounting.PoissonSampledDpEvent(sample_rate, dp_accounting.GaussianDpEvent(noise_multiplier))
    return dp_accounting.SelfComposedDpEvent(step, steps)


def compose(spends: Iterable[Spend], delta: float) -> float:
    """The epsilon at ``delta`` of all ``spends`` composed in one RDP accountant (default orders)."""
    _check_delta(delta)
    accountant = _accounting().rdp.RdpAccountant()
    for noise, rate, steps in spends:
        accountant.compose(_event(noise, rate, steps))
    return float(accountant.get_epsilon(delta))


def epsilon_dp_sgd(noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    """The epsilon at ``delta`` of ``steps`` Poisson-sampled Gaussian steps (one round's DP-SGD)."""
    return compose([(noise_multiplier, sample_rate, steps)], delta)


def check_recorded_epsilon(
    recorded_eps: float, noise: float, rate: float, steps: int, delta: float, rel_tol: float = 1e-9
) -> str | None:
    """``None`` when ``recorded_eps`` is what the accountant computes, else the reason (the audit fails).

    The accountant is deterministic (its floating point included) for a given version of
    ``dp_accounting``, so a participant recording what :func:`epsilon_dp_sgd` returned matches
    to the last bit; ``rel_tol`` covers a different library version on the auditor's side.
    """
    try:
        expected = epsilon_dp_sgd(noise, rate, steps, delta)
    except ValueError as err:
        return f"the recorded DP parameters are invalid: {err}"
    if not isinstance(recorded_eps, float) or not math.isfinite(recorded_eps):
        return f"recorded epsilon {recorded_eps!r} is not a finite float"
    if not math.isclose(recorded_eps, expected, rel_tol=rel_tol, abs_tol=0.0):
        return (
            f"recorded epsilon {recorded_eps!r} differs from the accountant's {expected!r}"
            f" for noise {noise!r}, sample rate {rate!r}, {steps} steps, delta {delta!r}"
        )
    return None


def remaining(budget_eps: float, spends: Iterable[Spend], delta: float) -> float:
    """The budget left after ``spends`` (negative when already past it)."""
    return budget_eps - compose(spends, delta)


def would_exceed(budget_eps: float, spent: Iterable[Spend], planned: Spend, delta: float) -> bool:
    """Whether training ``planned`` after ``spent`` would take the total past ``budget_eps``: then refuse."""
    return compose([*spent, planned], delta) > budget_eps


@dataclass(frozen=True)
class DpSpend:
    """One update's DP-SGD spending, as its header records it (bound by the blob's digest).

    ``epsilon`` is what the participant's accountant said for the other four; the audit
    recomputes it (:func:`check_recorded_epsilon`).
    """

    noise_multiplier: float
    sample_rate: float
    steps: int
    delta: float
    epsilon: float

    def __post_init__(self) -> None:
        _check(self.noise_multiplier, self.sample_rate, self.steps)
        _check_delta(self.delta)
        if not isinstance(self.epsilon, float) or not math.isfinite(self.epsilon) or self.epsilon < 0.0:
            raise ValueError(f"epsilon must be a non-negative finite float, got {self.epsilon!r}")

    @classmethod
    def measured(cls, noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> DpSpend:
        """The spend with its epsilon computed here."""
        return cls(
            noise_multiplier, sample_rate, steps, delta, epsilon_dp_sgd(noise_multiplier, sample_rate, steps, delta)
        )

    @property
    def spend(self) -> Spend:
        return (self.noise_multiplier, self.sample_rate, self.steps)

    def check(self, rel_tol: float = 1e-9) -> str | None:
        """:func:`check_recorded_epsilon` of this record."""
        return check_recorded_epsilon(
            self.epsilon, self.noise_multiplier, self.sample_rate, self.steps, self.delta, rel_tol
        )

    def to_metadata(self) -> dict[str, str]:
        """Header strings (floats as their canonical ``repr``, which round-trips exactly)."""
        return {
            "dp_delta": repr(self.delta),
            "dp_epsilon": repr(self.epsilon),
            "dp_noise_multiplier": repr(self.noise_multiplier),
            "dp_sample_rate": repr(self.sample_rate),
            "dp_steps": str(self.steps),
        }

    @classmethod
    def from_metadata(cls, meta: Mapping[str, str]) -> DpSpend:
        """Parse :meth:`to_metadata`'s strings strictly (exact keys, canonical values).

        Raises
        ------
        ValueError
            A missing, unknown or non-canonical field.
        """
        keys = {"dp_delta", "dp_epsilon", "dp_noise_multiplier", "dp_sample_rate", "dp_steps"}
        if set(meta) != keys:
            raise ValueError(f"dp fields must be exactly {sorted(keys)}, got {sorted(meta)[:10]}")
        if not _DECIMAL.fullmatch(meta["dp_steps"]):
            raise ValueError(f"dp_steps is not a canonical decimal: {meta['dp_steps'][:40]!r}")
        floats = {}
        for key in ("dp_delta", "dp_epsilon", "dp_noise_multiplier", "dp_sample_rate"):
            value = float(meta[key])
            if repr(value) != meta[key]:
                raise ValueError(f"{key} is not the canonical repr of a float: {meta[key][:40]!r}")
            floats[key] = value
        return cls(
            floats["dp_noise_multiplier"],
            floats["dp_sample_rate"],
            int(meta["dp_steps"]),
            floats["dp_delta"],
            floats["dp_epsilon"],
        )


__all__ = [
    "DpSpend",
    "Spend",
    "check_recorded_epsilon",
    "compose",
    "epsilon_dp_sgd",
    "remaining",
    "would_exceed",
]
