"""``fedchain deploy``: put a new ledger on a chain, with its genesis model in the store."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fedchain.cli._common import EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "deploy",
        help="deploy a FederatedLedger (the deploying key becomes the coordinator)",
        description=(
            "Deploys a FederatedLedger contract from the committed artifact (no compiler needed). "
            "The genesis model is created from --seed with the default model spec (or read from "
            "--genesis FILE), stored in --store, and its sha256 fixed in the contract. The key comes "
            "from --keystore FILE (password in $FEDCHAIN_KEY_PASSWORD or a prompt) or from "
            "$FEDCHAIN_PRIVATE_KEY; never from the command line."
        ),
    )
    p.add_argument(
        "--rpc", required=True, help="JSON-RPC URL of the chain node, or 'embedded' for a throw-away in-process chain"
    )
    p.add_argument("--store", required=True, help="blob store: a directory or a kubo API address")
    p.add_argument("--keystore", type=Path, help="encrypted keystore of the coordinator (see `fedchain keys new`)")
    p.add_argument(
        "--genesis", type=Path, help="a canonical model blob to start from (default: a fresh model from --seed)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the fresh genesis model (default: 0)")
    p.add_argument(
        "--fund", action="store_true", help="on a development node (anvil), give the coordinator ether first"
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from fedchain.chain import Ledger, connect
    from fedchain.config import load_signer
    from fedchain.errors import ConfigError
    from fedchain.fl import decode_model
    from fedchain.hashing import sha256, to_hex
    from fedchain.orchestrator.actors import Coordinator
    from fedchain.orchestrator.settings import default_settings
    from fedchain.storage import open_store

    signer = load_signer(args.keystore, name="coordinator")
    chain = connect(args.rpc)
    store = open_store(args.store)
    if args.fund:
        chain.fund(signer.address)
    if args.genesis is not None:
        try:
            blob = args.genesis.read_bytes()
        except OSError as err:
            raise ConfigError(str(args.genesis), f"cannot read: {err}") from err
        decode_model(blob, spec=None, max_size=store.max_blob_size)  # refuse a blob that is not a model
        cid = store.put(blob)
        store.pin(cid)
        digest = sha256(blob)
    else:
        settings = default_settings(seed=args.seed)
        digest, cid = Coordinator.publish_genesis(store, settings, signer.address)
    ledger, tx = Ledger.deploy(chain, signer, digest, cid)
    result = {
        "ledger": ledger.address,
        "coordinator": signer.address,
        "chain_id": chain.chain_id,
        "transaction": tx.tx_hash,
        "block": tx.block_number,
        "gas_used": tx.gas_used,
        "genesis_hash": to_hex(digest),
        "genesis_cid": cid,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"ledger {ledger.address} deployed by {signer.address} on chain {chain.chain_id}")
        print(f"  transaction {tx.tx_hash} (block {tx.block_number}, gas {tx.gas_used:,})")
        print(f"  genesis model {to_hex(digest)} at {cid}")
    chain.close()
    return EXIT_OK
