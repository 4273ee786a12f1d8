"""``fedchain coordinator --config FILE``: the coordinator as a long-running process.

Also the pieces ``fedchain participant`` shares with it: event logging, the exit codes of a
service, and opening the node's chain connection and store with retries.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from fedchain.cli._common import EXIT_ERROR, EXIT_FAILED, EXIT_OK

if TYPE_CHECKING:
    from fedchain.config import NodeConfig
    from fedchain.orchestrator.service import Pacing, ResilientRpcChain
    from fedchain.storage import BlobStore

#: The node or store stayed unreachable for longer than ``chain.outage_seconds``.
EXIT_UNREACHABLE = 3
#: Stopped by SIGTERM (``docker stop``): 128 + 15, as a shell reports it.
EXIT_TERMINATED = 143

SERVICE_EXIT_CODES = (
    "Exit status: 0 the configured rounds are finalized (and, for a participant, the last one "
    "verified); 1 a verification failed or the ledger refused this node; 2 the config, key or "
    "data is wrong; 3 the chain node or store stayed unreachable for longer than "
    "chain.outage_seconds; 143 stopped by SIGTERM. Restarting after any of them is safe: "
    "the process carries on from the chain's state."
)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "coordinator",
        help="run the coordinator: register participants, open, aggregate and finalize rounds",
        description=(
            "Runs until the configured rounds are finalized: registers the [[participants]] of the "
            "config, opens each round, waits for the quorum or the deadline, aggregates, finalizes "
            "and verifies. With [ledger] address_file and no such file it first deploys a ledger and "
            "writes its address there. Everything is read back from the chain at every step, so it "
            "can be killed and restarted at any point. Key: [key] keystore, password in "
            "$FEDCHAIN_KEY_PASSWORD or a prompt. " + SERVICE_EXIT_CODES
        ),
    )
    p.add_argument(
        "--config", type=Path, required=True, help="the node's TOML config (see README, 'Multi-process deployment')"
    )
    p.set_defaults(handler=_run, error_exit_code=EXIT_ERROR)


# --------------------------------------------------------------------------- shared with `participant`


class _JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"time": self.formatTime(record), "level": record.levelname, "logger": record.name}
        event = getattr(record, "event", None)
        if event is not None:
            out["event"] = event
            for k, v in getattr(record, "fields", {}).items():
                out[k] = (
                    v.hex() if isinstance(v, bytes) else v if isinstance(v, (int, float, bool, type(None))) else str(v)
                )
        else:
            out["message"] = record.getMessage()
        return json.dumps(out, sort_keys=False)


def setup_service_logging(json_lines: bool) -> None:
    """Make the service's events visible (INFO) and, if asked, format every line as JSON."""
    service = logging.getLogger("fedchain.orchestrator.service")
    if service.getEffectiveLevel() > logging.INFO:
        service.setLevel(logging.INFO)
    if json_lines:
        for handler in logging.getLogger().handlers:
            handler.setFormatter(_JsonLines())


def exit_on_sigterm() -> None:
    """Turn SIGTERM into a clean exit with :data:`EXIT_TERMINATED`."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(EXIT_TERMINATED)

    signal.signal(signal.SIGTERM, handler)


def open_node(config: NodeConfig, address: str, pacing: Pacing) -> tuple[ResilientRpcChain, BlobStore]:
    """Connect to the chain and the store (waiting for them), funding ``address`` on a dev node."""
    from fedchain.orchestrator.service import ResilientRpcChain, retrying
    from fedchain.storage import open_store

    c = config.chain
    chain: ResilientRpcChain = retrying(
        lambda: ResilientRpcChain(
            c.rpc, retries=c.retries, backoff=c.backoff, timeout=c.timeout, pacing=pacing, dev=c.dev
        ),
        pacing,
        endpoint=c.rpc,
        what="the chain node",
    )
    store: BlobStore = retrying(
        lambda: open_store(config.store, max_blob_size=config.federation.max_blob_size),
        pacing,
        endpoint=config.store,
        what="the store",
    )
    if c.dev:
        retrying(lambda: chain.fund(address), pacing, endpoint=c.rpc, what="funding")
    return chain, store


def run_service(body: Callable[[], int]) -> int:
    """Run a service body, mapping its errors to the exit codes of :data:`SERVICE_EXIT_CODES`."""
    from fedchain.errors import (
        ChainConnectionError,
        ConfigError,
        DataError,
        StoreUnavailableError,
        VerificationError,
    )
    from fedchain.orchestrator.service import log_event

    exit_on_sigterm()
    try:
        return body()
    except (ConfigError, DataError) as err:
        print(f"fedchain: error: {err}", file=sys.stderr)
        return EXIT_ERROR
    except VerificationError as err:
        log_event(
            "verification_failed",
            round=err.round_id,
            what=err.what,
            participant=err.participant or "-",
            detail=str(err),
        )
        print(f"fedchain: VERIFICATION FAILED: {err}", file=sys.stderr)
        return EXIT_FAILED
    except (ChainConnectionError, StoreUnavailableError) as err:
        log_event("gave_up", error=type(err).__name__, detail=str(err))
        print(f"fedchain: error: {err}", file=sys.stderr)
        return EXIT_UNREACHABLE


# --------------------------------------------------------------------------- the coordinator


def _run(args: argparse.Namespace) -> int:
    from fedchain.config import load_node_config

    config = load_node_config(args.config, role="coordinator")
    setup_service_logging(config.log_json)
    return run_service(lambda: _serve(config))


def _serve(config: NodeConfig) -> int:
    from fedchain.config import load_signer
    from fedchain.errors import ConfigError
    from fedchain.orchestrator.actors import Coordinator
    from fedchain.orchestrator.service import (
        CoordinatorService,
        Pacing,
        Registration,
        deploy_ledger,
        log_event,
        resolve_ledger,
        retrying,
        run_loop,
        settings_from_config,
        write_address_file,
    )
    from fedchain.orchestrator.settings import strategy_from_settings
    from fedchain.types import Address

    settings = settings_from_config(config.federation)
    pacing = Pacing(poll_seconds=config.federation.poll_seconds, outage_seconds=config.chain.outage_seconds)
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
        ledger = resolve_ledger(
            chain, address=config.ledger.address, address_file=config.ledger.address_file, pacing=pacing
        )
        if ledger is None:
            assert config.ledger.address_file is not None
            ledger = retrying(
                lambda: deploy_ledger(chain, signer, store, settings),
                pacing,
                endpoint=chain.endpoint,
                what="deployment",
            )
            write_address_file(config.ledger.address_file, ledger.address)
        coordinator_address = retrying(
            lambda: ledger.info().coordinator, pacing, endpoint=chain.endpoint, what="the ledger"
        )
        if coordinator_address != signer.address:
            raise ConfigError(
                "key.keystore",
                f"{signer.address} is not the coordinator of ledger {ledger.address} (its coordinator is {coordinator_address})",
            )
        log_event("ledger", ledger=ledger.address, chain_id=chain.chain_id)
        coordinator = Coordinator(ledger, signer, store, strategy_from_settings(settings), settings)
        service = CoordinatorService(
            coordinator,
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
