"""Where a Flower node finds its federation: the one place fedchain's Flower integration reads settings.

Each setting is read, in this order, from the node config (``flower-supernode --node-config``),
the run config (``[tool.flwr.app.config]`` or ``flwr run --run-config``), then the environment:

| setting | node/run config key | environment |
| --- | --- | --- |
| chain: a JSON-RPC URL, or ``embedded`` (the chain registered with :func:`~fedchain.flower.in_process`) | ``fedchain-rpc`` | ``FEDCHAIN_RPC`` |
| store: a directory or a kubo API address | ``fedchain-store`` | ``FEDCHAIN_STORE`` |
| the ledger a node accepts (optional: by default the one the server names) | ``fedchain-ledger`` | ``FEDCHAIN_LEDGER`` |
| the server's working directory, where ``federation.json`` is written for ``fedchain audit --workdir`` | ``fedchain-workdir`` | ``FEDCHAIN_WORKDIR`` |
| demo keys (simulation only): ``demo_signer(seed, "node-<partition-id>")`` and ``"coordinator"`` | ``fedchain-demo-seed`` | ``FEDCHAIN_DEMO_SEED`` |

The key itself (a SuperNode's own, or the coordinator's on the SuperLink) is read from
``FEDCHAIN_PRIVATE_KEY`` only, never from a config that travels with the run.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fedchain.chain import Signer
from fedchain.config import KEY_ENV
from fedchain.errors import ConfigError
from fedchain.orchestrator.federation import demo_signer

_KEYS = {
    "rpc": ("fedchain-rpc", "FEDCHAIN_RPC"),
    "store": ("fedchain-store", "FEDCHAIN_STORE"),
    "ledger": ("fedchain-ledger", "FEDCHAIN_LEDGER"),
    "workdir": ("fedchain-workdir", "FEDCHAIN_WORKDIR"),
    "demo_seed": ("fedchain-demo-seed", "FEDCHAIN_DEMO_SEED"),
}
#: Flower's node-config key of a simulated node's partition.
PARTITION_KEY = "partition-id"


@dataclass(frozen=True)
class FlowerSettings:
    """A node's (or the server's) fedchain settings, as :func:`settings_from_context` found them."""

    rpc: str | None = None
    store: str | None = None
    ledger: str | None = None
    workdir: str | None = None
    demo_seed: int | None = None
    partition_id: int | None = None
    key: str | None = field(default=None, repr=False)

    def signer(self, role: str) -> Signer:
        """The acting key: ``FEDCHAIN_PRIVATE_KEY``, else a demo key for ``role`` (``coordinator`` or ``node``).

        Raises
        ------
        ConfigError
            If there is no key and no demo seed (or a node's demo key has no partition id).
        """
        if self.key:
            return Signer.from_key(self.key.strip(), role)
        if self.demo_seed is None:
            raise ConfigError("key", f"set ${KEY_ENV} (or fedchain-demo-seed in a simulation) for the {role}")
        if role == "coordinator":
            return demo_signer(self.demo_seed, "coordinator")
        if self.partition_id is None:
            raise ConfigError("key", f"a demo key needs the node config's {PARTITION_KEY!r}; set ${KEY_ENV}")
        return demo_signer(self.demo_seed, f"node-{self.partition_id}")

    def require(self, name: str) -> str:
        """A string setting that must be present (``rpc``, ``store``)."""
        value = getattr(self, name)
        if not value:
            config_key, env = _KEYS[name]
            raise ConfigError(config_key, f"not set: give the node/run config {config_key!r} or ${env}")
        return str(value)


def settings_from_context(
    node_config: Mapping[str, Any] | None = None,
    run_config: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> FlowerSettings:
    """Read the settings (see the module docstring) from a Flower context's configs and the environment."""
    env = os.environ if environ is None else environ
    layers = (node_config or {}, run_config or {})

    def look(name: str) -> str | None:
        config_key, env_key = _KEYS[name]
        for layer in layers:
            if config_key in layer and str(layer[config_key]) != "":
                return str(layer[config_key])
        return env.get(env_key) or None

    seed_text = look("demo_seed")
    try:
        seed = None if seed_text is None else int(seed_text)
    except ValueError:
        raise ConfigError("fedchain-demo-seed", f"must be an integer, got {seed_text!r}") from None
    partition = (node_config or {}).get(PARTITION_KEY)
    return FlowerSettings(
        rpc=look("rpc"),
        store=look("store"),
        ledger=look("ledger"),
        workdir=look("workdir"),
        demo_seed=seed,
        partition_id=None if partition is None else int(partition),
        key=env.get(KEY_ENV) or None,
    )


__all__ = ["PARTITION_KEY", "FlowerSettings", "settings_from_context"]
