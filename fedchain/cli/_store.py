"""``fedchain store``: add, get, and move blobs by CAR, in the embedded store or a kubo daemon."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from fedchain.cli import EXIT_ERROR, EXIT_OK
from fedchain.errors import CidFormatError
from fedchain.storage import DEFAULT_MAX_BLOB_SIZE, BlobStore, normalize_cid, open_store

#: Where the store is when ``--store`` is not given: a directory in the working directory.
DEFAULT_STORE = "fedchain-store"


def register(subparsers: Any) -> None:
    """Add the ``store`` sub-command and its actions."""
    parser = subparsers.add_parser(
        "store",
        help="add and fetch blobs by CID; export and import CAR files",
        description=(
            "Work with the blob store directly. CIDs are those of kubo's default `ipfs add` "
            "(`fedchain store add F` prints what `ipfs add -Q F` prints), and every read is "
            "verified against its CID."
        ),
    )
    parser.add_argument(
        "--store",
        default=DEFAULT_STORE,
        metavar="LOCATION",
        help=(
            "a store directory (created if missing), or a kubo RPC API address such as "
            f"http://127.0.0.1:5001 or /ip4/127.0.0.1/tcp/5001 (default: ./{DEFAULT_STORE})"
        ),
    )
    parser.add_argument(
        "--max-blob-size",
        type=_size,
        default=DEFAULT_MAX_BLOB_SIZE,
        metavar="BYTES",
        help=f"refuse blobs larger than this (default: {DEFAULT_MAX_BLOB_SIZE})",
    )
    # The same options after the action (`fedchain store add F --store DIR`); SUPPRESS keeps
    # an absent one from overwriting what was given before the action.
    location = argparse.ArgumentParser(add_help=False)
    location.add_argument("--store", default=argparse.SUPPRESS, metavar="LOCATION", help="as for `fedchain store`")
    location.add_argument(
        "--max-blob-size", type=_size, default=argparse.SUPPRESS, metavar="BYTES", help="as for `fedchain store`"
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    add = actions.add_parser(
        "add",
        parents=[location],
        help="add a file; print its CID",
        description="Add a file as one blob and print its CID.",
    )
    add.add_argument("path", type=Path, metavar="PATH", help="the file to add ('-' for standard input)")
    add.add_argument(
        "--cid-version",
        type=int,
        choices=(0, 1),
        default=0,
        help="0: CIDv0 Qm... as kubo's default; 1: the CIDv1 bafy... of the same DAG (default: 0)",
    )
    add.set_defaults(handler=_add)

    get = actions.add_parser(
        "get",
        parents=[location],
        help="write a blob to a file",
        description="Fetch a blob, verify it against its CID, write it.",
    )
    get.add_argument("cid", metavar="CID")
    get.add_argument(
        "-o", "--output", required=True, metavar="PATH", help="where to write it ('-' for standard output)"
    )
    get.set_defaults(handler=_get)

    export = actions.add_parser(
        "export-car",
        parents=[location],
        help="write a blob's DAG as a CAR file",
        description="Write the blob's DAG as a CARv1 file, which `ipfs dag import` loads into any IPFS node under the same CID.",
    )
    export.add_argument("cid", metavar="CID")
    export.add_argument("-o", "--output", required=True, metavar="FILE.car", help="the CAR file to write")
    export.set_defaults(handler=_export_car)

    imp = actions.add_parser(
        "import-car",
        parents=[location],
        help="import a CAR file; print its root CIDs",
        description="Import a CARv1 file (e.g. from `ipfs dag export`), verifying every block; print its roots.",
    )
    imp.add_argument("car", type=Path, metavar="FILE.car")
    imp.set_defaults(handler=_import_car)


def _size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of bytes: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def _open(args: argparse.Namespace) -> BlobStore:
    return open_store(args.store, max_blob_size=args.max_blob_size)


def _check_cid(cid: str) -> str | None:
    """The CID's canonical text, or ``None`` after saying on stderr why it is not one."""
    try:
        return normalize_cid(cid)
    except CidFormatError as err:
        print(f"fedchain store: error: {err}", file=sys.stderr)
        return None


def _read_input(action: str, path: Path) -> BinaryIO | None:
    try:
        return path.open("rb")
    except OSError as err:
        print(f"fedchain store {action}: error: cannot read {path}: {err.strerror or err}", file=sys.stderr)
        return None


def _add(args: argparse.Namespace) -> int:
    stream = sys.stdin.buffer if str(args.path) == "-" else _read_input("add", args.path)
    if stream is None:
        return EXIT_ERROR
    store = _open(args)
    try:
        cid = store.put_stream(stream, version=args.cid_version)
    finally:
        store.close()
        if stream is not sys.stdin.buffer:
            stream.close()
    print(cid)
    return EXIT_OK


def _get(args: argparse.Namespace) -> int:
    cid = _check_cid(args.cid)
    if cid is None:
        return EXIT_ERROR
    store = _open(args)
    try:
        if args.output == "-":
            store.get_to(cid, sys.stdout.buffer)
            sys.stdout.flush()
            return EXIT_OK
        return _write_atomically("get", Path(args.output), lambda out: store.get_to(cid, out))
    finally:
        store.close()


def _export_car(args: argparse.Namespace) -> int:
    cid = _check_cid(args.cid)
    if cid is None:
        return EXIT_ERROR
    store = _open(args)
    try:
        return _write_atomically("export-car", Path(args.output), lambda out: store.export_car(cid, out))
    finally:
        store.close()


def _import_car(args: argparse.Namespace) -> int:
    stream = _read_input("import-car", args.car)
    if stream is None:
        return EXIT_ERROR
    store = _open(args)
    try:
        roots = store.import_car(stream)
    finally:
        store.close()
        stream.close()
    for root in roots:
        print(root)
    return EXIT_OK


def _write_atomically(action: str, path: Path, write: Callable[[BinaryIO], object]) -> int:
    """Write through ``write(stream)`` into a temporary file beside ``path``, then rename it.

    A blob that fails verification halfway leaves no partial output file.
    """
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    except OSError as err:
        print(f"fedchain store {action}: error: cannot write {path}: {err.strerror or err}", file=sys.stderr)
        return EXIT_ERROR
    try:
        with os.fdopen(fd, "wb") as out:
            write(out)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return EXIT_OK
