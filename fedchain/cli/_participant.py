"""``fedchain participant --config FILE``: a participant as a long-running process."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from fedchain.cli._common import EXIT_ERROR, EXIT_OK
from fedchain.cli._coordinator import (
    SERVICE_EXIT_CODES,
    open_node,
    run_service,
    setup_service_logging,
)

if TYPE_CHECKING:
    from fedchain.config import NodeConfig


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "participant",
        help="run a participant: train on local data and submit an update every round",
        description=(
            "Runs until the configured rounds are finalized: for each open round it fetches the base "
            "model, verifies it (and the previous round) against the ledger, trains on the local shard "
            '([participant] data, JSON Lines of {"text": ..., "label": ...}), uploads the update and '
            "submits its record from this node's own account. It never submits twice for a round, so it "
            "can be killed and restarted at any point. Key: [key] keystore, password in "
            "$FEDCHAIN_KEY_PASSWORD or a prompt. " + SERVICE_EXIT_CODES
        ),
    )
    p.add_argument(
        "--config", type=Path, required=True, help="the node's TOML config (see README, 'Multi-process deployment')"
    )
    p.set_defaults(handler=_run, error_exit_code=EXIT_ERROR)


def _run(args: argparse.Namespace) -> int:
    from fedchain.config import load_node_config

    config = load_node_config(args.config, role="participant")
    setup_service_logging(config.log_json)
    return run_service(lambda: _serve(config))


def _serve(config: NodeConfig) -> int:
    import time

    from fedchain.config import load_signer, read_labels
    from fedchain.errors import ConfigError
    from fedchain.orchestrator.actors import Participant
    from fedchain.orchestrator.service import (
        Pacing,
        ParticipantService,
        load_participant_data,
        log_event,
        resolve_ledger,
        run_loop,
        settings_from_config,
    )
    from fedchain.orchestrator.settings import strategy_from_settings

    assert config.participant is not None
    settings = settings_from_config(config.federation)
    if config.federation.labels is not None:
        labels = read_labels(config.federation.labels)
    else:
        from fedchain.fl import load_icd10

        labels = load_icd10().label_names
    if len(labels) != settings.spec.num_classes:
        raise ConfigError(
            "federation.labels",
            f"{len(labels)} classes, but federation.model.num_classes is {settings.spec.num_classes}",
        )
    shard = load_participant_data(config.participant.data, labels, config.participant.name)
    pacing = Pacing(poll_seconds=config.federation.poll_seconds, outage_seconds=config.chain.outage_seconds)
    signer = load_signer(config.keystore, name=config.participant.name, prompt=sys.stdin.isatty())
    log_event(
        "starting",
        role="participant",
        name=config.participant.name,
        address=signer.address,
        records=len(shard),
        rpc=config.chain.rpc,
        store=config.store,
    )
    chain, store = open_node(config, signer.address, pacing)
    try:
        ledger = resolve_ledger(
            chain, address=config.ledger.address, address_file=config.ledger.address_file, pacing=pacing
        )
        waited = time.monotonic()
        while ledger is None:
            if time.monotonic() - waited > config.chain.outage_seconds:
                raise ConfigError(
                    "ledger.address_file",
                    f"{config.ledger.address_file} did not appear within {config.chain.outage_seconds:.0f}s",
                )
            time.sleep(pacing.poll_seconds)
            ledger = resolve_ledger(chain, address=None, address_file=config.ledger.address_file, pacing=pacing)
        log_event("ledger", ledger=ledger.address, chain_id=chain.chain_id)
        participant = Participant(
            ledger, signer, store, strategy_from_settings(settings), settings, shard, config.participant.name
        )
        run_loop(ParticipantService(participant, rounds=config.federation.rounds).step, pacing, endpoint=chain.endpoint)
    finally:
        chain.close()
    return EXIT_OK
