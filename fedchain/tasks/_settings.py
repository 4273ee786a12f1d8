"""Checks of ``[task.settings]`` values and round-config values, raising :class:`ConfigError` (no torch)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from fedchain.errors import ConfigError


def positive_int(key: str, value: object) -> int:
    """``value`` if it is an int >= 1 (not a bool), else a :class:`ConfigError` naming ``key``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(key, f"must be a positive integer, got {value!r}")
    return value


def positive_float(key: str, value: object) -> float:
    """``value`` as a float if it is a finite number > 0, else a :class:`ConfigError` naming ``key``."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise ConfigError(key, f"must be a positive finite number, got {value!r}")
    return float(value)


def non_negative_float(key: str, value: object) -> float:
    """``value`` as a float if it is a finite number >= 0, else a :class:`ConfigError` naming ``key``."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise ConfigError(key, f"must be a finite number >= 0, got {value!r}")
    return float(value)


def fraction(key: str, value: object) -> float:
    """``value`` as a float if it lies in (0, 1), else a :class:`ConfigError` naming ``key``."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < 1:
        raise ConfigError(key, f"must be a number strictly between 0 and 1, got {value!r}")
    return float(value)


def optional_path(key: str, value: object) -> str | None:
    """``value`` if it is ``None`` or a non-empty string, else a :class:`ConfigError` naming ``key``."""
    if value is not None and (not isinstance(value, str) or not value):
        raise ConfigError(key, f"must be a non-empty path string, got {value!r}")
    return value


def round_config(defaults: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """``defaults`` overridden by ``config``; a key ``defaults`` lacks is a :class:`ConfigError` (``config.<key>``)."""
    unknown = sorted(set(config) - set(defaults))
    if unknown:
        raise ConfigError(f"config.{unknown[0]}", f"not a training setting of this task (known: {', '.join(defaults)})")
    return {**defaults, **config}


__all__ = ["fraction", "non_negative_float", "optional_path", "positive_float", "positive_int", "round_config"]
