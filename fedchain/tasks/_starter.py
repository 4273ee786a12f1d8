"""``fedchain new NAME``: write a starter task package, as ``flwr new`` writes a Flower app (no torch here)."""

from __future__ import annotations

import keyword
import logging
from pathlib import Path

from fedchain.errors import ConfigError

logger = logging.getLogger(__name__)

_TASK = '''"""The {name} task: a small MLP on scikit-learn's digits (ships offline). Replace it with your model."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedchain.fl.schema import Arrays, Schema
from fedchain.tasks import api, derive_seed


@dataclass(frozen=True)
class Data:
    """Flattened 8x8 images scaled to [0, 1] and their labels."""

    x: np.ndarray  # float32 (n, 64)
    y: np.ndarray  # int64 (n,)

    def __len__(self) -> int:
        return len(self.y)


def _digits() -> Data:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return Data(np.asarray(bunch.data, dtype=np.float32) / 16.0, np.asarray(bunch.target, dtype=np.int64))


class Net(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, hidden)
        self.fc2 = nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc2(F.relu(self.fc1(x)))
        return out


class Task(api.Task):
    """Every parameter is exchanged; the model has no buffers and nothing frozen."""

    name = "{name}"
    version = "1"
    #: Participants of ``fedchain demo`` and ``fedchain data export``, and the extension of an exported shard.
    demo_participants = 3
    data_suffix = ".npz"

    def __init__(self, *, hidden: int = 32, epochs: int = 1, lr: float = 0.1, batch_size: int = 32) -> None:
        if hidden < 1 or epochs < 1 or batch_size < 1 or not lr > 0:
            raise ValueError("hidden, epochs, batch_size and lr must be positive")
        self.hidden = hidden
        self.defaults = {{"epochs": epochs, "lr": lr, "batch_size": batch_size}}

    def schema(self) -> Schema:
        return Schema.from_shapes({{n: tuple(p.shape) for n, p in Net(self.hidden).named_parameters()}})

    def train_config(self) -> api.Config:
        return dict(self.defaults)

    def init(self, seed: int) -> Arrays:
        gen = torch.Generator().manual_seed(derive_seed(seed, "genesis"))
        out: Arrays = {{}}
        for spec in self.schema().tensors:
            bound = 1.0 / math.sqrt(64 if spec.name.startswith("fc1") else self.hidden)
            out[spec.name] = torch.empty(spec.shape).uniform_(-bound, bound, generator=gen).numpy()
        return out

    def _model(self, arrays: Arrays) -> Net:
        model = Net(self.hidden)
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(torch.from_numpy(arrays[n]))
        return model

    def load_data(self, source: str) -> Data:
        """A shard written by :meth:`export_data` (``fedchain data export``): an ``.npz`` of ``x`` and ``y``."""
        with np.load(source, allow_pickle=False) as npz:
            return Data(npz["x"].astype(np.float32), npz["y"].astype(np.int64))

    def export_data(self, data: Data, path: str) -> None:
        with open(path, "wb") as out:  # a file object: np.savez would append ".npz" to a path lacking it
            np.savez(out, x=data.x, y=data.y)

    def train(self, arrays: Arrays, data: Any, config: api.Config, *, seed: int) -> api.TrainResult:
        cfg = {{**self.defaults, **config}}
        model = self._model(arrays)
        optimizer = torch.optim.SGD(model.parameters(), lr=float(cfg["lr"]))
        gen = torch.Generator().manual_seed(seed)
        x, y = torch.from_numpy(data.x), torch.from_numpy(data.y)
        loss_sum = 0.0
        for _ in range(int(cfg["epochs"])):
            loss_sum = 0.0
            order = torch.randperm(len(data), generator=gen)
            for lo in range(0, len(data), int(cfg["batch_size"])):
                rows = order[lo : lo + int(cfg["batch_size"])]
                optimizer.zero_grad()
                loss = F.cross_entropy(model(x[rows]), y[rows])
                loss.backward()
                optimizer.step()
                loss_sum += float(loss.detach()) * len(rows)
        trained = {{n: p.detach().numpy().copy() for n, p in sorted(model.named_parameters())}}
        return api.TrainResult(arrays=trained, num_samples=len(data), metrics={{"loss": loss_sum / len(data)}})

    def evaluate(self, arrays: Arrays, data: Any) -> Mapping[str, float]:
        with torch.no_grad():
            logits = self._model(arrays)(torch.from_numpy(data.x))
            y = torch.from_numpy(data.y)
            return {{"accuracy": float((logits.argmax(1) == y).double().mean()), "loss": float(F.cross_entropy(logits, y))}}

    def demo(self, num_participants: int, seed: int) -> api.DemoData:
        """Every k-th record to participant k (IID); the last fifth held out for testing."""
        data = _digits()
        order = np.random.Generator(np.random.PCG64(derive_seed(seed, "split"))).permutation(len(data))
        test, train = order[: len(order) // 5], order[len(order) // 5 :]
        parts = [
            api.DemoParticipant(f"participant-{{k}}", Data(data.x[train[k::num_participants]], data.y[train[k::num_participants]]))
            for k in range(num_participants)
        ]
        return api.DemoData(participants=parts, test=Data(data.x[test], data.y[test]))
'''

