"""``fedchain coordinator --config FILE``: the coordinator as a long-running process.

Also the pieces ``fedchain participant`` shares with it: event logging, SIGTERM, and opening the
node's chain connection and store with retries.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from fedchain.cli._common import EXIT_OK

if TYPE_CHECKING:
    from collections.abc import Callable

    from fedchain.chain import Chain, Ledger, Pacing, ResilientRpcChain, Signer
    from fedchain.config import NodeConfig
    from fedchain.storage import BlobStore

#: Stopped by SIGTERM (``docker stop``): 128 + 15, as a shell reports it.
EXIT_TERMINATED = 143

TASK_SEARCH = (
    "A [task] app package.module:attribute that is not importable otherwise is looked for in the current directory, "
    "then in the config file's directory."
)

SERVICE_EXIT_CODES = (
    "Exit status: 0 the configured rounds have ended (and, for a participant, all of them verified); 1 a "
    "verification failed, the code at the ledger address is not a fedchain ledger, or the ledger refused this "
    "node; 2 the config, key, data or task is wrong, or differs from the federation manifest on the ledger "
    "(the message names the field); 3 the chain node or store stayed unreachable for longer than "
    "chain.outage_seconds; 143 stopped by SIGTERM. Restarting after any of them is safe: the process carries "
    "on from the chain's state."
)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "coordinator",
        help="run the coordinator: register participants, open, close, aggregate and finalize rounds",
        description=(
            "Runs until the configured rounds have ended: registers the [[participants]] of the config, opens "
            "each round, closes it once the quorum of valid updates is recorded (or the deadline passed), "
            "aggregates and finalizes it (or abandons a round that cannot be finalized). With [ledger] "
            "address_file and no such file it first deploys a ledger, whose manifest holds the [federation] "
            "rules and the [task]'s schema, and writes its address there; killed during deployment and "
            "restarted, it finds its own ledger instead of deploying a second one. Everything is read back from "
            "the chain at every step, so it can be killed and restarted at any point. Key: [key] keystore, "
            "password in $FEDCHAIN_KEY_PASSWORD or a prompt. " + TASK_SEARCH + " " + SERVICE_EXIT_CODES
        ),
    )
    p.add_argument(
        "--config", type=Path, required=True, help="the node's TOML config (see README, 'Multi-process deployment')"
    )
    p.set_defaults(handler=_run, service=True)


# --------------------------------------------------------------------------- shared with `participant`


class _JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"time": self.formatTime(record), "level": record.levelname, "logger": record.name}
        event = getattr(record, "event", None)
        if event is not None:
            out["event"] = event
            for k, v in getattr(record, "fields", {}).items():
                out[k] = (
                    "0x" + v.hex()
                    if isinstance(v, bytes)
                    else v
                    if isinstance(v, (int, float, bool, type(None)))
                    else str(v)
                )
        else:
            out["message"] = record.getMessage()
        return json.dumps(out, sort_keys=False)


def setup_service_logging(json_lines: bool) -> None:
    """Make the service's events visible (INFO) and, if asked, format every line as JSON."""
    events = logging.getLogger("fedchain.orchestrator")
    if events.getEffectiveLevel() > logging.INFO:
        events.setLevel(logging.INFO)
    if json_lines:
        for handler in logging.getLogger().handlers:
            handler.setFormatter(_JsonLines())


def exit_on_sigterm() -> None:
    """Turn SIGTERM into a clean exit with :data:`EXIT_TERMINATED`."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(EXIT_TERMINATED)

    signal.signal(signal.SIGTERM, handler)


def task_search(config: NodeConfig) -> tuple[Path, ...]:
    """Where a ``[task] app`` module that is not importable otherwise is looked for: the current directory, the config's."""
    return (Path.cwd(), config.path.resolve().parent)


def pacing_of(config: NodeConfig) -> Pacing:
    from fedchain.chain import Pacing

    return Pacing(poll_seconds=config.federation.poll_seconds, outage_seconds=config.chain.outage_seconds)


