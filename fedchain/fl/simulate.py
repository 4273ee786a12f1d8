"""Federated learning in memory, with no ledger, store or verification: the baseline.

Benchmarks measure the ledger's overhead against :func:`run_plain_fedavg`, and the accuracy
script compares it with :func:`train_centralized`. The steps a real participant and
coordinator take are the functions here too (:func:`genesis_params`,
:func:`participant_seed`, :func:`local_round`, :meth:`Strategy.aggregate`), so a federation
run through the ledger with the same participant keys computes the very same models.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace

from torch import Tensor

from fedchain.fl._aggregate import UpdateItem, participant_order
from fedchain.fl.data import Dataset, FederatedSplit
from fedchain.fl.model import ModelSpec, derive_seed, init_params
from fedchain.fl.strategy import Strategy
from fedchain.fl.train import (
    LocalUpdate,
    TrainConfig,
    evaluate,
    train_local,
    train_params,
)

logger = logging.getLogger(__name__)


def genesis_params(spec: ModelSpec, seed: int) -> dict[str, Tensor]:
    """The federation's initial model: :func:`init_params` with ``derive_seed(seed, "genesis")``."""
    return init_params(spec, derive_seed(seed, "genesis"))


def participant_seed(seed: int, round_id: int, participant: str) -> int:
    """The seed of ``participant``'s local training in ``round_id``: ``derive_seed(seed, "train", round_id, participant)``."""
    return derive_seed(seed, "train", round_id, participant)


def local_round(
    params: Mapping[str, Tensor],
    shard: Dataset,
    *,
    spec: ModelSpec,
    strategy: Strategy,
    default: TrainConfig,
    round_id: int,
    seed: int,
    participant: str,
) -> LocalUpdate:
    """One participant's work in one round: train on ``shard`` from the round's base model.

    The strategy configures the round, and the training seed is
    ``participant_seed(seed, round_id, participant)``.
    """
    config = strategy.configure(round_id, default)
    return train_local(params, shard, config, spec=spec, seed=participant_seed(seed, round_id, participant))


@dataclass(frozen=True)
class RoundStats:
    """One round of :func:`run_plain_fedavg`.

    Attributes
    ----------
    round_id:
        The round.
    accuracy:
        Test accuracy of the round's aggregate.
    train_seconds:
        ``(participant, seconds)`` of local training (featurization excluded), in aggregation order.
    seconds:
        Wall-clock time of the whole round, evaluation included.
    """

    round_id: int
    accuracy: float
    train_seconds: tuple[tuple[str, float], ...]
    seconds: float


@dataclass(frozen=True)
class FederationRun:
    """The outcome of :func:`run_plain_fedavg`.

    Attributes
    ----------
    rounds:
        Per-round statistics.
    params:
        The final global model.
    seconds:
        Wall-clock time of the whole run.
    """

    rounds: tuple[RoundStats, ...]
    params: dict[str, Tensor]
    seconds: float

    @property
    def accuracies(self) -> tuple[float, ...]:
        """Test accuracy after each round."""
        return tuple(r.accuracy for r in self.rounds)


def run_plain_fedavg(
    split: FederatedSplit,
    spec: ModelSpec,
    rounds: int,
    strategy: Strategy,
    seed: int,
    *,
    train: TrainConfig | None = None,
    participant_keys: Mapping[str, str] | None = None,
) -> FederationRun:
    """Run ``rounds`` rounds of federated learning in memory and evaluate after each.

    Parameters
    ----------
    split:
        One shard per participant, and the test set.
    spec:
        The model.
    rounds:
        Rounds to run.
    strategy:
        Configures local training and aggregates.
    seed:
        Root seed of the genesis model and of every participant's training.
    train:
        The federation's default training settings (what the strategy configures from).
    participant_keys:
        Each shard's participant key, by shard name: it orders aggregation and seeds
        training. A ledger federation keys participants by address; pass the same
        addresses to reproduce it exactly. By default the shard names.

    Returns
    -------
    FederationRun
    """
    default = train if train is not None else TrainConfig()
    keys = {s.name: (participant_keys or {}).get(s.name, s.name) for s in split.shards}
    order = sorted(split.shards, key=lambda s: participant_order(keys[s.name]))
    total = sum(len(s) for s in order)
    started = time.perf_counter()
    params = genesis_params(spec, seed)
    stats: list[RoundStats] = []
    for r in range(rounds):
        round_started = time.perf_counter()
        timings: list[tuple[str, float]] = []

        def updates(
            base: Mapping[str, Tensor], round_id: int, timings: list[tuple[str, float]]
        ) -> Iterator[UpdateItem]:
            # one update alive at a time, like a coordinator decoding blobs on demand
            for shard in order:
                key = keys[shard.name]
                update = local_round(
                    base,
                    shard,
                    spec=spec,
                    strategy=strategy,
                    default=default,
                    round_id=round_id,
                    seed=seed,
                    participant=key,
                )
                timings.append((key, update.metrics.seconds))
                yield key, update.num_samples, update.delta
                del update

        params = strategy.aggregate(params, updates(params, r, timings), total_samples=total)
        accuracy = evaluate(params, split.test, spec=spec)
        stats.append(RoundStats(r, accuracy, tuple(timings), time.perf_counter() - round_started))
        logger.info("plain FedAvg round %d: test accuracy %.4f", r, accuracy)
    return FederationRun(rounds=tuple(stats), params=params, seconds=time.perf_counter() - started)


@dataclass(frozen=True)
class CentralizedRun:
    """The outcome of :func:`train_centralized`.

    Attributes
    ----------
    accuracy:
        Test accuracy.
    epochs:
        Epochs trained over the pooled data.
    params:
        The trained model.
    seconds:
        Wall-clock time, evaluation included.
    """

    accuracy: float
    epochs: int
    params: dict[str, Tensor]
    seconds: float


def train_centralized(
    split: FederatedSplit,
    spec: ModelSpec,
    rounds: int,
    strategy: Strategy,
    seed: int,
    *,
    train: TrainConfig | None = None,
) -> CentralizedRun:
    """Train the same model on all shards pooled, for as many epochs as the federation's rounds total.

    The model starts from the same genesis parameters as :func:`run_plain_fedavg`, with the
    learning rate and batch size that the strategy configures for round 0.
    """
    default = train if train is not None else TrainConfig()
    epochs = sum(strategy.configure(r, default).epochs for r in range(rounds))
    config = replace(strategy.configure(0, default), epochs=epochs)
    started = time.perf_counter()
    params, _ = train_params(
        genesis_params(spec, seed), split.pooled(), config, spec=spec, seed=derive_seed(seed, "central")
    )
    accuracy = evaluate(params, split.test, spec=spec)
    return CentralizedRun(accuracy=accuracy, epochs=epochs, params=params, seconds=time.perf_counter() - started)


__all__ = [
    "CentralizedRun",
    "FederationRun",
    "RoundStats",
    "genesis_params",
    "local_round",
    "participant_seed",
    "run_plain_fedavg",
    "train_centralized",
]
