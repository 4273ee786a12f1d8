"""Driving a service over a real node: step until done, riding out outages with one backoff policy."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from web3.exceptions import Web3Exception

from fedchain.chain import Pacing
from fedchain.errors import (
    BlobNotFoundError,
    ChainConnectionError,
    ChainError,
    ContractRevertError,
    StoreUnavailableError,
    UnknownContractError,
)
from fedchain.orchestrator._events import log_event
from fedchain.orchestrator._step import Step

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Errors a service rides out by waiting and reading the chain again.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    ChainError,  # connection lost, transaction not mined yet, refused in a race
    StoreUnavailableError,
    BlobNotFoundError,
    OSError,  # refused sockets
    Web3Exception,  # node-side errors while it restarts (e.g. "header not found")
)
#: Errors that waiting cannot fix, although they are chain errors.
FINAL_ERRORS: tuple[type[BaseException], ...] = (UnknownContractError, ContractRevertError)


def run_loop(
    step: Callable[[], Step],
    pacing: Pacing,
    *,
    endpoint: str,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Call ``step`` until it returns :attr:`Step.DONE`, riding out transient failures.

    Retries follow the one backoff policy of :class:`fedchain.chain.Backoff` (doubling from
    ``pacing.poll_seconds`` up to ``pacing.backoff_max``, for at most ``pacing.outage_seconds``).

    Raises
    ------
    ChainConnectionError
        If failures go on for longer than ``pacing.outage_seconds``.
    """
    backoff = None  # the retry schedule of the current outage, if any
    while True:
        try:
            result = step()
        except FINAL_ERRORS:
            raise
        except TRANSIENT_ERRORS as err:
            if backoff is None:
                backoff = pacing.backoff(clock=clock)
                log_event(
                    "unreachable",
                    endpoint=endpoint,
                    detail=_describe(err, 160),
                    gives_up_after_seconds=pacing.outage_seconds,
                )
            delay = backoff.next_delay()
            if delay is None:
                raise ChainConnectionError(
                    endpoint, f"still failing after {backoff.elapsed:.0f}s; last error: {_describe(err)}"
                ) from err
            log_event(
                "retrying",
                error=type(err).__name__,
                detail=_describe(err, 160),
                in_seconds=delay,
                gives_up_in_seconds=max(0.0, pacing.outage_seconds - backoff.elapsed),
            )
            sleep(delay)
            continue
        if backoff is not None:
            log_event("recovered", after_seconds=backoff.elapsed)
            backoff = None
        if result is Step.DONE:
            return
        if result is Step.IDLE:
            sleep(pacing.poll_seconds)


def retrying(
    fn: Callable[[], T], pacing: Pacing, *, endpoint: str, what: str, sleep: Callable[[float], None] = time.sleep
) -> T:
    """Call ``fn`` once successfully, retrying transient failures like :func:`run_loop`."""
    box: list[Any] = []

    def step() -> Step:
        box.append(fn())
        return Step.DONE

    logger.debug("waiting for %s", what)
    run_loop(step, pacing, endpoint=endpoint, sleep=sleep)
    return box[0]  # type: ignore[no-any-return]


def _describe(err: BaseException, limit: int = 300) -> str:
    text = " ".join((str(err) or type(err).__name__).split())
    return text if len(text) <= limit else text[:limit] + "..."


__all__ = ["FINAL_ERRORS", "TRANSIENT_ERRORS", "retrying", "run_loop"]