_TEST = '''"""The {name} task trains one round and evaluates."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from {name}.task import Task


def test_one_round_of_training_changes_the_model_and_reports_its_samples() -> None:
    task = Task()
    demo = task.demo(3, seed=0)
    arrays = task.init(0)
    assert {{n: a.shape for n, a in arrays.items()}} == task.schema().shapes
    result = task.train(arrays, demo.participants[0].data, task.train_config(), seed=1)
    assert result.num_samples == len(demo.participants[0].data)
    assert any(not np.array_equal(result.arrays[n], arrays[n]) for n in arrays)
    assert task.evaluate(result.arrays, demo.test)["accuracy"] > task.evaluate(arrays, demo.test)["accuracy"]


def test_an_exported_shard_loads_back_as_the_same_data(tmp_path: Path) -> None:
    task = Task()
    shard = task.demo(3, seed=0).participants[1].data
    task.export_data(shard, str(tmp_path / "shard.npz"))
    loaded = task.load_data(str(tmp_path / "shard.npz"))
    assert np.array_equal(loaded.x, shard.x) and np.array_equal(loaded.y, shard.y)
'''

_TOML = """# A node's task section: which task to load, and its settings (keyword arguments of {name}.task.Task).
[task]
app = "{name}.task:Task"

[task.settings]
hidden = 32
epochs = 1
lr = 0.1
batch_size = 32

# Private (masked) rounds, in a node's full config (README, "Multi-process deployment" and
# "Private rounds"): no single update is readable in the store, the audit still recomputes every
# aggregate. Keys left out take `fedchain demo --private`'s values.
# [federation.privacy]
# mode = "masked"            # or "none": plain rounds (the default)
# frac_bits = 32             # fixed point: a word counts units of 2**-32
# clip = 100.0               # the L2 bound every update is clipped to
# min_survivors = 2          # fewer survivors and the round is abandoned
# max_samples = 1000000      # per participant; the overflow bound is checked before deploying
# max_participants = 16
# phase_seconds = 60         # how long survivors have to reveal, per reveal phase
# [federation.privacy.dp]    # optional: the differential-privacy budget
# epsilon_budget = 8.0
# delta = 1e-5
"""

_README = """# {name}

A fedchain task: a model, its local training and evaluation, and its data loading
(`{name}/task.py`, a subclass of `fedchain.tasks.api.Task`). The starter trains a small MLP on
scikit-learn's digits; replace the model, `load_data` and `demo` with your own.

- Test it: `python -m pytest {name}/tests` (from the directory holding `{name}/`).
- Name it in a node's TOML: see `fedchain.toml` (`[task] app = "{name}.task:Task"`); the
  directory holding `{name}/` must be on the Python path.
- Try it in a demo federation: `fedchain demo --task {name}.task:Task` (from the directory
  holding `{name}/`: the command line looks there for a task it cannot import otherwise).
- Run it as separate processes: `fedchain data export --task {name}.task:Task --out shards`
  writes each participant's shard (`.npz`), which a participant's `[participant] data` names.

The protocol sees only the tensors of `Task.schema()` (float32, by name); training returns the
trained arrays, the sample count and public metrics (they go into the update's header).
"""


def starter(directory: Path, name: str) -> list[Path]:
    """Write a starter task package ``directory/name/`` and return the files written, in order.

    The package holds ``__init__.py``, ``task.py`` (a small torch MLP on scikit-learn's digits,
    subclassing :class:`~fedchain.tasks.api.Task`), ``tests/test_task.py`` (one round of
    training), ``fedchain.toml`` (``[task] app = "NAME.task:Task"`` and ``[task.settings]``)
    and ``README.md``.

    Raises
    ------
    ConfigError
        ``name`` if it is not a lower-case Python identifier; ``directory`` if
        ``directory/name`` exists already (nothing is overwritten).
    """
    if not name.isidentifier() or keyword.iskeyword(name) or not name.isascii() or name != name.lower():
        raise ConfigError("name", f"{name!r} is not a lower-case Python identifier (it becomes the package name)")
    root = Path(directory) / name
    if root.exists():
        raise ConfigError("directory", f"{root} exists already; choose another name or directory")
    files = {
        root / "__init__.py": f'"""The {name} fedchain task."""\n',
        root / "task.py": _TASK.format(name=name),
        root / "tests" / "__init__.py": "",
        root / "tests" / "test_task.py": _TEST.format(name=name),
        root / "fedchain.toml": _TOML.format(name=name),
        root / "README.md": _README.format(name=name),
    }
    (root / "tests").mkdir(parents=True)
    for path, text in files.items():
        path.write_text(text, encoding="utf-8")
    logger.info("wrote the starter task %s in %s", name, root)
    return list(files)


__all__ = ["starter"]
