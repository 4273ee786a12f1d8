"""A synthetic task: a numpy-only model of P parameters that "trains" for a set time.

Its ``train`` adds a seeded small delta to every tensor and then waits until ``train_seconds``
have passed since it started (sleeping, so a shared machine is not loaded by the wait), so
the benchmarks can measure the ledger's overhead at any model size and training time. It is
a real :class:`~fedchain.tasks.api.Task`: the federation it runs in is the demo's protocol.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from fedchain.fl.schema import Arrays, Schema
from fedchain.tasks.api import Config, DemoData, DemoParticipant, Task, TrainResult


class SyntheticTask(Task):
    """``parameters`` float32 parameters in two tensors (``w``: three quarters, ``b``: the rest).

    Parameters
    ----------
    parameters:
        The model size P.
    train_seconds:
        How long each local training takes (wall clock), at least the time the delta takes.
    samples:
        Each participant's record count (its FedAvg weight), by position in the demo.
    """

    name = "bench-synthetic"
    version = "1"

    def __init__(self, parameters: int, *, train_seconds: float = 0.0) -> None:
        if parameters < 2:
            raise ValueError(f"parameters must be at least 2, got {parameters}")
        self.parameters = parameters
        self.train_seconds = train_seconds
        split = parameters * 3 // 4
        self._shapes = {"b": (parameters - split,), "w": (split,)}

    def schema(self) -> Schema:
        return Schema.from_shapes(self._shapes)

    def describe(self) -> str:
        return f"bench-synthetic:p={self.parameters}"

    def train_config(self) -> Config:
        return {"epochs": 1}

    def init(self, seed: int) -> Arrays:
        rng = np.random.default_rng(seed)
        return {
            k: (rng.standard_normal(s, dtype=np.float32) * np.float32(0.1)) for k, s in sorted(self._shapes.items())
        }

    def load_data(self, source: str) -> Any:
        return int(source)

    def train(self, arrays: Arrays, data: Any, config: Config, *, seed: int) -> TrainResult:
        started = time.perf_counter()
        rng = np.random.default_rng(seed)
        out = {}
        for k in sorted(arrays):
            delta = rng.standard_normal(arrays[k].shape, dtype=np.float32)
            delta *= np.float32(1e-3)
            delta += arrays[k]
            out[k] = delta
        left = self.train_seconds - (time.perf_counter() - started)
        if left > 0:
            time.sleep(left)
        return TrainResult(out, int(data.samples), {"loss": 0.0})

    def evaluate(self, arrays: Arrays, data: Any) -> Mapping[str, float]:
        return {}

    def num_samples(self, data: Any) -> int:
        return int(data.samples)

    def demo(self, num_participants: int, seed: int) -> DemoData:
        members = [DemoParticipant(f"p{i:03d}", SyntheticData(100 + 7 * i)) for i in range(num_participants)]
        return DemoData(participants=members, test=None)


class SyntheticData:
    """A participant's "data": only its record count (an object of its own, so its id names the participant)."""

    def __init__(self, samples: int) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return self.samples


class TimedTask(Task):
    """Any task, passed every call, with the seconds of each participant's last :meth:`train` kept by data id.

    The participant receives its task, so this is how the benchmarks see training's share of a
    participant's step.
    """

    def __init__(self, inner: Task) -> None:
        self.inner = inner
        self.name = inner.name
        self.version = inner.version
        self.trained: dict[int, float] = {}

    def schema(self) -> Schema:
        return self.inner.schema()

    def frozen(self) -> Mapping[str, str]:
        return self.inner.frozen()

    def describe(self) -> str:
        return self.inner.describe()

    def train_config(self) -> Config:
        return self.inner.train_config()

    def init(self, seed: int) -> Arrays:
        return self.inner.init(seed)

    def load_data(self, source: str) -> Any:
        return self.inner.load_data(source)

    def train(self, arrays: Arrays, data: Any, config: Config, *, seed: int) -> TrainResult:
        started = time.perf_counter()
        try:
            return self.inner.train(arrays, data, config, seed=seed)
        finally:
            self.trained[id(data)] = time.perf_counter() - started

    def evaluate(self, arrays: Arrays, data: Any) -> Mapping[str, float]:
        return self.inner.evaluate(arrays, data)

    def num_samples(self, data: Any) -> int:
        return self.inner.num_samples(data)

    def demo(self, num_participants: int, seed: int) -> DemoData:
        return self.inner.demo(num_participants, seed)


__all__ = ["SyntheticData", "SyntheticTask", "TimedTask"]
