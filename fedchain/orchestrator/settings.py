"""The federation's settings as JSON, and the defaults the demo runs on."""

from __future__ import annotations

from typing import Any

from fedchain.errors import ConfigError
from fedchain.fl import FedAvg, ModelSpec, Strategy, TrainConfig
from fedchain.orchestrator.actors import FederationSettings


def default_settings(*, seed: int = 0) -> FederationSettings:
    """The demo's settings: the default model, one local epoch, a quorum of all three hospitals."""
    return FederationSettings(spec=ModelSpec(), train=TrainConfig(), seed=seed, round_seconds=600, min_updates=3)


def strategy_from_settings(settings: FederationSettings) -> Strategy:
    """The aggregation strategy the settings name (FedAvg with the server learning rate)."""
    return FedAvg(server_lr=settings.server_lr)


def settings_to_json(settings: FederationSettings) -> dict[str, Any]:
    """A JSON-ready dict of ``settings``."""
    return {
        "spec": {
            "num_buckets": settings.spec.num_buckets,
            "dim": settings.spec.dim,
            "num_classes": settings.spec.num_classes,
            "ngram": settings.spec.ngram,
        },
        "train": {"epochs": settings.train.epochs, "lr": settings.train.lr, "batch_size": settings.train.batch_size},
        "seed": settings.seed,
        "round_seconds": settings.round_seconds,
        "min_updates": settings.min_updates,
        "max_blob_size": settings.max_blob_size,
        "max_update_norm": settings.max_update_norm,
        "server_lr": settings.server_lr,
        "strategy": "fedavg",
    }


def settings_from_json(data: dict[str, Any]) -> FederationSettings:
    """Parse :func:`settings_to_json` output, naming the key of any problem."""
    try:
        if data.get("strategy", "fedavg") != "fedavg":
            raise ConfigError("settings.strategy", f"unknown strategy {data.get('strategy')!r} (known: fedavg)")
        return FederationSettings(
            spec=ModelSpec(**data["spec"]),
            train=TrainConfig(**data["train"]),
            seed=int(data["seed"]),
            round_seconds=int(data["round_seconds"]),
            min_updates=int(data["min_updates"]),
            max_blob_size=int(data["max_blob_size"]),
            max_update_norm=None if data.get("max_update_norm") is None else float(data["max_update_norm"]),
            server_lr=float(data.get("server_lr", 1.0)),
        )
    except KeyError as err:
        raise ConfigError(f"settings.{err.args[0]}", "missing") from err
    except (TypeError, ValueError) as err:
        raise ConfigError("settings", str(err)) from err


__all__ = ["default_settings", "settings_from_json", "settings_to_json", "strategy_from_settings"]
