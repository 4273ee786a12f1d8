"""What one step of a service did."""

from __future__ import annotations

import enum


class Step(enum.Enum):
    """The result of one :meth:`step` of a coordinator or participant service."""

    DONE = "done"
    WORKED = "worked"
    IDLE = "idle"


__all__ = ["Step"]
