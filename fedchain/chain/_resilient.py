"""A JSON-RPC chain that rides out node restarts, and the one backoff policy every retry loop uses.

:class:`ResilientRpcChain` keeps the signed bytes of every transaction it sent until the
receipt arrives, so a transaction in flight when the node went away is re-broadcast with the
same bytes (same hash, same nonce): it is mined exactly once, neither lost nor sent twice.

:class:`Pacing` says how long to wait; :class:`Backoff` is the single schedule of retry
delays (start at the poll interval, double, cap at ``backoff_max``, give up after
``outage_seconds``) that :class:`ResilientRpcChain` and the services' loops share.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from hexbytes import HexBytes
from web3.types import TxReceipt

from fedchain.chain.connection import RpcChain
from fedchain.errors import ChainConnectionError, TransactionError

logger = logging.getLogger(__name__)

#: The shortest retry delay, whatever the poll interval (a zero interval must not spin).
MIN_DELAY_SECONDS = 0.1


@dataclass(frozen=True)
class Pacing:
    """How a long-running actor waits.

    Attributes
    ----------
    poll_seconds:
        Pause between reads of the chain when there is nothing to do; also the first retry delay.
    backoff_max:
        Longest pause between retries while the node or store is unreachable.
    outage_seconds:
        How long to keep retrying through failures before giving up.
    """

    poll_seconds: float = 2.0
    backoff_max: float = 8.0
    outage_seconds: float = 600.0

    def backoff(self, *, clock: Callable[[], float] = time.monotonic) -> Backoff:
        """A fresh retry schedule under this pacing, its outage clock starting now."""
        return Backoff(self, clock=clock)


@dataclass
class Backoff:
    """One retry schedule: capped exponential delays within an outage budget.

    The first delay is ``pacing.poll_seconds`` (at least :data:`MIN_DELAY_SECONDS`), each next
    one twice the last, never above ``pacing.backoff_max``. :meth:`next_delay` returns ``None``
    once failures have lasted longer than ``pacing.outage_seconds``: the caller gives up.
    """

    pacing: Pacing
    clock: Callable[[], float] = time.monotonic
    started: float = field(init=False)
    _delay: float = field(init=False)

    def __post_init__(self) -> None:
        self.started = self.clock()
        self._delay = max(self.pacing.poll_seconds, MIN_DELAY_SECONDS)

    @property
    def elapsed(self) -> float:
        """Seconds since the schedule started (the outage so far)."""
        return self.clock() - self.started

    def next_delay(self) -> float | None:
        """The pause before the next attempt, or ``None`` when the outage budget is spent."""
        if self.elapsed > self.pacing.outage_seconds:
            return None
        delay = self._delay
        self._delay = min(max(delay, MIN_DELAY_SECONDS) * 2, self.pacing.backoff_max)
        return delay


class ResilientRpcChain(RpcChain):
    """An :class:`~fedchain.chain.connection.RpcChain` that keeps a transaction alive through node restarts.

    The signed bytes of every transaction sent are kept until its receipt arrives. While
    waiting, connection failures are retried with backoff (:class:`Backoff`), and the same bytes
    are re-broadcast (same hash, same nonce) in case the node lost them when it restarted; a
    node that already has them answers "already known", and one that mined them answers with
    the receipt. So a transaction in flight across a restart is mined exactly once.

    Parameters
    ----------
    url, retries, backoff, timeout:
        As for :class:`~fedchain.chain.connection.RpcChain`.
    pacing:
        Backoff cap and how long to keep trying.
    dev:
        A development node that mines only on demand (anvil): before each transaction, mine
        an empty block if the last one is from an earlier second, so the simulation and the
        contract see the current time (a deadline that passed by the wall clock has passed
        on the chain too). Real chains produce blocks on their own.
    receipt_attempt_seconds:
        Longest wait for a receipt before the same bytes are broadcast again (default: 15 s,
        3 s on a development node, which mines at once).
    sleep:
        How to pause (tests pass a fake).
    """

    def __init__(
        self,
        url: str,
        *,
        retries: int = 6,
        backoff: float = 0.25,
        timeout: float = 30.0,
        pacing: Pacing = Pacing(),
        dev: bool = False,
        receipt_attempt_seconds: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(url, retries=retries, backoff=backoff, timeout=timeout)
        self.pacing = pacing
        self._dev = dev
        self._receipt_attempt = receipt_attempt_seconds if receipt_attempt_seconds is not None else 3.0 if dev else 15.0
        self._sleep = sleep
        self._in_flight: dict[bytes, bytes] = {}

    def prepare(self) -> None:
        if self._dev and int(self.w3.eth.get_block("latest")["timestamp"]) < int(time.time()):
            self._request("evm_mine", [])

    def send_raw_transaction(self, raw: bytes) -> HexBytes:
        schedule = self.pacing.backoff()
        while True:
            try:
                tx_hash = super().send_raw_transaction(raw)
                self._in_flight[bytes(tx_hash)] = bytes(raw)
                return tx_hash
            except (OSError, ChainConnectionError) as err:
                # Not reached the node: the same bytes again once it answers.
                delay = schedule.next_delay()
                if delay is None:
                    raise
                logger.warning("resending transaction: %s; retrying in %.2fs", type(err).__name__, delay)
                self._sleep(delay)

    def wait_for_receipt(self, tx_hash: HexBytes, timeout: float = 120.0) -> TxReceipt:
        raw = self._in_flight.get(bytes(tx_hash))
        # The outage budget is at least the caller's timeout.
        schedule = Backoff(
            Pacing(self.pacing.poll_seconds, self.pacing.backoff_max, max(timeout, self.pacing.outage_seconds))
        )
        while True:
            try:
                receipt = super().wait_for_receipt(tx_hash, timeout=min(timeout, self._receipt_attempt))
                self._in_flight.pop(bytes(tx_hash), None)
                return receipt
            except TransactionError as err:
                delay = schedule.next_delay()
                if delay is None:
                    self._in_flight.pop(bytes(tx_hash), None)
                    raise
                logger.warning(
                    "awaiting receipt of %s: %s; retrying in %.2fs", tx_hash.to_0x_hex(), err.__cause__ or err, delay
                )
                self._sleep(delay)
                if raw is not None:
                    self._rebroadcast(raw, tx_hash)

    def _rebroadcast(self, raw: bytes, tx_hash: HexBytes) -> None:
        try:
            self.w3.eth.send_raw_transaction(raw)
            logger.info("transaction %s rebroadcast", tx_hash.to_0x_hex())
        except Exception as err:  # noqa: BLE001 - "already known", "nonce too low" (mined), or still down
            logger.debug("rebroadcast of %s: %s", tx_hash.to_0x_hex(), err)


__all__ = ["MIN_DELAY_SECONDS", "Backoff", "Pacing", "ResilientRpcChain"]
