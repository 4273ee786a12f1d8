"""``fedchain keys``: create an encrypted keystore, show a keystore's address."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fedchain.cli._common import EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("keys", help="create an encrypted keystore, or show a keystore's address")
    keys = p.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    new = keys.add_parser(
        "new",
        help="create a fresh key in an encrypted keystore file and print its address",
        description=(
            "Creates a random key and writes it encrypted (eth-account keystore, scrypt) to --out, "
            "mode 0600; refuses to overwrite. The password comes from $FEDCHAIN_KEY_PASSWORD or is "
            "asked twice at a prompt; it is never an argument (arguments show in process listings)."
        ),
    )
    new.add_argument("--out", type=Path, required=True, help="the keystore file to write")
    new.add_argument("--json", action="store_true", help="print the address as JSON")
    new.set_defaults(handler=_new)
    show = keys.add_parser("address", help="print a keystore's address (needs no password)")
    show.add_argument("keystore", type=Path)
    show.set_defaults(handler=_address)


def _new(args: argparse.Namespace) -> int:
    from fedchain.chain import Signer
    from fedchain.config import keystore_password
    from fedchain.errors import ConfigError

    if args.out.exists():
        raise ConfigError(str(args.out), "already exists; a keystore is never overwritten")
    password = keystore_password(confirm=True)
    signer = Signer.create()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    signer.to_keystore(args.out, password)
    if args.json:
        print(json.dumps({"address": signer.address, "keystore": str(args.out)}))
    else:
        print(signer.address)
    return EXIT_OK


def _address(args: argparse.Namespace) -> int:
    from web3 import Web3

    from fedchain.errors import ConfigError

    try:
        data = json.loads(args.keystore.read_text(encoding="utf-8"))
        address = Web3.to_checksum_address("0x" + str(data["address"]).removeprefix("0x"))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ConfigError(str(args.keystore), f"not a keystore: {err}") from err
    print(address)
    return EXIT_OK
