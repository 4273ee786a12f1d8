"""The ``digits`` task: a two-convolution CNN on 8x8 digits, trained with seeded SGD (or DP-SGD)."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

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
from fedchain.tasks._torch import (
    DpSettings,
    check_arrays,
    load_arrays,
    make_private,
    module_arrays,
    quiet_opacus,
    torch_threads,
)
from fedchain.tasks.api import Config, DemoData, DemoParticipant, Task, TrainResult
from fedchain.tasks.digits.data import (
    NUM_CLASSES,
    DigitsData,
    dirichlet_split,
    export_shard,
    load_digits_data,
    load_shard,
)

logger = logging.getLogger(__name__)

#: The fewest and most participants of the demo.
MIN_PARTICIPANTS, MAX_PARTICIPANTS = 3, 10


class DigitsCNN(nn.Module):
    """conv 3x3 (1 -> 8), ReLU, conv 3x3 (8 -> 16), ReLU, 2x2 max-pool, linear (256 -> 10). No buffers."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc = nn.Linear(16 * 4 * 4, NUM_CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        """Logits for a batch of ``(n, 8, 8)`` images with pixels in ``[0, 16]``."""
        h = F.relu(self.conv1(x.unsqueeze(1) / 16.0))
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)
        out: Tensor = self.fc(h.flatten(1))
        return out


def _fan_in(shape: tuple[int, ...], name: str) -> int:
    # a bias has the fan-in of its layer's weight
    return (
        {"conv1": 9, "conv2": 8 * 9, "fc": 16 * 4 * 4}[name.split(".")[0]] if len(shape) == 1 else math.prod(shape[1:])
    )


class DigitsTask(Task):
    """scikit-learn's digits, a small CNN, and a Dirichlet non-IID split over 3 to 10 participants.

    The exchanged tensors are all six parameters of :class:`DigitsCNN` (``conv1``, ``conv2``,
    ``fc``, each ``.weight`` and ``.bias``); it has no BatchNorm, so no buffers, and nothing frozen.

    Parameters (``[task.settings]``)
    --------------------------------
    epochs, lr, batch_size:
        The default round config: passes over the local data, SGD learning rate, batch size.
    alpha:
        The demo split's Dirichlet concentration (smaller is more skewed).
    num_participants:
        The demo's participants when :meth:`demo` is not told (3 to 10).
    data:
        The participant's ``.npz`` shard (see :mod:`fedchain.tasks.digits.data`).
    dp_noise_multiplier, dp_max_grad_norm, dp_delta:
        DP-SGD with Opacus when ``dp_noise_multiplier > 0`` (off by default).
    """

    name = "digits"
    version = "1"
    #: The file suffix of :meth:`export_data`'s shards.
    data_suffix = ".npz"

    def __init__(
        self,
        *,
        epochs: int = 1,
        lr: float = 0.3,
        batch_size: int = 32,
        alpha: float = 0.5,
        num_participants: int = 3,
        data: str | None = None,
        dp_noise_multiplier: float = 0.0,
        dp_max_grad_norm: float = 1.0,
        dp_delta: float = 1e-5,
    ) -> None:
        key = "task.settings."
        self.alpha = positive_float(key + "alpha", alpha)
        self.num_participants = self._participants(key + "num_participants", num_participants)
        self.data_source = optional_path(key + "data", data)
        self._defaults: dict[str, Any] = {
            "epochs": positive_int(key + "epochs", epochs),
            "lr": positive_float(key + "lr", lr),
            "batch_size": positive_int(key + "batch_size", batch_size),
            "dp_noise_multiplier": non_negative_float(key + "dp_noise_multiplier", dp_noise_multiplier),
            "dp_max_grad_norm": positive_float(key + "dp_max_grad_norm", dp_max_grad_norm),
            "dp_delta": fraction(key + "dp_delta", dp_delta),
        }

    @staticmethod
    def _participants(key: str, value: object) -> int:
        n = positive_int(key, value)
        if not MIN_PARTICIPANTS <= n <= MAX_PARTICIPANTS:
            raise ConfigError(
                key, f"the digits demo has {MIN_PARTICIPANTS} to {MAX_PARTICIPANTS} participants, not {n}"
            )
        return n

    def schema(self) -> Schema:
        return Schema.from_shapes({name: tuple(p.shape) for name, p in DigitsCNN().named_parameters()})

    def describe(self) -> str:
        return "digits-cnn:conv1=8,conv2=16,fc=10"

    def train_config(self) -> Config:
        return dict(self._defaults)

    def init(self, seed: int) -> Arrays:
        """Uniform in ``±1/sqrt(fan_in)`` for every weight and bias, by name order, from ``derive_seed(seed, "genesis")``."""
        gen = torch.Generator().manual_seed(derive_seed(seed, "genesis"))
        out: Arrays = {}
        for spec in self.schema().tensors:
            bound = 1.0 / math.sqrt(_fan_in(spec.shape, spec.name))
            out[spec.name] = torch.empty(spec.shape).uniform_(-bound, bound, generator=gen).numpy()
        return out

    def load_data(self, source: str) -> DigitsData:
        """The participant's records from an ``.npz`` shard (:func:`~fedchain.tasks.digits.data.load_shard`)."""
        return load_shard(source)

    def export_data(self, data: Any, path: str) -> None:
        """Write ``data`` (a :class:`DigitsData`) as an ``.npz`` shard that :meth:`load_data` reads back."""
        export_shard(data, path)

    def _model(self, arrays: Arrays) -> DigitsCNN:
        check_arrays(self.schema(), arrays)
        model = DigitsCNN()
        load_arrays(model, arrays)
        return model

    def train(self, arrays: Arrays, data: Any, config: Config, *, seed: int) -> TrainResult:
        """Train from ``arrays`` on ``data`` (a :class:`DigitsData`); metrics ``loss``, ``accuracy`` (+ ``dp_*``)."""
        merged = round_config(self._defaults, config)
        epochs = positive_int("config.epochs", merged["epochs"])
        batch_size = positive_int("config.batch_size", merged["batch_size"])
        lr = positive_float("config.lr", merged["lr"])
        dp = DpSettings(
            noise_multiplier=non_negative_float("config.dp_noise_multiplier", merged["dp_noise_multiplier"]),
            max_grad_norm=positive_float("config.dp_max_grad_norm", merged["dp_max_grad_norm"]),
            delta=fraction("config.dp_delta", merged["dp_delta"]),
        )
        if len(data) == 0:
            raise DataError(f"{data.name}: no training records")
        model = self._model(arrays)
        x, y = torch.from_numpy(np.array(data.x)), torch.from_numpy(np.array(data.y))
        optimizer = torch.optim.SGD(model.parameters(), lr=lr)
        n = len(data)
        loss_sum, seen, correct = 0.0, 0, 0
        dp_metrics: dict[str, float] = {}
        with torch_threads(1):
            if dp.enabled:
                private = make_private(
                    model, optimizer, torch.utils.data.TensorDataset(x, y), batch_size, dp, seed=seed
                )
                private.module.train()
                with quiet_opacus():
                    for _ in range(epochs):
                        loss_sum, seen, correct = 0.0, 0, 0
                        for xb, yb in private.loader:
                            loss_sum, seen, correct = self._step(
                                private.module, private.optimizer, xb, yb, loss_sum, seen, correct
                            )
                dp_metrics = private.metrics(dp.delta)
                trained = module_arrays(private.module)
            else:
                gen = torch.Generator().manual_seed(seed)
                model.train()
                for _ in range(epochs):
                    loss_sum, seen, correct = 0.0, 0, 0
                    order = torch.randperm(n, generator=gen)
                    for lo in range(0, n, batch_size):
                        rows = order[lo : lo + batch_size]
                        loss_sum, seen, correct = self._step(
                            model, optimizer, x[rows], y[rows], loss_sum, seen, correct
                        )
                trained = module_arrays(model)
        metrics = {"loss": loss_sum / max(seen, 1), "accuracy": correct / max(seen, 1), **dp_metrics}
        return TrainResult(arrays=trained, num_samples=n, metrics=metrics)

    @staticmethod
    def _step(
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        xb: Tensor,
        yb: Tensor,
        loss_sum: float,
        seen: int,
        correct: int,
    ) -> tuple[float, int, int]:
        optimizer.zero_grad(set_to_none=True)
        logits = model(xb)
        # an empty Poisson batch (DP-SGD) still takes its noise-only step; its mean loss would be NaN
        loss = F.cross_entropy(logits, yb) if len(yb) else logits.sum()
        loss.backward()
        optimizer.step()
        return (
            loss_sum + float(loss.detach()) * len(yb),
            seen + len(yb),
            correct + int((logits.detach().argmax(dim=1) == yb).sum()),
        )

    def evaluate(self, arrays: Arrays, data: Any) -> Mapping[str, float]:
        """``accuracy`` and mean cross-entropy ``loss`` of ``arrays`` on ``data``."""
        if len(data) == 0:
            raise DataError(f"{data.name}: nothing to evaluate on")
        model = self._model(arrays)
        model.eval()
        with torch.no_grad(), torch_threads(1):
            logits = model(torch.from_numpy(np.array(data.x)))
            y = torch.from_numpy(np.array(data.y))
            loss = float(F.cross_entropy(logits, y))
            accuracy = float((logits.argmax(dim=1) == y).double().mean())
        return {"accuracy": accuracy, "loss": loss}

    def demo(self, num_participants: int | None = None, seed: int = 0) -> DemoData:
        """``participant-0`` .. ``participant-{K-1}``, a Dirichlet(alpha) split of 80% of the digits; 20% held out."""
        k = self._participants(
            "demo.participants", self.num_participants if num_participants is None else num_participants
        )
        shards, test = dirichlet_split(
            load_digits_data(), [f"participant-{i}" for i in range(k)], seed=seed, alpha=self.alpha
        )
        return DemoData(participants=[DemoParticipant(s.name, s) for s in shards], test=test)

    def pool(self, parts: Sequence[DigitsData]) -> DigitsData:
        """The participants' records concatenated in order (for centralized training)."""
        return DigitsData("pooled", np.concatenate([p.x for p in parts]), np.concatenate([p.y for p in parts]))


__all__ = ["MAX_PARTICIPANTS", "MIN_PARTICIPANTS", "DigitsCNN", "DigitsTask"]
