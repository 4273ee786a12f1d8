"""Local training and evaluation of the ICD-10 classifier: what a participant does with its own data.

Training is reproducible: the batch order comes from a ``torch.Generator`` seeded with the
caller's seed, and nothing else is random (with DP-SGD, Opacus' Poisson sampling and noise
draw from generators seeded from it too). On CPU with the same torch build and thread count,
the same inputs give the same parameters bit for bit.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from fedchain.errors import DataError
from fedchain.tasks._torch import DpSettings, make_private, quiet_opacus, torch_threads
from fedchain.tasks.icd.data import Dataset
from fedchain.tasks.icd.model import ModelSpec, build_model, featurize, model_params

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
        Texts per step (with DP-SGD: the expected size of a Poisson-sampled batch).
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
    """How local training went.

    Attributes
    ----------
    loss:
        Mean training loss over the last epoch.
    accuracy:
        Share of the last epoch's training records predicted right (before each step).
    steps:
        Optimizer steps taken.
    seconds:
        Wall-clock time of the training loop (featurization excluded; informational).
    dp:
        With DP-SGD, the recorded privacy keys (``dp_noise_multiplier``, ``dp_sample_rate``,
        ``dp_steps``, ``dp_delta``, ``dp_epsilon``); empty otherwise.
    """

    loss: float
    accuracy: float
    steps: int
    seconds: float
    dp: Mapping[str, float]


def train_params(
    params: Mapping[str, Tensor],
    data: Dataset,
    config: TrainConfig,
    *,
    spec: ModelSpec,
    seed: int,
    dp: DpSettings | None = None,
) -> tuple[dict[str, Tensor], TrainMetrics]:
    """Train a copy of ``params`` on ``data`` with minibatch SGD (or DP-SGD); return the trained parameters.

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
    if dp is not None and dp.enabled:
        return _train_private(params, data, config, spec=spec, seed=seed, dp=dp)
    model = build_model(spec, params)
    features = featurize(data.texts, data.labels, spec)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr)
    gen = torch.Generator().manual_seed(seed)
    n = len(features)
    steps = 0
    loss_sum = 0.0
    correct = 0
    start = time.perf_counter()
    model.train()
    with torch_threads(COMPUTE_THREADS):
        for _ in range(config.epochs):
            order = torch.randperm(n, generator=gen).numpy()
            loss_sum = 0.0
            correct = 0
            for lo in range(0, n, config.batch_size):
                ids, offsets, labels = features.batch(order[lo : lo + config.batch_size])
                optimizer.zero_grad(set_to_none=True)
                logits = model(ids, offsets)
                loss = F.cross_entropy(logits, labels)
                loss.backward()  # type: ignore[no-untyped-call]
                optimizer.step()
                loss_sum += float(loss.detach()) * len(labels)
                correct += int((logits.detach().argmax(dim=1) == labels).sum())
                steps += 1
    seconds = time.perf_counter() - start
    metrics = TrainMetrics(loss=loss_sum / n, accuracy=correct / n, steps=steps, seconds=seconds, dp={})
    logger.debug("trained on %s: %d records, %d steps, loss %.4f, %.2fs", data.name, n, steps, metrics.loss, seconds)
    return model_params(model), metrics


def _train_private(
    params: Mapping[str, Tensor], data: Dataset, config: TrainConfig, *, spec: ModelSpec, seed: int, dp: DpSettings
) -> tuple[dict[str, Tensor], TrainMetrics]:
    model = build_model(spec, params, sparse=False)
    features = featurize(data.texts, data.labels, spec)
    n = len(features)
    rows = torch.utils.data.TensorDataset(torch.arange(n, dtype=torch.int64))
    private = make_private(
        model, torch.optim.SGD(model.parameters(), lr=config.lr), rows, config.batch_size, dp, seed=seed
    )
    steps = 0
    loss_sum = 0.0
    seen = 0
    correct = 0
    start = time.perf_counter()
    private.module.train()
    with torch_threads(COMPUTE_THREADS), quiet_opacus():
        for _ in range(config.epochs):
            loss_sum, seen, correct = 0.0, 0, 0
            for (batch,) in private.loader:
                ids, offsets, labels = features.batch(batch.numpy())
                private.optimizer.zero_grad(set_to_none=True)
                logits = private.module(ids, offsets)
                # an empty Poisson batch still takes its (noise-only) step; its mean loss would be NaN
                loss = F.cross_entropy(logits, labels) if len(labels) else logits.sum()
                loss.backward()
                private.optimizer.step()
                loss_sum += float(loss.detach()) * len(labels)
                seen += len(labels)
                correct += int((logits.detach().argmax(dim=1) == labels).sum())
                steps += 1
    seconds = time.perf_counter() - start
    metrics = TrainMetrics(
        loss=loss_sum / max(seen, 1),
        accuracy=correct / max(seen, 1),
        steps=steps,
        seconds=seconds,
        dp=private.metrics(dp.delta),
    )
    trained = {name.removeprefix("_module."): t for name, t in model_params(private.module).items()}
    return dict(sorted(trained.items())), metrics


def predict_scores(
    params: Mapping[str, Tensor], data: Dataset, *, spec: ModelSpec, batch_size: int = 4096
) -> tuple[np.ndarray, float]:
    """The predicted class of every record of ``data`` (int64 array) and the mean cross-entropy."""
    model = build_model(spec, params)
    model.eval()
    features = featurize(data.texts, data.labels, spec)
    out = np.empty(len(features), dtype=np.int64)
    loss_sum = 0.0
    with torch.no_grad(), torch_threads(COMPUTE_THREADS):
        for lo in range(0, len(features), batch_size):
            rows = np.arange(lo, min(lo + batch_size, len(features)))
            ids, offsets, labels = features.batch(rows)
            logits = model(ids, offsets)
            out[lo : lo + len(rows)] = logits.argmax(dim=1).numpy()
            loss_sum += float(F.cross_entropy(logits, labels, reduction="sum"))
    return out, loss_sum / max(len(features), 1)


def predict(params: Mapping[str, Tensor], data: Dataset, *, spec: ModelSpec, batch_size: int = 4096) -> np.ndarray:
    """The predicted class of every record of ``data`` (int64 array)."""
    return predict_scores(params, data, spec=spec, batch_size=batch_size)[0]


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
    "TrainConfig",
    "TrainMetrics",
    "evaluate",
    "predict",
    "predict_scores",
    "train_params",
]
