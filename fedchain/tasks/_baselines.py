"""Federated learning in memory with no ledger, and the baselines it is judged against, for any task.

:func:`plain_fedavg` does what the participants and the coordinator do through the ledger
(local training seeded by :func:`~fedchain.tasks.participant_seed`, the update
``trained - base`` in float32, FedAvg in participant order with fixed float64 arithmetic),
so a ledger federation whose participants bear the same names computes the very same models.
:func:`centralized` trains the same model on the pooled data, :func:`local_only` each
participant alone. numpy only; the task brings its own framework.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from fedchain.errors import AggregationError, ConfigError
from fedchain.fl.schema import Arrays
from fedchain.tasks._seeds import derive_seed, participant_seed
from fedchain.tasks.api import DemoData, Task

logger = logging.getLogger(__name__)


@runtime_checkable
class Poolable(Protocol):
    """A task that can pool its participants' data (for :func:`centralized`)."""

    def pool(self, parts: Sequence[Any]) -> Any:
        """The participants' data concatenated, in order."""
        ...


def fedavg(
    base: Mapping[str, np.ndarray],
    updates: Sequence[tuple[str, int, Mapping[str, np.ndarray]]],
    *,
    server_lr: float = 1.0,
) -> Arrays:
    """``theta + eta * sum_k (n_k / n) * delta_k`` with the arithmetic of ``fedchain.fl``'s ``fedavg_stream``.

    Per element: ``acc = fl64(theta)``; for each update in ascending ``participant.lower()``
    order, ``c_k = fl64(fl64(eta * n_k) / n)`` and ``acc = fl64(acc + fl64(delta_k * c_k))``;
    the result is ``fl32(acc)``. ``n`` is the sum of the updates' ``n_k``.
    """
    if not updates:
        return {name: np.array(a, dtype=np.float32, copy=True) for name, a in sorted(base.items())}
    ordered = sorted(updates, key=lambda u: u[0].lower())
    keys = [u[0].lower() for u in ordered]
    if len(set(keys)) != len(keys):
        raise AggregationError("a participant appears twice among the updates")
    total = sum(n for _, n, _ in ordered)
    coefficients = [np.float64(float(server_lr * n) / total) for _, n, _ in ordered]
    out: Arrays = {}
    for name in sorted(base):
        acc = np.array(base[name], dtype=np.float64, copy=True)
        term = np.empty_like(acc)
        for (_, _, delta), c_k in zip(ordered, coefficients, strict=True):
            np.copyto(term, delta[name])
            np.multiply(term, c_k, out=term)
            np.add(acc, term, out=acc)
        out[name] = acc.astype(np.float32)
    return out


@dataclass(frozen=True)
class RoundStats:
    """One round of :func:`plain_fedavg`: the aggregate's test metrics and each participant's training metrics."""

    round_id: int
    test: Mapping[str, float]
    train: Mapping[str, Mapping[str, float]]
    seconds: float


@dataclass(frozen=True)
class FederationRun:
    """The outcome of :func:`plain_fedavg`: per-round statistics and the final global arrays."""

    rounds: tuple[RoundStats, ...]
    arrays: Arrays
    seconds: float

    @property
    def accuracies(self) -> tuple[float, ...]:
        """Test accuracy after each round."""
        return tuple(r.test["accuracy"] for r in self.rounds)


@dataclass(frozen=True)
class BaselineRun:
    """A model trained without federation: its test metrics, epochs and arrays."""

    test: Mapping[str, float]
    epochs: int
    arrays: Arrays
    seconds: float

    @property
    def accuracy(self) -> float:
        return self.test["accuracy"]


def _config_epochs(task: Task, config: Mapping[str, Any] | None) -> tuple[dict[str, Any], int]:
    merged = {**task.train_config(), **(config or {})}
    epochs = merged.get("epochs", 1)
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise ConfigError("config.epochs", f"must be a positive integer, got {epochs!r}")
    return merged, epochs


