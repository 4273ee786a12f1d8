"""The ``icd`` task: the ICD-10-CM chapter classifier (hashed n-grams, a mean embedding bag, SGD)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedchain.errors import ConfigError, DataError
from fedchain.fl.schema import Arrays, Schema
from fedchain.tasks._seeds import derive_seed
from fedchain.tasks._settings import (
    fraction,
    non_negative_float,
    optional_path,
    positive_float,
    positive_int,
    round_config,
)
from fedchain.tasks._torch import DpSettings, check_arrays, torch_threads
from fedchain.tasks.api import Config, DemoData, DemoParticipant, Task, TrainResult
from fedchain.tasks.icd.data import (
    HOSPITALS,
    ICD10_NUM_CHAPTERS,
    Dataset,
    export_shard,
    icd10_label_names,
    load_icd10,
    load_shard,
    split_non_iid,
)
from fedchain.tasks.icd.model import ModelSpec, init_params, param_shapes
from fedchain.tasks.icd.train import COMPUTE_THREADS, TrainConfig, predict_scores, train_params

logger = logging.getLogger(__name__)


def _tensors(arrays: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {name: torch.from_numpy(np.array(a, dtype=np.float32, copy=True)) for name, a in sorted(arrays.items())}


def _arrays(params: Mapping[str, torch.Tensor]) -> Arrays:
    return {name: np.ascontiguousarray(t.detach().numpy(), dtype=np.float32) for name, t in sorted(params.items())}


def _read_labels(path: str) -> tuple[str, ...]:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError("task.settings.labels", f"cannot read {path}: {err}") from err
    names = tuple(line.strip() for line in lines if line.strip())
    if len(names) < 2 or len(set(names)) != len(names):
        raise ConfigError("task.settings.labels", f"{path} must list at least 2 distinct class names, one a line")
    return names


class IcdTask(Task):
    """ICD-10-CM titles to their chapter: fastText's architecture over hashed word n-grams.

    The exchanged tensors are the model's three parameters (``embedding.weight``, ``fc.bias``,
    ``fc.weight``); the model has no buffers and nothing frozen. :meth:`describe` is the model
    spec's canonical JSON, e.g. ``{"dim":16,"ngram":2,"num_buckets":16384,"num_classes":22}``.

    Parameters (``[task.settings]``)
    --------------------------------
    num_buckets, dim, ngram:
        The model's hash buckets, embedding width and longest word n-gram.
    epochs, lr, batch_size:
        The default round config (:meth:`train_config`): passes, SGD learning rate, batch size.
    data:
        The participant's shard (JSON Lines, see :mod:`fedchain.tasks.icd.data`), read by
        :meth:`load_data`; ``None`` for a coordinator or the demo.
    labels:
        A UTF-8 file of class names, one a line; the 22 ICD-10-CM chapter titles by default.
    dp_noise_multiplier, dp_max_grad_norm, dp_delta:
        DP-SGD with Opacus when ``dp_noise_multiplier > 0`` (off by default); see
        :func:`fedchain.tasks._torch.make_private`.
    demo_every:
        :meth:`demo` keeps every ``demo_every``-th ICD-10-CM record before the split (default 1:
        all of them); tests and quick trials use 60 for a federation of seconds.
    """

    name = "icd"
    version = "1"
    #: The file suffix of :meth:`export_data`'s shards (JSON Lines).
    data_suffix = ".jsonl"
    demo_participants = 3

    def __init__(
        self,
        *,
        num_buckets: int = 1 << 14,
        dim: int = 16,
        ngram: int = 2,
        epochs: int = 1,
        lr: float = 8.0,
        batch_size: int = 32,
        data: str | None = None,
        labels: str | None = None,
        dp_noise_multiplier: float = 0.0,
        dp_max_grad_norm: float = 1.0,
        dp_delta: float = 1e-5,
        demo_every: int = 1,
    ) -> None:
        key = "task.settings."
        self.demo_every = positive_int(key + "demo_every", demo_every)
        self._labels_path = optional_path(key + "labels", labels)
        self._label_names = _read_labels(self._labels_path) if self._labels_path is not None else None
        num_classes = len(self._label_names) if self._label_names is not None else ICD10_NUM_CHAPTERS
        self.spec = ModelSpec(
            num_buckets=positive_int(key + "num_buckets", num_buckets),
            dim=positive_int(key + "dim", dim),
            num_classes=num_classes,
            ngram=positive_int(key + "ngram", ngram),
        )
        self.data_source = optional_path(key + "data", data)
        self._defaults: dict[str, Any] = {
            "epochs": positive_int(key + "epochs", epochs),
            "lr": positive_float(key + "lr", lr),
            "batch_size": positive_int(key + "batch_size", batch_size),
            "dp_noise_multiplier": non_negative_float(key + "dp_noise_multiplier", dp_noise_multiplier),
            "dp_max_grad_norm": positive_float(key + "dp_max_grad_norm", dp_max_grad_norm),
            "dp_delta": fraction(key + "dp_delta", dp_delta),
        }

    @property
    def label_names(self) -> tuple[str, ...]:
        """The class names, indexed by label (the ICD-10-CM chapter titles by default)."""
        return self._label_names if self._label_names is not None else icd10_label_names()

    def schema(self) -> Schema:
        return Schema.from_shapes(param_shapes(self.spec))

    def describe(self) -> str:
        return self.spec.to_json()

    def train_config(self) -> Config:
        return dict(self._defaults)

    def init(self, seed: int) -> Arrays:
        """The genesis model: :func:`init_params` seeded with ``derive_seed(seed, "genesis")``."""
        return _arrays(init_params(self.spec, derive_seed(seed, "genesis")))

    def load_data(self, source: str) -> Dataset:
        """The participant's records from a JSON Lines shard (:func:`~fedchain.tasks.icd.data.load_shard`)."""
        return load_shard(source, self.label_names)

    def export_data(self, data: Any, path: str) -> None:
        """Write ``data`` (a :class:`Dataset`) as a JSON Lines shard that :meth:`load_data` reads back."""
        export_shard(data, path)

    def _round(self, config: Config) -> tuple[TrainConfig, DpSettings]:
        merged = round_config(self._defaults, config)
        train = TrainConfig(
            epochs=positive_int("config.epochs", merged["epochs"]),
            lr=positive_float("config.lr", merged["lr"]),
            batch_size=positive_int("config.batch_size", merged["batch_size"]),
        )
        dp = DpSettings(
            noise_multiplier=non_negative_float("config.dp_noise_multiplier", merged["dp_noise_multiplier"]),
            max_grad_norm=positive_float("config.dp_max_grad_norm", merged["dp_max_grad_norm"]),
            delta=fraction("config.dp_delta", merged["dp_delta"]),
        )
        return train, dp

    def train(self, arrays: Arrays, data: Any, config: Config, *, seed: int) -> TrainResult:
        """Train from ``arrays`` on ``data`` (a :class:`Dataset`); metrics ``loss``, ``accuracy`` (+ ``dp_*``)."""
        check_arrays(self.schema(), arrays)
        train, dp = self._round(config)
        trained, metrics = train_params(_tensors(arrays), data, train, spec=self.spec, seed=seed, dp=dp)
        return TrainResult(
            arrays=_arrays(trained),
            num_samples=len(data),
            metrics={"loss": metrics.loss, "accuracy": metrics.accuracy, **metrics.dp},
        )

    def evaluate(self, arrays: Arrays, data: Any) -> Mapping[str, float]:
        """``accuracy`` and mean cross-entropy ``loss`` of ``arrays`` on ``data``."""
        check_arrays(self.schema(), arrays)
        if len(data) == 0:
            raise DataError(f"{data.name}: nothing to evaluate on")
        with torch_threads(COMPUTE_THREADS):
            predictions, loss = predict_scores(_tensors(arrays), data, spec=self.spec)
        accuracy = float(np.mean(predictions == np.asarray(data.labels, dtype=np.int64)))
        return {"accuracy": accuracy, "loss": loss}

    def demo(self, num_participants: int = 3, seed: int = 0) -> DemoData:
        """The three hospitals (st-mary, northgate, riverside) of :func:`~fedchain.tasks.icd.data.demo_split`."""
        if num_participants != 3:
            raise ConfigError("demo.participants", f"the icd demo has exactly 3 hospitals, not {num_participants}")
        if self._label_names is not None:
            raise ConfigError("task.settings.labels", "the icd demo uses the ICD-10-CM chapters; leave labels unset")
        full = load_icd10()
        if self.demo_every > 1:
            keep = range(0, len(full), self.demo_every)
            full = Dataset(
                name=full.name,
                texts=tuple(full.texts[i] for i in keep),
                labels=tuple(full.labels[i] for i in keep),
                label_names=full.label_names,
            )
        split = split_non_iid(full, list(HOSPITALS.values()), names=list(HOSPITALS), seed=seed)
        return DemoData(participants=[DemoParticipant(s.name, s) for s in split.shards], test=split.test)

    def pool(self, parts: Sequence[Dataset]) -> Dataset:
        """The participants' datasets concatenated in order (for centralized training)."""
        return Dataset(
            name="pooled",
            texts=tuple(t for p in parts for t in p.texts),
            labels=tuple(y for p in parts for y in p.labels),
            label_names=self.label_names,
        )


__all__ = ["IcdTask"]
