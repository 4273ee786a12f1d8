"""Aggregation strategies, in the spirit of Flower's ``Strategy``: configure, then aggregate.

The maths is a pure function (:func:`fedavg_stream`); :class:`FedAvg` is a thin holder of its
settings. The auditor recomputes aggregates bit for bit, so the arithmetic is fixed here:

    acc    = float64(theta)                                 (per tensor)
    for k in updates, ascending by participant address:
        c_k  = (eta * n_k) / n                              (one Python float64)
        acc  = acc + float64(delta_k) * c_k                 (two numpy ufuncs: no fused multiply-add)
    theta' = float32(acc)                                   (round to nearest)

Only elementwise numpy ufuncs are used (no reductions, no BLAS, no threads), so the result
does not depend on thread counts or vector widths. Updates are consumed one at a time from an
iterator: memory is O(model), not O(participants x model).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from fedchain.errors import AggregationError
from fedchain.fl.train import TrainConfig

#: One update as aggregation consumes it: (participant address, n_k, delta tensors).
UpdateItem = tuple[str, int, Mapping[str, Tensor]]


def fedavg_stream(base: Mapping[str, Tensor], updates: Iterable[UpdateItem], *, total_samples: int, server_lr: float = 1.0) -> dict[str, Tensor]:
    """FedAvg over a stream of updates (see the module docstring for the exact arithmetic).

    Raises
    ------
    AggregationError
        If updates are not in strictly ascending participant order, a delta's names or shapes
        differ from the base, or the sample counts do not add up to ``total_samples``.
    """
    acc = {name: base[name].detach().cpu().numpy().astype(np.float64) for name in sorted(base)}
    previous = -1
    seen = 0
    for participant, n_k, delta in updates:
        key = int(participant, 16)
        if key <= previous:
            raise AggregationError(f"updates must come in strictly ascending participant order; {participant} is out of order")
        previous = key
        if set(delta) != set(acc):
            raise AggregationError(f"update from {participant} has tensors {sorted(delta)}, the model has {sorted(acc)}")
        if total_samples <= 0:
            raise AggregationError(f"total_samples is {total_samples} with updates present")
        c_k = (float(server_lr) * float(n_k)) / float(total_samples)
        for name in acc:
            d = delta[name].detach().cpu().numpy()
            if d.shape != acc[name].shape:
                raise AggregationError(f"update from {participant}: tensor {name} has shape {d.shape}, expected {acc[name].shape}")
            scaled = np.multiply(d.astype(np.float64), c_k)
            np.add(acc[name], scaled, out=acc[name])
            del scaled
        seen += n_k
    if seen != total_samples and not (seen == 0 and total_samples == 0):
        raise AggregationError(f"updates declare {seen} samples in all, not {total_samples}")
    return {name: torch.from_numpy(acc[name].astype(np.float32)) for name in acc}


class Strategy(Protocol):
    """What the coordinator, participants and auditors agree on for each round."""

    def configure(self, round_id: int, default: TrainConfig) -> TrainConfig:
        """The training settings participants use in ``round_id``."""
        ...

    def aggregate(self, base: Mapping[str, Tensor], updates: Iterable[UpdateItem], *, total_samples: int) -> dict[str, Tensor]:
        """The new global model from ``base`` and the round's valid updates (sorted by participant)."""
        ...


@dataclass(frozen=True)
class FedAvg:
    """Federated averaging: theta + eta * sum_k (n_k / n) * delta_k.

    Attributes
    ----------
    server_lr:
        The server learning rate eta (1.0 is plain FedAvg).
    """

    server_lr: float = 1.0

    def configure(self, round_id: int, default: TrainConfig) -> TrainConfig:
        return default

    def aggregate(self, base: Mapping[str, Tensor], updates: Iterable[UpdateItem], *, total_samples: int) -> dict[str, Tensor]:
        return fedavg_stream(base, updates, total_samples=total_samples, server_lr=self.server_lr)


__all__ = ["FedAvg", "Strategy", "UpdateItem", "fedavg_stream"]
