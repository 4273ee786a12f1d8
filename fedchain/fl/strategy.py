"""Aggregation strategies, in the spirit of Flower's ``Strategy``: configure, then aggregate.

The maths lives in a pure function (:func:`fedavg_stream`, whose docstring states the exact
arithmetic an auditor recomputes); :class:`FedAvg` is a thin holder of its one setting.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar, runtime_checkable

import numpy as np

from fedchain.fl._aggregate import UpdateItem, default_threads, fedavg_matches, fedavg_stream, participant_order

logger = logging.getLogger(__name__)

#: A round's training settings: whatever the task trains with, opaque to the strategy.
ConfigT = TypeVar("ConfigT")


@runtime_checkable
class Strategy(Protocol):
    """What the coordinator, the participants and auditors agree on for every round."""

    @property
    def name(self) -> str:
        """A short canonical description (recorded in every aggregate blob's header)."""
        ...

    def configure(self, round_id: int, default: ConfigT) -> ConfigT:
        """The training settings participants use in ``round_id``, given the federation's default."""
        ...

    def aggregate(
        self,
        base: Mapping[str, np.ndarray],
        updates: Iterable[UpdateItem],
        *,
        total_samples: int,
        release_base: bool = False,
    ) -> dict[str, np.ndarray]:
        """The new global model from ``base`` and the round's valid updates (numpy float32 arrays).

        ``updates`` yields ``(participant, n_k, delta)``; a one-shot iterator must be
        sorted by participant (see :func:`fedavg_stream`). With ``release_base``, ``base`` is a
        dict the caller gives up (emptied once read, so its memory can go early).
        """
        ...


@dataclass(frozen=True)
class FedAvg:
    """Federated averaging: ``theta + eta * sum_k (n_k / n) * delta_k``.

    Attributes
    ----------
    server_lr:
        The server learning rate ``eta`` (1.0 is plain FedAvg).
    """

    server_lr: float = 1.0

    def __post_init__(self) -> None:
        if not (isinstance(self.server_lr, (int, float)) and math.isfinite(self.server_lr) and self.server_lr > 0):
            raise ValueError(f"FedAvg.server_lr must be a positive finite number, got {self.server_lr!r}")

    @property
    def name(self) -> str:
        """``fedavg:server_lr=<repr>``, e.g. ``fedavg:server_lr=1.0``."""
        return f"fedavg:server_lr={float(self.server_lr)!r}"

    def configure(self, round_id: int, default: ConfigT) -> ConfigT:
        """Every round trains with the federation's default settings."""
        return default

    def aggregate(
        self,
        base: Mapping[str, np.ndarray],
        updates: Iterable[UpdateItem],
        *,
        total_samples: int,
        release_base: bool = False,
    ) -> dict[str, np.ndarray]:
        """:func:`fedavg_stream` with this strategy's server learning rate."""
        return fedavg_stream(
            base, updates, total_samples=total_samples, server_lr=self.server_lr, release_base=release_base
        )

    def matches(
        self,
        base: Mapping[str, np.ndarray],
        updates: Sequence[UpdateItem],
        *,
        total_samples: int,
        expected: Mapping[str, np.ndarray],
    ) -> bool:
        """Whether :meth:`aggregate` of these arguments is ``expected``, every element finite and of the same bits.

        :func:`~fedchain.fl._aggregate.fedavg_matches`: decided without writing the aggregate
        (what a verifier holding the stored aggregate needs); raises as :meth:`aggregate` would.
        A strategy without this method is verified by aggregating and comparing.
        """
        return fedavg_matches(base, updates, total_samples=total_samples, expected=expected, server_lr=self.server_lr)


__all__ = ["ConfigT", "FedAvg", "Strategy", "UpdateItem", "default_threads", "fedavg_stream", "participant_order"]