def plain_fedavg(
    task: Task,
    demo: DemoData,
    rounds: int,
    seed: int,
    *,
    server_lr: float = 1.0,
    config: Mapping[str, Any] | None = None,
    aggregate_as: Mapping[str, str] | None = None,
) -> FederationRun:
    """Run ``rounds`` rounds of FedAvg in memory over ``demo``'s participants and test after each.

    Parameters
    ----------
    task:
        The task.
    demo:
        The participants (their names order aggregation and seed training) and the test set.
    rounds:
        Rounds to run.
    seed:
        Root seed: the genesis model is ``task.init(seed)``; participant ``p`` trains round
        ``r`` with ``participant_seed(seed, r, p)``.
    server_lr:
        FedAvg's server learning rate.
    config:
        Overrides of ``task.train_config()`` for every round.
    aggregate_as:
        The name each participant's update is aggregated under, by participant name (default: its own
        name). FedAvg sums the updates in the order of those names, so a participant's ledger address
        here gives the ledger's order and a ledger run's very bits.
    """
    if not math.isfinite(server_lr) or server_lr <= 0:
        raise ConfigError("server_lr", f"must be a positive finite number, got {server_lr!r}")
    if aggregate_as is not None:
        missing = sorted(p.name for p in demo.participants if p.name not in aggregate_as)
        if missing:
            raise ConfigError("aggregate_as", f"has no name for {', '.join(missing)}")
    round_config, _ = _config_epochs(task, config)
    started = time.perf_counter()
    arrays = task.init(seed)
    stats: list[RoundStats] = []
    for r in range(rounds):
        round_started = time.perf_counter()
        updates: list[tuple[str, int, Arrays]] = []
        train_metrics: dict[str, Mapping[str, float]] = {}
        for participant in demo.participants:
            result = task.train(
                arrays, participant.data, round_config, seed=participant_seed(seed, r, participant.name)
            )
            delta = {name: result.arrays[name] - arrays[name] for name in sorted(arrays)}  # float32, like the codec's
            name = participant.name if aggregate_as is None else aggregate_as[participant.name]
            updates.append((name, result.num_samples, delta))
            train_metrics[participant.name] = dict(result.metrics)
        arrays = fedavg(arrays, updates, server_lr=server_lr)
        test = dict(task.evaluate(arrays, demo.test))
        stats.append(RoundStats(r, test, train_metrics, time.perf_counter() - round_started))
        logger.info("plain FedAvg round %d: test %s", r, test)
    return FederationRun(rounds=tuple(stats), arrays=arrays, seconds=time.perf_counter() - started)


def centralized(
    task: Task, demo: DemoData, epochs: int, seed: int, *, config: Mapping[str, Any] | None = None
) -> BaselineRun:
    """The same model trained on every participant's data pooled, for ``epochs`` epochs from ``task.init(seed)``.

    The task must implement ``pool(parts)`` (:class:`Poolable`); training is seeded with
    ``derive_seed(seed, "central")``.
    """
    if not isinstance(task, Poolable):
        raise ConfigError("task", f"task {task.name!r} cannot pool its participants' data (no pool method)")
    merged, _ = _config_epochs(task, config)
    merged["epochs"] = epochs
    started = time.perf_counter()
    pooled = task.pool([p.data for p in demo.participants])
    result = task.train(task.init(seed), pooled, merged, seed=derive_seed(seed, "central"))
    test = dict(task.evaluate(result.arrays, demo.test))
    return BaselineRun(test=test, epochs=epochs, arrays=result.arrays, seconds=time.perf_counter() - started)


def local_only(
    task: Task, demo: DemoData, epochs: int, seed: int, *, config: Mapping[str, Any] | None = None
) -> dict[str, BaselineRun]:
    """Each participant training alone for ``epochs`` epochs from ``task.init(seed)``, by participant name.

    Participant ``p`` trains with ``derive_seed(seed, "local", p)``.
    """
    merged, _ = _config_epochs(task, config)
    merged["epochs"] = epochs
    out: dict[str, BaselineRun] = {}
    for participant in demo.participants:
        started = time.perf_counter()
        result = task.train(
            task.init(seed), participant.data, merged, seed=derive_seed(seed, "local", participant.name)
        )
        test = dict(task.evaluate(result.arrays, demo.test))
        out[participant.name] = BaselineRun(test, epochs, result.arrays, time.perf_counter() - started)
    return out


__all__ = [
    "BaselineRun",
    "FederationRun",
    "Poolable",
    "RoundStats",
    "centralized",
    "fedavg",
    "local_only",
    "plain_fedavg",
]
