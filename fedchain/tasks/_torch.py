"""Torch helpers shared by the shipped tasks: arrays in and out of a module, threads, DP-SGD.

Imported only by task modules (never by :mod:`fedchain.tasks` itself).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from fedchain.errors import CodecError
from fedchain.fl.schema import Arrays, Schema

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)``, restoring the previous count after.

    The shipped models are small enough that one thread is usually fastest; ``None`` changes nothing.
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


def check_arrays(schema: Schema, arrays: Mapping[str, np.ndarray]) -> None:
    """Check that ``arrays`` holds exactly the tensors of ``schema``, float32, with their shapes.

    Raises
    ------
    CodecError
        ``missing-tensor``, ``unexpected-tensor``, ``dtype`` or ``shape``.
    """
    shapes = schema.shapes
    for name in shapes:
        if name not in arrays:
            raise CodecError("missing-tensor", f"tensor {name!r} is missing")
    for name, a in arrays.items():
        if name not in shapes:
            raise CodecError("unexpected-tensor", f"tensor {name!r} is not a parameter of the model")
        if not isinstance(a, np.ndarray) or a.dtype != np.float32:
            raise CodecError("dtype", f"tensor {name!r} must be a float32 numpy array")
        if tuple(a.shape) != shapes[name]:
            raise CodecError("shape", f"tensor {name!r} has shape {tuple(a.shape)}, expected {shapes[name]}")


def load_arrays(model: nn.Module, arrays: Mapping[str, np.ndarray]) -> None:
    """Copy ``arrays`` into ``model``'s parameters of the same names (the caller checked the schema)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.from_numpy(np.ascontiguousarray(arrays[name])))


def module_arrays(model: nn.Module) -> Arrays:
    """A float32 numpy copy of ``model``'s parameters, sorted by name (Opacus' ``_module.`` prefix removed)."""
    out: Arrays = {}
    for name, p in sorted(model.named_parameters()):
        out[name.removeprefix("_module.")] = np.ascontiguousarray(p.detach().to(torch.float32).cpu().numpy().copy())
    return dict(sorted(out.items()))


@contextlib.contextmanager
def quiet_opacus() -> Iterator[None]:
    """Silence the two warnings Opacus gives for deliberate choices here.

    Secure RNG is off (reproducible rounds need seeded noise), and the full backward hook
    fires on module outputs when no input requires a gradient (the inputs are data).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Secure RNG turned off", category=UserWarning)
        warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)
        warnings.filterwarnings("ignore", message="Optimal order is the", category=UserWarning)
        yield


@dataclass(frozen=True)
class DpSettings:
    """DP-SGD settings of a task (``dp_noise_multiplier > 0`` enables it).

    Attributes
    ----------
    noise_multiplier:
        Gaussian noise standard deviation over the clipping norm; 0 disables DP-SGD.
    max_grad_norm:
        Per-sample gradient clipping norm.
    delta:
        The delta at which epsilon is reported.
    """

    noise_multiplier: float = 0.0
    max_grad_norm: float = 1.0
    delta: float = 1e-5

    @property
    def enabled(self) -> bool:
        return self.noise_multiplier > 0


@dataclass
class PrivateTraining:
    """A module, optimizer and Poisson-sampling data loader made private by Opacus' :class:`PrivacyEngine`."""

    engine: Any
    module: nn.Module
    optimizer: torch.optim.Optimizer
    loader: Any

    def metrics(self, delta: float) -> dict[str, float]:
        """The five recorded DP keys, read from the RDP accountant's history (exactly what Opacus used)."""
        history = self.engine.accountant.history
        if not history:  # no step taken
            noise, rate, steps = float(self.optimizer.noise_multiplier), float(self.loader.sample_rate), 0  # type: ignore[attr-defined]
            epsilon = 0.0
        else:
            if len(history) != 1:
                raise RuntimeError(f"expected one (noise, rate, steps) entry in the accountant, got {history}")
            noise, rate, steps = history[0]
            with quiet_opacus():
                epsilon = float(self.engine.accountant.get_epsilon(delta=delta))
        return {
            "dp_noise_multiplier": float(noise),
            "dp_sample_rate": float(rate),
            "dp_steps": float(steps),
            "dp_delta": float(delta),
            "dp_epsilon": epsilon,
        }


def make_private(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    dataset: torch.utils.data.Dataset[Any],
    batch_size: int,
    dp: DpSettings,
    *,
    seed: int,
) -> PrivateTraining:
    """Wrap ``model`` and ``optimizer`` for DP-SGD over ``dataset``: Poisson sampling, flat clipping, RDP accounting.

    The sampling rate is Opacus' ``1 / len(loader)`` for a loader of ``batch_size``. The Poisson
    sampling and the noise draw from two ``torch.Generator`` seeded from ``seed``, so a round is
    reproducible (Opacus' ``secure_mode`` is off: the noise is pseudo-random).
    """
    from opacus import PrivacyEngine

    from fedchain.tasks._seeds import derive_seed

    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, generator=torch.Generator().manual_seed(derive_seed(seed, "dp-sampling"))
    )
    with quiet_opacus():
        engine = PrivacyEngine(accountant="rdp", secure_mode=False)
        module, dp_optimizer, dp_loader = engine.make_private(
            module=model,
            optimizer=optimizer,
            data_loader=loader,
            noise_multiplier=dp.noise_multiplier,
            max_grad_norm=dp.max_grad_norm,
            poisson_sampling=True,
            noise_generator=torch.Generator().manual_seed(derive_seed(seed, "dp-noise")),
        )
    return PrivateTraining(engine=engine, module=module, optimizer=dp_optimizer, loader=dp_loader)


__all__ = [
    "DpSettings",
    "PrivateTraining",
    "check_arrays",
    "load_arrays",
    "make_private",
    "module_arrays",
    "quiet_opacus",
    "torch_threads",
]
