"""Local training and evaluation: what a participant does with its own data.

Training is reproducible: the batch order comes from a ``torch.Generator`` seeded with
the caller's seed, and nothing else is random. On CPU with the same torch build and
thread count, the same inputs give the same delta bit for bit.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from fedchain.errors import DataError
from fedchain.fl.data import Dataset
from fedchain.fl.model import (
    ModelSpec,
    build_model,
    check_params,
    featurize,
    model_params,
)

logger = logging.getLogger(__name__)

#: Torch threads used while training and predicting. The model is so small that
#: intra-op parallelism costs more in synchronisation than it saves (and more still on a
#: busy machine); results are bit-identical for any thread count.
COMPUTE_THREADS = 1


@dataclass(frozen=True)
class TrainConfig:
    """What the server asks a participant to do in one round.

    Attributes
    ----------
    epochs:
        Passes over the local data.
    lr:
        SGD learning rate. High by deep-learning standards because the embedding bag
        averages its rows: each row's gradient is divided by the text's n-gram count.
    batch_size:
        Texts per step.
    """

    epochs: int = 1
    lr: float = 8.0
    batch_size: int = 32

    def __post_init__(self) -> None:
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise ValueError(f"TrainConfig.epochs must be a positive int, got {self.epochs!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"TrainConfig.batch_size must be a positive int, got {self.batch_size!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"TrainConfig.lr must be a positive finite number, got {self.lr!r}")


@dataclass(frozen=True)
class TrainMetrics:
    """How local training went (informational; never part of a blob).

    Attributes
    ----------
    loss:
        Mean training loss over the last epoch.
    steps:
        Optimizer steps taken.
    seconds:
        Wall-clock time of the training loop (featurization excluded).
    """

    loss: float
    steps: int
    seconds: float


@dataclass(frozen=True)
class LocalUpdate:
    """The result of :func:`train_local`.

    Attributes
    ----------
    delta:
        Trained minus base parameters, float32, sorted by name.
    num_samples:
        Training records used (the ``n_k`` of FedAvg).
    metrics:
        Training loss and timing.
    """

    delta: dict[str, Tensor]
    num_samples: int
    metrics: TrainMetrics


def train_params(
    params: Mapping[str, Tensor], data: Dataset, config: TrainConfig, *, spec: ModelSpec, seed: int
) -> tuple[dict[str, Tensor], TrainMetrics]:
    """Train a copy of ``params`` on ``data`` with minibatch SGD; return the trained parameters.

    Raises
    ------
    DataError
        If ``data`` is empty or its labels do not fit ``spec``.
    CodecError
        If ``params`` does not fit ``spec``.
    """
    if len(data) == 0:
        raise DataError(f"{data.name}: no training records")
    if data.num_classes != spec.num_classes:
        raise DataError(f"{data.name}: {data.num_classes} classes, but the model has {spec.num_classes}")
    model = build_model(spec, params)
    features = featurize(data.texts, data.labels, spec)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr)
    gen = torch.Generator().manual_seed(seed)
    n = len(features)
    steps = 0
    loss_sum = 0.0
    start = time.perf_counter()
    model.train()
    with torch_threads(COMPUTE_THREADS):
        for _ in range(config.epochs):
            order = torch.randperm(n, generator=gen).numpy()
            loss_sum = 0.0
            for lo in range(0, n, config.batch_size):
                ids, offsets, labels = features.batch(order[lo : lo + config.batch_size])
                optimizer.zero_grad(set_to_none=True)
                loss = F.cross_entropy(model(ids, offsets), labels)
                loss.backward()  # type: ignore[no-untyped-call]
                optimizer.step()
                loss_sum += float(loss.detach()) * len(labels)
                steps += 1
    seconds = time.perf_counter() - start
    metrics = TrainMetrics(loss=loss_sum / n, steps=steps, seconds=seconds)
    logger.debug("trained on %s: %d records, %d steps, loss %.4f, %.2fs", data.name, n, steps, metrics.loss, seconds)
    return model_params(model), metrics


def train_local(
    params: Mapping[str, Tensor], shard: Dataset, config: TrainConfig, *, spec: ModelSpec, seed: int
) -> LocalUpdate:
    """Train from ``params`` on a participant's ``shard`` and return the update.

    Parameters
    ----------
    params:
        The round's base model parameters (not modified).
    shard:
        The participant's local records.
    config:
        Epochs, learning rate and batch size, as the strategy configured them.
    spec:
        The model's spec (it fixes how texts are hashed).
    seed:
        Seeds the batch order; use :func:`~fedchain.fl.model.derive_seed` per round and participant.

    Returns
    -------
    LocalUpdate
        ``delta = trained - base`` in float32, and ``num_samples = len(shard)``.

    Raises
    ------
    DataError
        If the shard is empty or has the wrong number of classes.
    CodecError
        If ``params`` does not fit ``spec``.
    """
    check_params(spec, params)
    trained, metrics = train_params(params, shard, config, spec=spec, seed=seed)
    delta = {name: trained[name] - params[name].to(torch.float32) for name in sorted(trained)}
    return LocalUpdate(delta=delta, num_samples=len(shard), metrics=metrics)


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)``, restoring the previous count after.

    The model is small enough that one thread is usually fastest; ``None`` changes nothing.
    """
    if n is None:
        yield
        return
    if n < 1:
        raise ValueError(f"thread count must be positive, got {n}")
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def predict(params: Mapping[str, Tensor], data: Dataset, *, spec: ModelSpec, batch_size: int = 4096) -> np.ndarray:
    """The predicted class of every record of ``data`` (int64 array)."""
    model = build_model(spec, params)
    model.eval()
    features = featurize(data.texts, data.labels, spec)
    out = np.empty(len(features), dtype=np.int64)
    with torch.no_grad(), torch_threads(COMPUTE_THREADS):
        for lo in range(0, len(features), batch_size):
            rows = np.arange(lo, min(lo + batch_size, len(features)))
            ids, offsets, _ = features.batch(rows)
            out[lo : lo + len(rows)] = model(ids, offsets).argmax(dim=1).numpy()
    return out


def evaluate(params: Mapping[str, Tensor], data: Dataset, *, spec: ModelSpec) -> float:
    """Accuracy of the model ``params`` on ``data``, in ``[0, 1]``.

    Raises
    ------
    DataError
        If ``data`` is empty.
    """
    if len(data) == 0:
        raise DataError(f"{data.name}: nothing to evaluate on")
    predictions = predict(params, data, spec=spec)
    return float(np.mean(predictions == np.asarray(data.labels, dtype=np.int64)))


__all__ = [
    "COMPUTE_THREADS",
    "LocalUpdate",
    "TrainConfig",
    "TrainMetrics",
    "evaluate",
    "predict",
    "torch_threads",
    "train_local",
    "train_params",
]
