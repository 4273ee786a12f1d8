"""``fedchain model get``: a round's verified aggregate as a safetensors file, for use outside fedchain."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from fedchain.cli._common import EXIT_OK, add_ledger_arguments, open_ledger


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("model", help="get a round's verified global model as a safetensors file")
    actions = p.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    get = actions.add_parser(
        "get",
        help="write the verified aggregate of a round (default: the last finalized one)",
        description=(
            "Verifies the ledger's history up to the round (every update re-hashed, every aggregate recomputed, "
            "as the audit does) and only then writes that round's aggregate blob: a canonical safetensors file "
            "whose sha256 is the digest on chain (`sha256sum FILE` shows it). Load it with "
            "safetensors.numpy.load_file or safetensors.torch.load_file."
        ),
    )
    add_ledger_arguments(get, what="which federation")
    get.add_argument("--round", type=int, default=None, help="the round (default: the last finalized round)")
    get.add_argument("-o", "--output", type=Path, required=True, help="the file to write")
    get.set_defaults(handler=_get)


def _get(args: argparse.Namespace) -> int:
    from fedchain.errors import ConfigError
    from fedchain.hashing import to_hex
    from fedchain.protocol import advance, genesis, load_rules
    from fedchain.records import RoundStatus

    chain, ledger, store, _ = open_ledger(args, "model get")
    try:
        r_next = ledger.next_round()
        target = args.round
        if target is None:
            target = next(
                (r for r in range(r_next - 1, -1, -1) if ledger.round_state(r).status is RoundStatus.FINALIZED), None
            )
            if target is None:
                raise ConfigError("--round", "no round of this ledger is finalized yet")
        if not 0 <= target < r_next:
            raise ConfigError("--round", f"round {target} does not exist (rounds 0..{r_next - 1} were opened)")
        state = ledger.round_state(target)
        if state.status is not RoundStatus.FINALIZED:
            raise ConfigError(
                "--round", f"round {target} is {state.status.name.lower()}, not finalized: it has no aggregate"
            )
        rules = load_rules(ledger, store)
        cp, _ = advance(ledger, store, rules, genesis(ledger, store, rules, keep=True), target + 1, keep=True)
        blob = store.get_verified(cp.cid, cp.digest, max_size=rules.max_blob_size)
    finally:
        chain.close()
    tmp = args.output.with_name(args.output.name + ".part")
    tmp.write_bytes(bytes(blob))
    os.replace(tmp, args.output)
    print(f"round {target} aggregate {to_hex(cp.digest)} ({len(blob):,} bytes, verified) written to {args.output}")
    return EXIT_OK
