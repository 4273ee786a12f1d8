"""``fedchain participant --config FILE``: a participant as a long-running process."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from fedchain.cli._common import EXIT_OK
from fedchain.cli._coordinator import (
    SERVICE_EXIT_CODES,
    TASK_SEARCH,
    exit_on_sigterm,
    open_node,
    pacing_of,
    rules_for,
    setup_service_logging,
    task_search,
    wait_for_ledger,
)

if TYPE_CHECKING:
    from fedchain.config import NodeConfig


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "participant",
        help="run a participant: verify, train on local data and submit an update every round",
        description=(
            "Runs until the configured rounds have ended: checks that the code at the ledger address is a fedchain "
            "ledger and that its federation manifest agrees with this node's [federation] and [task]; then, for "
            "each open round, verifies every round since the genesis up to the round's base (chain of custody), "
            "trains the [task] on the local data ([participant] data), uploads the update and submits its record "
            "from this node's own account. It never submits twice for a round, so it can be killed and restarted "
            "at any point. Key: [key] keystore, password in $FEDCHAIN_KEY_PASSWORD or a prompt. "
            + TASK_SEARCH
            + " "
            + SERVICE_EXIT_CODES
        ),
    )
    p.add_argument(
        "--config", type=Path, required=True, help="the node's TOML config (see README, 'Multi-process deployment')"
    )
    p.set_defaults(handler=_run, service=True)


def _run(args: argparse.Namespace) -> int:
    from fedchain.config import load_node_config

    config = load_node_config(args.config, role="participant")
    setup_service_logging(config.log_json)
    exit_on_sigterm()
    return _serve(config)


def _serve(config: NodeConfig) -> int:
    from fedchain.config import load_signer
    from fedchain.errors import ConfigError
    from fedchain.orchestrator._events import log_event
    from fedchain.orchestrator._loop import run_loop
    from fedchain.orchestrator.participant import Participant, ParticipantService
    from fedchain.tasks import load_task

    assert config.participant is not None
    task = load_task(config.task.app, config.task.settings, search=task_search(config))
    data = task.load_data(str(config.participant.data))
    pacing = pacing_of(config)
    signer = load_signer(config.keystore, name=config.participant.name, prompt=sys.stdin.isatty())
    log_event(
        "starting",
        role="participant",
        name=config.participant.name,
        address=signer.address,
        records=task.num_samples(data),
        rpc=config.chain.rpc,
        store=config.store,
    )
    chain, store = open_node(config, signer.address, pacing)
    try:
        waited = time.monotonic()
        ledger = wait_for_ledger(config, chain, pacing)
        while ledger is None:
            if time.monotonic() - waited > config.chain.outage_seconds:
                raise ConfigError(
                    "ledger.address_file",
                    f"{config.ledger.address_file} did not appear within {config.chain.outage_seconds:.0f}s",
                )
            time.sleep(pacing.poll_seconds)
            ledger = wait_for_ledger(config, chain, pacing)
        rules = rules_for(config, ledger, store, pacing)
        log_event("ledger", ledger=ledger.address, chain_id=chain.chain_id, manifest=rules.digest)
        participant = Participant(ledger, signer, store, rules, task, data, config.participant.name)
        if rules.manifest.private:
            from fedchain.orchestrator.masked import MaskedMember, masking_key_for

            participant.masking = MaskedMember(masking_key_for(signer))
        run_loop(ParticipantService(participant, rounds=config.federation.rounds).step, pacing, endpoint=chain.endpoint)
    finally:
        chain.close()
    return EXIT_OK
