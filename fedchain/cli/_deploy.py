"""``fedchain deploy``: put a new ledger on a chain, with its manifest and genesis model in the store."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fedchain.cli._common import EXIT_OK
from fedchain.cli._demo import RULES, TASK_HELP, aggregation_of, check_rpc, parse_settings
from fedchain.protocol.manifest import DEFAULT_ROUND_SECONDS


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "deploy",
        help="deploy a FederatedLedger with its manifest (the deploying key becomes the coordinator)",
        description=(
            "Deploys a FederatedLedger from the committed artifact (no compiler needed). The federation "
            "manifest (the task's tensor schema and model, the aggregation rule, the norm bound, the round "
            "rules) and the genesis model (the task's initial tensors from --seed) are stored in --store and "
            "their digests fixed in the contract. Deploying twice with the same key, manifest and genesis finds "
            "the first ledger instead of deploying another. The key comes from --keystore FILE (password in "
            "$FEDCHAIN_KEY_PASSWORD or a prompt) or from $FEDCHAIN_PRIVATE_KEY; never from the command line."
        ),
    )
    p.add_argument(
        "--rpc", required=True, help="JSON-RPC URL of the chain node, or 'embedded' for a throw-away in-process chain"
    )
    p.add_argument("--store", required=True, help="blob store: a directory (created if missing) or a kubo API address")
    p.add_argument("--keystore", type=Path, help="encrypted keystore of the coordinator (see `fedchain keys new`)")
    p.add_argument("--task", default="icd", help="the task whose schema the federation exchanges: " + TASK_HELP)
    p.add_argument(
        "--set", dest="settings", action="append", default=[], metavar="KEY=VALUE", help="a task setting (repeatable)"
    )
    p.add_argument("--seed", type=int, default=0, help="root seed of the genesis model and of training (default: 0)")
    p.add_argument("--aggregation", choices=RULES, default="fedavg", help="aggregation rule (default: fedavg)")
    p.add_argument("--server-lr", type=float, default=1.0, help="server learning rate (default: 1.0)")
    p.add_argument("--trim", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--byzantine", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--select", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--clip", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--max-update-norm", type=float, default=None, help="update norm bound (default: 1000)")
    p.add_argument("--min-updates", type=int, default=1, help="quorum to finalize before the deadline (default: 1)")
    p.add_argument(
        "--round-seconds",
        type=int,
        default=DEFAULT_ROUND_SECONDS,
        help=f"time from opening a round to its deadline (default: {DEFAULT_ROUND_SECONDS})",
    )
    p.add_argument(
        "--private",
        action="store_true",
        help=(
            "masked rounds with `fedchain demo --private`'s settings (a coordinator's config sets its own in "
            "[federation.privacy]); the quorum must not exceed their minimum of 2 survivors"
        ),
    )
    p.add_argument(
        "--fund", action="store_true", help="on a development node (anvil, hardhat), give the coordinator ether first"
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from fedchain.chain import connect
    from fedchain.config import load_signer
    from fedchain.hashing import to_hex
    from fedchain.orchestrator.federation import deploy, genesis_params, make_manifest
    from fedchain.protocol import DEFAULT_MAX_UPDATE_NORM
    from fedchain.protocol.privacy import default_masked
    from fedchain.storage import open_store
    from fedchain.tasks import load_task

    check_rpc(args.rpc)
    # no prompt without a terminal (as the services): getpass would warn and read nothing useful
    signer = load_signer(args.keystore, name="coordinator", prompt=sys.stdin.isatty())
    task = load_task(args.task, parse_settings(args.settings), search=(Path.cwd(),))
    manifest = make_manifest(
        task,
        seed=args.seed,
        min_updates=args.min_updates,
        round_seconds=args.round_seconds,
        aggregation=aggregation_of(args),
        max_update_norm=args.max_update_norm if args.max_update_norm is not None else DEFAULT_MAX_UPDATE_NORM,
        privacy=default_masked(0) if args.private else None,
    )
    store = open_store(args.store)
    chain = connect(args.rpc)
    try:
        if args.fund:
            chain.fund(signer.address)
        d = deploy(chain, signer, store, manifest, genesis_params(task, args.seed))
        result = {
            "ledger": d.ledger.address,
            "coordinator": signer.address,
            "chain_id": chain.chain_id,
            "reused": d.reused,
            "gas_used": d.gas_used,
            "manifest_hash": to_hex(manifest.digest),
            "manifest_cid": d.manifest_cid,
            "genesis_hash": to_hex(d.genesis_hash),
            "genesis_cid": d.genesis_cid,
        }
    finally:
        chain.close()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        verb = "found (deployed earlier by this key)" if d.reused else "deployed"
        print(f"ledger {d.ledger.address} {verb} by {signer.address} on chain {result['chain_id']}, gas {d.gas_used:,}")
        print(f"  manifest {result['manifest_hash']} at {d.manifest_cid}")
        print(f"  genesis model {result['genesis_hash']} at {d.genesis_cid}")
    return EXIT_OK
