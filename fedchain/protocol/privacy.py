"""The manifest's ``privacy`` table: masked rounds and the differential-privacy budget.

``{"mode": "none"}`` (plain rounds), optionally with ``"dp": {"epsilon_budget": E, "delta": D}``;
or ``{"mode": "masked", "frac_bits": f, "clip": c, "min_survivors": m, "max_samples": s,
"max_participants": k, "phase_seconds": t}`` (and optionally ``"share_threshold": t`` and ``dp``).
``share_threshold`` (default ``min_survivors``, at least 2, at most ``max_participants``) is how
many Shamir shares of a member's self seed reconstruct it: the collusion threshold (fewer than
``t`` colluding members, with the coordinator, learn nothing about an honest member's self seed),
and a round whose survivors are fewer than ``t`` is abandoned. The masked fields are
checked here, at manifest construction, including the overflow bound of the fixed-point sums
(:meth:`fedchain.fl.masking.MaskingParams.check_overflow` with ``s * k`` samples and ``k``
participants): a manifest whose sums could wrap is refused before anything is deployed.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fedchain.errors import ConfigError
from fedchain.fl.masking import MaskingParams

logger = logging.getLogger(__name__)

_MODES = ("none", "masked")
_MASKED_FIELDS = ("clip", "frac_bits", "max_participants", "max_samples", "min_survivors", "mode", "phase_seconds")
_OPTIONAL_MASKED_FIELDS = ("share_threshold",)
_DP_FIELDS = ("delta", "epsilon_budget")


@dataclass(frozen=True)
class DpBudget:
    """The federation's DP budget: every participant's composed epsilon at ``delta`` stays within ``epsilon``."""

    epsilon: float
    delta: float


@dataclass(frozen=True)
class MaskedConfig:
    """A masked federation's settings (see the module docstring)."""

    params: MaskingParams
    min_survivors: int
    max_samples: int
    max_participants: int
    phase_seconds: int
    share_threshold: int
    """How many shares of a member's self seed reconstruct it (see the module docstring)."""


@dataclass(frozen=True)
class Privacy:
    """The parsed ``privacy`` table."""

    mode: str
    masked: MaskedConfig | None
    dp: DpBudget | None


def _int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"manifest.privacy.{name}", f"must be an integer >= {minimum}, got {value!r}")
    return value


def _dp(raw: Any) -> DpBudget:
    if not isinstance(raw, Mapping):
        raise ConfigError("manifest.privacy.dp", "must be an object")
    for key in sorted(raw):
        if key not in _DP_FIELDS:
            raise ConfigError(f"manifest.privacy.dp.{str(key)[:40]}", "unknown field")
    for key in _DP_FIELDS:
        if key not in raw:
            raise ConfigError(f"manifest.privacy.dp.{key}", "missing")
    eps, delta = raw["epsilon_budget"], raw["delta"]
    if not isinstance(eps, float) or not math.isfinite(eps) or eps <= 0.0:
        raise ConfigError("manifest.privacy.dp.epsilon_budget", f"must be a positive finite float, got {eps!r}")
    if not isinstance(delta, float) or not 0.0 < delta < 1.0:
        raise ConfigError("manifest.privacy.dp.delta", f"must be a float in (0, 1), got {delta!r}")
    return DpBudget(eps, delta)


def default_masked(participants: int) -> dict[str, Any]:
    """The masked settings of ``fedchain demo --private``: f = 32, an L2 clip of 100, a minimum of 2 survivors."""
    return {
        "mode": "masked",
        "frac_bits": 32,
        "clip": 100.0,
        "min_survivors": 2,
        "max_samples": 1_000_000,
        "max_participants": max(16, participants),
        "phase_seconds": 60,
    }


def parse_privacy(raw: Mapping[str, Any]) -> Privacy:
    """Parse and check a manifest's ``privacy`` table.

    Raises
    ------
    ConfigError
        Naming ``manifest.privacy.<field>``: an unknown or missing field, a bad value, or
        fixed-point parameters whose sums could overflow.
    """
    mode = raw.get("mode")
    if mode not in _MODES:
        raise ConfigError("manifest.privacy.mode", f"must be one of {', '.join(_MODES)}, got {mode!r}")
    dp = _dp(raw["dp"]) if "dp" in raw else None
    allowed = ("dp", "mode") if mode == "none" else ("dp", *_MASKED_FIELDS, *_OPTIONAL_MASKED_FIELDS)
    for key in sorted(raw):
        if key not in allowed:
            raise ConfigError(f"manifest.privacy.{str(key)[:40]}", f"unknown field for mode {mode!r}")
    if mode == "none":
        return Privacy("none", None, dp)
    for key in _MASKED_FIELDS:
        if key not in raw:
            raise ConfigError(f"manifest.privacy.{key}", "missing")
    clip = raw["clip"]
    if not isinstance(clip, float):
        raise ConfigError("manifest.privacy.clip", f"must be a positive finite float, got {clip!r}")
    try:
        params = MaskingParams(_int("frac_bits", raw["frac_bits"], 0), clip)
    except ValueError as err:
        raise ConfigError("manifest.privacy", str(err)) from None
    min_survivors = _int("min_survivors", raw["min_survivors"], 2)
    masked = MaskedConfig(
        params=params,
        min_survivors=min_survivors,
        max_samples=_int("max_samples", raw["max_samples"], 1),
        max_participants=_int("max_participants", raw["max_participants"], 2),
        phase_seconds=_int("phase_seconds", raw["phase_seconds"], 1),
        share_threshold=_int("share_threshold", raw.get("share_threshold", min_survivors), 2),
    )
    if masked.min_survivors > masked.max_participants:
        raise ConfigError(
            "manifest.privacy.min_survivors",
            f"{masked.min_survivors} is more than the {masked.max_participants} participants allowed",
        )
    if masked.share_threshold > masked.max_participants:
        raise ConfigError(
            "manifest.privacy.share_threshold",
            f"{masked.share_threshold} shares needed, more than the {masked.max_participants} participants allowed"
            " (a round's roster holds at most that many)",
        )
    try:
        params.check_overflow(masked.max_samples * masked.max_participants, masked.max_participants)
    except ValueError as err:
        raise ConfigError("manifest.privacy", str(err)) from None
    return Privacy("masked", masked, dp)


__all__ = ["DpBudget", "MaskedConfig", "Privacy", "default_masked", "parse_privacy"]