def open_node(config: NodeConfig, address: str, pacing: Pacing) -> tuple[ResilientRpcChain, BlobStore]:
    """Connect to the chain and the store (waiting for them, saying for how long), funding ``address`` on a dev node."""
    from fedchain.chain import ResilientRpcChain
    from fedchain.orchestrator._events import log_event
    from fedchain.orchestrator._loop import retrying
    from fedchain.storage import open_store

    c = config.chain
    log_event("connecting", rpc=c.rpc, store=config.store, gives_up_after_seconds=pacing.outage_seconds)
    chain: ResilientRpcChain = retrying(
        lambda: ResilientRpcChain(
            c.rpc, retries=c.retries, backoff=c.backoff, timeout=c.timeout, pacing=pacing, dev=c.dev
        ),
        pacing,
        endpoint=c.rpc,
        what="the chain node",
    )
    store: BlobStore = retrying(lambda: open_store(config.store), pacing, endpoint=config.store, what="the store")
    if c.dev:
        retrying(lambda: chain.fund(address), pacing, endpoint=c.rpc, what="funding")
    return chain, store


def wait_for_ledger(config: NodeConfig, chain: ResilientRpcChain, pacing: Pacing) -> Ledger | None:
    """The configured ledger, by address or from ``address_file`` (``None`` if the file does not exist yet)."""
    from fedchain.chain import Ledger
    from fedchain.config import check_address
    from fedchain.errors import ConfigError
    from fedchain.orchestrator._loop import retrying

    address = config.ledger.address
    if address is None:
        path = config.ledger.address_file
        assert path is not None
        try:
            address = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        except OSError as err:
            raise ConfigError("ledger.address_file", f"cannot read {path}: {err.strerror or err}") from err
        if not address:
            return None
        check_address(address, "ledger.address_file")
    return retrying(lambda: Ledger(chain, address), pacing, endpoint=chain.endpoint, what="the ledger contract")


def write_address_file(path: Path, address: str) -> None:
    """Write the ledger address atomically (a reader never sees half of it)."""
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(address + "\n", encoding="utf-8")
    os.replace(tmp, path)


def rules_for(config: NodeConfig, ledger: Ledger, store: BlobStore, pacing: Pacing) -> Any:
    """The ledger's rules, after refusing a local configuration that differs from its manifest."""
    from fedchain.orchestrator._loop import retrying
    from fedchain.protocol import check_against, load_rules

    rules = retrying(lambda: load_rules(ledger, store), pacing, endpoint=ledger.chain.endpoint, what="the manifest")
    check_against(rules.manifest, config.federation.rules, source=f"{config.path} [federation]")
    return rules


# --------------------------------------------------------------------------- the coordinator


def _run(args: argparse.Namespace) -> int:
    from fedchain.config import load_node_config

    config = load_node_config(args.config, role="coordinator")
    setup_service_logging(config.log_json)
    exit_on_sigterm()
    return _serve(config)


def manifest_of(config: NodeConfig) -> Any:
    """The manifest a coordinator deploys: the [task]'s schema and the [federation] rules (defaults for the rest).

    ``[federation.privacy]`` becomes the manifest's ``privacy`` table; with ``mode = "masked"`` the
    fields it leaves out are those of ``fedchain demo --private``
    (:func:`fedchain.protocol.privacy.default_masked`), and the default quorum is at most
    ``min_survivors``.
    """
    from fedchain.orchestrator.federation import make_manifest
    from fedchain.protocol import DEFAULT_MAX_BLOB_SIZE, DEFAULT_MAX_UPDATE_NORM, DEFAULT_ROUND_SECONDS
    from fedchain.protocol.privacy import default_masked
    from fedchain.tasks import load_task

    task = load_task(config.task.app, config.task.settings, search=task_search(config))
    r = config.federation.rules
    aggregation = {"rule": r.get("aggregation.rule", "fedavg"), "server_lr": float(r.get("aggregation.server_lr", 1.0))}
    train = dict(task.train_config())
    train.update({k.removeprefix("train."): v for k, v in r.items() if k.startswith("train.")})
    privacy = config.federation.privacy
    quorum = max(1, len(config.participants))
    if privacy is not None and privacy["mode"] == "masked":
        # what the file leaves out is `fedchain demo --private`'s; the quorum is at most the minimum of survivors
        privacy = {**default_masked(len(config.participants)), **privacy}
        quorum = min(quorum, int(privacy["min_survivors"]))
    manifest = make_manifest(
        task,
        seed=int(r.get("seed", 0)),
        min_updates=int(r.get("rounds.min_updates", quorum)),
        round_seconds=int(r.get("rounds.round_seconds", DEFAULT_ROUND_SECONDS)),
        aggregation=aggregation,
        max_update_norm=float(r.get("max_update_norm", DEFAULT_MAX_UPDATE_NORM)),
        max_blob_size=int(r.get("max_blob_size", DEFAULT_MAX_BLOB_SIZE)),
        privacy=privacy,
        train=train,
    )
    return task, manifest


