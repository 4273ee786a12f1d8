"""The model and the data: fedchain's digits CNN and its Dirichlet split (in place of the quickstart's CIFAR-10)."""

from __future__ import annotations

import functools

import numpy as np
import torch

from fedchain.hashing import derive_seed
from fedchain.tasks.digits import DigitsData, DigitsTask
from fedchain.tasks.digits.task import DigitsCNN as Net

TASK = DigitsTask()


@functools.lru_cache(maxsize=4)
def _split(num_partitions: int, seed: int) -> tuple[tuple[DigitsData, ...], DigitsData]:
    demo = TASK.demo(num_partitions, seed)
    return tuple(p.data for p in demo.participants), demo.test


def load_data(partition_id: int, num_partitions: int, seed: int = 0) -> DigitsData:
    """The partition's training records (a non-IID Dirichlet share of 80% of the digits)."""
    return _split(num_partitions, seed)[0][partition_id]


def load_test(num_partitions: int, seed: int = 0) -> DigitsData:
    """The held-out 20% (the same for every partition count's seed)."""
    return _split(num_partitions, seed)[1]


def initial_model(seed: int = 0) -> Net:
    """The CNN with the task's seeded initial weights (the same in the plain and the audited run)."""
    model = Net()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in TASK.init(derive_seed(seed, "genesis")).items()})
    return model


def _arrays(model: Net) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def train(model: Net, data: DigitsData, epochs: int, lr: float, seed: int) -> float:
    """Train in place with seeded SGD; return the last epoch's mean loss."""
    result = TASK.train(_arrays(model), data, {"epochs": epochs, "lr": lr}, seed=seed)
    model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in result.arrays.items()})
    return float(result.metrics["loss"])


def test(model: Net, data: DigitsData) -> tuple[float, float]:
    """Mean cross-entropy loss and accuracy on ``data``."""
    metrics = TASK.evaluate(_arrays(model), data)
    return float(metrics["loss"]), float(metrics["accuracy"])
