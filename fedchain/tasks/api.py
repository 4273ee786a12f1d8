"""The task API: the one model-specific piece of a federation.

A task is what a Flower user would write as a ClientApp's ``train``/``evaluate`` plus the
model's initialisation: given the round's arrays, a config and a seed, train on the local
data and return new arrays, the sample count and metrics. The protocol, the codec, the
aggregation and the audit know nothing else about the model: they move the named float32
tensors of :meth:`Task.schema`, which the federation manifest fixes at deployment.

This module imports no torch (tasks do, in their own modules), so the protocol can name the
types without importing a training framework.

A task is named in a node's TOML as ``[task] app = "package.module:attribute"`` with a
``[task.settings]`` table; ``attribute`` is a :class:`Task` subclass (or a factory) called
with the settings as keyword arguments. The shipped tasks are ``icd``, ``digits`` and ``lm``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fedchain.fl.schema import Arrays, Schema

#: JSON-like round config a coordinator's manifest hands every participant (epochs, lr, ...).
Config = Mapping[str, Any]


@dataclass(frozen=True)
class TrainResult:
    """What local training returns (Flower: the reply's arrays, ``num-examples`` and metrics).

    Attributes
    ----------
    arrays:
        The trained values of every exchanged tensor (the full schema, float32), not a delta:
        the participant computes the update ``arrays - base`` itself.
    num_samples:
        Training records used (FedAvg's ``n_k``), at least 1.
    metrics:
        Scalars such as ``loss`` and ``accuracy``; recorded in the update's header, so bound
        by its digest and shown by the audit. Finite floats, short ASCII names.
    """

    arrays: Arrays
    num_samples: int
    metrics: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class DemoParticipant:
    """One participant of a demo federation: a name (a hospital) and its private data."""

    name: str
    data: Any


@dataclass(frozen=True)
class DemoData:
    """A task's ready-made federation for ``fedchain demo``: participants and a held-out test set."""

    participants: Sequence[DemoParticipant]
    test: Any


class Task(ABC):
    """A model, its training loop and its data loading. Subclass it; see the module docstring.

    Class attributes
    ----------------
    name:
        Short name recorded in the manifest (informational).
    version:
        Version of the task's code (informational: the protocol never re-runs training).
    """

    name: str = "task"
    version: str = "1"

    @abstractmethod
    def schema(self) -> Schema:
        """The exchanged (trainable) tensors. Frozen tensors are not in it and never travel."""

    def frozen(self) -> Mapping[str, str]:
        """Frozen parts the exchanged tensors build on, as ``name -> "0x" + sha256 hex``.

        Recorded in the manifest (e.g. the pre-trained base of a LoRA task), so every party
        knows exactly what the adapters adapt. Default: none.
        """
        return {}

    def describe(self) -> str:
        """A short canonical description of the model (recorded in model blob headers).

        Printable ASCII from ``[A-Za-z0-9_.:=,+{}"\\[\\] -]``; default ``name:version``.
        """
        return f"{self.name}:{self.version}"

    def train_config(self) -> Config:
        """The default round config (epochs, lr, batch size, ...), recorded in the manifest."""
        return {}

    @abstractmethod
    def init(self, seed: int) -> Arrays:
        """The initial values of the exchanged tensors, from ``seed`` (the same on every machine)."""

    @abstractmethod
    def load_data(self, source: str) -> Any:
        """A participant's local data from ``source`` (a path, usually). The task's own business."""

    @abstractmethod
    def train(self, arrays: Arrays, data: Any, config: Config, *, seed: int) -> TrainResult:
        """Train from the round's ``arrays`` on ``data`` with ``config``, seeded by ``seed``."""

    @abstractmethod
    def evaluate(self, arrays: Arrays, data: Any) -> Mapping[str, float]:
        """Metrics of ``arrays`` on ``data`` (e.g. ``accuracy``, ``loss``, ``perplexity``)."""

    def export_data(self, data: Any, path: str) -> None:
        """Write ``data`` (a demo participant's) to ``path`` so that :meth:`load_data` reads it back.

        Used by ``fedchain data export`` to hand each node of a multi-process federation its shard.
        """
        raise NotImplementedError(f"task {self.name!r} cannot export its data")

    def num_samples(self, data: Any) -> int:
        """How many records ``data`` holds (the sample cap the coordinator registers)."""
        return len(data)

    @abstractmethod
    def demo(self, num_participants: int, seed: int) -> DemoData:
        """A federation of ``num_participants`` on data shipped with the task (for ``fedchain demo``)."""


__all__ = ["Config", "DemoData", "DemoParticipant", "Task", "TrainResult"]