class _AnnouncingChain:
    """The node's chain, logging ``deploy_sent`` once a transaction has reached the node (before its receipt)."""

    def __init__(self, chain: Any) -> None:
        self._chain = chain

    def __getattr__(self, name: str) -> Any:
        return getattr(self._chain, name)

    def send_raw_transaction(self, raw: bytes) -> Any:
        from fedchain.orchestrator._events import log_event

        tx_hash = self._chain.send_raw_transaction(raw)
        log_event("deploy_sent", tx=bytes(tx_hash))
        return tx_hash


def deploy_ledger(
    config: NodeConfig,
    chain: Chain,
    signer: Signer,
    store: BlobStore,
    pacing: Pacing,
    *,
    publish: Callable[[Path, str], None] = write_address_file,
) -> Ledger:
    """Deploy the ledger of ``config`` (or find the one an earlier, interrupted run deployed) and publish its address.

    The steps: put the manifest and the genesis model in the store, send the deploy transaction,
    wait for its receipt, write ``ledger.address_file`` (with ``publish``). Each may be interrupted
    (the process killed): run again, :func:`fedchain.orchestrator.federation.deploy` finds the
    ledger this key already deployed with this manifest and genesis, so there is only ever one.
    """
    from fedchain.chain import Ledger
    from fedchain.orchestrator._loop import retrying
    from fedchain.orchestrator.federation import deploy, genesis_params

    path = config.ledger.address_file
    assert path is not None
    task, manifest = manifest_of(config)
    genesis = genesis_params(task, manifest.seed)
    announcing: Any = _AnnouncingChain(chain)
    deployment = retrying(
        lambda: deploy(announcing, signer, store, manifest, genesis),
        pacing,
        endpoint=chain.endpoint,
        what="deployment",
    )
    publish(path, deployment.ledger.address)
    return Ledger(chain, deployment.ledger.address)


def _serve(config: NodeConfig) -> int:
    from fedchain.config import load_signer
    from fedchain.errors import ConfigError
    from fedchain.orchestrator._events import log_event
    from fedchain.orchestrator._loop import run_loop
    from fedchain.orchestrator.coordinator import Coordinator, CoordinatorService, Registration
    from fedchain.types import Address

    pacing = pacing_of(config)
    signer = load_signer(config.keystore, name="coordinator", prompt=sys.stdin.isatty())
    log_event(
        "starting",
        role="coordinator",
        address=signer.address,
        rpc=config.chain.rpc,
        store=config.store,
        rounds=config.federation.rounds,
    )
    chain, store = open_node(config, signer.address, pacing)
    try:
        ledger = wait_for_ledger(config, chain, pacing)
        if ledger is None:
            ledger = deploy_ledger(config, chain, signer, store, pacing)
        rules = rules_for(config, ledger, store, pacing)
        if rules.coordinator != signer.address:
            raise ConfigError(
                "key.keystore",
                f"{signer.address} is not the coordinator of ledger {ledger.address} (its coordinator is {rules.coordinator})",
            )
        log_event("ledger", ledger=ledger.address, chain_id=chain.chain_id, manifest=rules.digest)
        service = CoordinatorService(
            Coordinator(ledger, signer, store, rules),
            [
                Registration(Address(chain.w3.to_checksum_address(p.address)), p.max_samples, p.name)
                for p in config.participants
            ],
            rounds=config.federation.rounds,
        )
        run_loop(service.step, pacing, endpoint=chain.endpoint)
    finally:
        chain.close()
    return EXIT_OK
