"""Event logging of the services: one ``event=NAME key=value ...`` line per event.

The record also carries ``event`` and ``fields`` attributes, so a handler can format them as JSON.
"""

from __future__ import annotations

import logging
from typing import Any

from fedchain.hashing import to_hex

logger = logging.getLogger("fedchain.orchestrator")


def log_event(event: str, **fields: Any) -> None:
    """Log one event as a single ``event=NAME key=value ...`` line."""
    text = " ".join(f"{k}={_fmt(v)}" for k, v in fields.items())
    logger.info("event=%s%s%s", event, " " if text else "", text, extra={"event": event, "fields": fields})


def _fmt(value: Any) -> str:
    if isinstance(value, bytes):
        return to_hex(value)
    if isinstance(value, float):
        return f"{value:.3f}"
    text = str(value)
    return f'"{text}"' if (" " in text or not text) else text


__all__ = ["log_event"]
