"""FedAvg as a pure function with fixed arithmetic, so an auditor recomputes it bit for bit.

The exact computation, per tensor and per element (``fl64``/``fl32``: round to nearest
even in IEEE binary64/binary32)::

    n      = total_samples                       (sum of the included n_k, from the ledger)
    acc    = fl64(theta)                         (exact: every float32 is a float64)
    for k in updates, in ascending order of participant.lower():
        c_k  = fl64(fl64(eta * n_k) / n)          (Python float arithmetic)
        acc  = fl64(acc + fl64(fl64(delta_k) * c_k))
    theta' = fl32(acc)

i.e. ``theta' = theta + eta * sum_k (n_k / n) * delta_k``. Each step is one elementwise
numpy ufunc call (``multiply``, then ``add``): no fused multiply-add, no reduction over
participants, no BLAS, no threads, so neither the thread count, the SIMD width nor the
machine changes a bit. For addresses (``0x`` + 40 hex digits) the order is the
addresses' numeric order, the order in which :class:`~fedchain.records.RoundHistory`
lists updates. With no updates the result is ``theta`` itself.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from fedchain.errors import AggregationError

logger = logging.getLogger(__name__)

#: One update as aggregation consumes it: (participant, n_k, delta tensors).
UpdateItem = tuple[str, int, Mapping[str, Tensor]]


def participant_order(participant: str) -> str:
    """The sort key of a participant: its lower-cased name (numeric order for addresses)."""
    return participant.lower()


def _as_float32(name: str, value: Tensor, participant: str | None) -> np.ndarray:
    who = f"update from {participant}: " if participant is not None else "base model: "
    if not isinstance(value, Tensor):
        raise AggregationError(f"{who}tensor {name!r} is a {type(value).__name__}, not a torch.Tensor")
    if value.dtype != torch.float32:
        raise AggregationError(f"{who}tensor {name!r} has dtype {value.dtype}, expected torch.float32")
    return value.detach().cpu().numpy()


def _ordered(updates: Iterable[UpdateItem]) -> Iterator[UpdateItem]:
    """Yield updates in ascending participant order.

    A sequence (already in memory) is sorted here; a one-shot iterator is streamed and
    must already be in order, since sorting it would hold every update at once.
    """
    if isinstance(updates, Sequence):
        items: Iterable[UpdateItem] = sorted(updates, key=lambda u: participant_order(u[0]))
    else:
        items = updates
    previous: str | None = None
    for item in items:
        participant = item[0]
        if not isinstance(participant, str) or not participant:
            raise AggregationError(f"participant must be a non-empty string, got {participant!r}")
        key = participant_order(participant)
        if previous is not None and key <= previous:
            problem = "appears twice" if key == previous else "is out of order (a stream must be sorted by participant)"
            raise AggregationError(f"update from {participant} {problem}")
        previous = key
        yield item
        del item  # hold no update while the next one is produced


def _accumulate(acc: np.ndarray, tmp: np.ndarray, d: np.ndarray, c_k: float, participant: str, name: str) -> None:
    """``acc += fl64(d) * c_k`` as two separate ufunc calls (no fused multiply-add)."""
    if d.shape != acc.shape:
        raise AggregationError(f"update from {participant}: tensor {name!r} has shape {d.shape}, expected {acc.shape}")
    np.copyto(tmp, d)  # float32 -> float64 is exact
    np.multiply(tmp, np.float64(c_k), out=tmp)
    np.add(acc, tmp, out=acc)


def fedavg_stream(
    base: Mapping[str, Tensor],
    updates: Iterable[UpdateItem],
    *,
    total_samples: int,
    server_lr: float = 1.0,
) -> dict[str, Tensor]:
    """Aggregate updates with FedAvg, exactly as the module docstring specifies.

    Memory is O(model): updates are consumed one at a time, so pass a generator that
    decodes each blob when asked for it (it must then yield in participant order).

    Parameters
    ----------
    base:
        The round's base parameters ``theta`` (float32).
    updates:
        ``(participant, n_k, delta)`` triples; a sequence is sorted here, an iterator
        must come sorted by :func:`participant_order`.
    total_samples:
        ``n``, the sum of the ``n_k`` as the ledger records them (checked).
    server_lr:
        The server learning rate ``eta``.

    Returns
    -------
    dict[str, Tensor]
        The new float32 parameters, sorted by name.

    Raises
    ------
    AggregationError
        If an update's tensors differ from the base in names, shapes or dtype, a
        participant repeats or is out of order, a sample count is not a positive int,
        or the counts do not add up to ``total_samples``.
    """
    if not (isinstance(server_lr, (int, float)) and math.isfinite(server_lr)):
        raise AggregationError(f"server learning rate must be a finite number, got {server_lr!r}")
    if not isinstance(total_samples, int) or isinstance(total_samples, bool) or total_samples < 0:
        raise AggregationError(f"total_samples must be a non-negative int, got {total_samples!r}")
    names = sorted(base)
    acc = {name: _as_float32(name, base[name], None).astype(np.float64) for name in names}
    scratch = {name: np.empty_like(acc[name]) for name in names}
    eta = float(server_lr)
    seen = 0
    for participant, n_k, delta in _ordered(updates):
        if not isinstance(n_k, int) or isinstance(n_k, bool) or n_k < 1:
            raise AggregationError(f"update from {participant}: sample count must be a positive int, got {n_k!r}")
        if set(delta) != set(names):
            raise AggregationError(f"update from {participant} has tensors {sorted(delta)}, the model has {names}")
        if total_samples == 0:
            raise AggregationError("total_samples is 0 but there are updates")
        c_k = (eta * float(n_k)) / float(total_samples)
        for name in names:
            _accumulate(acc[name], scratch[name], _as_float32(name, delta[name], participant), c_k, participant, name)
        seen += n_k
        del delta  # let the caller's generator free it before decoding the next one
        logger.debug("aggregated update from %s (n_k=%d)", participant, n_k)
    if seen != total_samples:
        raise AggregationError(f"updates declare {seen} samples in all, the ledger says {total_samples}")
    scratch.clear()
    return {name: torch.from_numpy(acc.pop(name).astype(np.float32)) for name in names}


__all__ = ["UpdateItem", "fedavg_stream", "participant_order"]
