#!/usr/bin/env python3
"""Measure the ledger contract's gas on a real anvil node and on eth-tester (py-evm).

Deploys the committed artifact (``fedchain.chain.compile.load_artifact``), then runs
``--calls`` deployments, registrations and full rounds (openRound, three submitUpdate,
closeRound, finalizeRound of the three), then ``--calls`` rounds of ten participants, and
prints the median gas of each beside its target, and the
floor for recording one 32-byte digest: a transaction (21,000), one cold zero-to-nonzero
storage write (22,100), the call's calldata and the event's log.

Exit code 0 when every median is within its target, 1 otherwise, 2 when a backend cannot start.

Usage: python scripts/gas_report.py [--calls 20] [--backend anvil eth-tester] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from web3 import Web3
from web3.types import TxReceipt

from fedchain.chain.compile import load_artifact

REPO = Path(__file__).resolve().parent.parent
DEFAULT_ANVIL = REPO / "node_modules" / ".bin" / "anvil"

#: Targets for the median gas of each operation (None: reported, no target).
TARGETS: dict[str, int | None] = {
    "deploy": None,
    "registerParticipant": None,
    "openRound": 100_000,
    "submitUpdate": 55_000,
    "closeRound": None,
    "finalizeRound": 100_000,
    "fullRound": 300_000,
    "abandonRound": None,
    "finalizeRound10": None,
    "fullRound10": None,
}
LABELS = {
    "deploy": "deploy",
    "registerParticipant": "registerParticipant",
    "openRound": "openRound",
    "submitUpdate": "submitUpdate",
    "closeRound": "closeRound",
    "finalizeRound": "finalizeRound (3 included)",
    "fullRound": "full round (open + 3 submits + close + finalize)",
    "abandonRound": "abandonRound (closed round)",
    "finalizeRound10": "finalizeRound (10 included)",
    "fullRound10": "full round of 10 (open + 10 submits + close + finalize)",
}
PARTICIPANTS = 3
WIDE = 10
TX_BASE = 21_000
COLD_SSTORE_SET = 22_100  # 20,000 zero-to-nonzero + 2,100 cold slot access
LOG_BASE, LOG_TOPIC, LOG_BYTE = 375, 375, 8


def digest(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def fake_cid(label: str) -> str:
    """A string shaped like a CIDv1 (base32, 59 characters), as the orchestrator records."""
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    return "bafkrei" + "".join(alphabet[b % 32] for b in digest("cid:" + label) + digest("cid2:" + label))[:52]


def calldata_gas(data: bytes) -> int:
    return sum(4 if b == 0 else 16 for b in data)


# --------------------------------------------------------------------------- backends


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rpc_answers(url: str) -> bool:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return "result" in json.loads(response.read())
    except (OSError, ValueError):
        return False


@contextmanager
def anvil_node(executable: Path, timeout_s: float = 60.0) -> Iterator[Web3]:
    """Start anvil on a free loopback port with a throwaway HOME; stop it afterwards."""
    if not executable.exists():
        raise RuntimeError(f"no anvil at {executable}: run `npm ci` in {REPO}")
    with tempfile.TemporaryDirectory(prefix="fedchain-anvil-") as home:
        port = free_port()
        command = [str(executable), "--host", "127.0.0.1", "--port", str(port), "--prune-history", "--silent"]
        # Own session: the npm wrapper is node spawning the binary; stop the whole group.
        proc = subprocess.Popen(
            command,
            env={**os.environ, "HOME": home},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + timeout_s
            while not rpc_answers(url):
                if proc.poll() is not None:
                    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                    raise RuntimeError(f"anvil exited with code {proc.returncode}: {stderr.strip()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"anvil did not answer eth_chainId on {url} within {timeout_s:.0f} s")
                time.sleep(0.1)
            yield Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 60}))
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            if proc.stderr:
                proc.stderr.close()


@contextmanager
def eth_tester_chain() -> Iterator[Web3]:
    from web3 import EthereumTesterProvider

    yield Web3(EthereumTesterProvider())


# --------------------------------------------------------------------------- measuring


def measure(w3: Web3, calls: int) -> dict[str, Any]:
    artifact = load_artifact()
    factory = w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    accounts = w3.eth.accounts
    coordinator = accounts[0]
    participants = sorted(accounts[1 : 1 + PARTICIPANTS], key=lambda a: int(a, 16))
    # Both nodes unlock ten accounts: the coordinator is the tenth participant of a wide round
    # (a submission costs the same whoever sends it).
    wide = sorted(accounts[:WIDE], key=lambda a: int(a, 16))
    if len(wide) < WIDE:
        raise RuntimeError(f"the node has {len(accounts)} unlocked accounts, {WIDE} are needed")

    def send(call: Any, sender: str) -> TxReceipt:
        tx_hash = call.transact({"from": sender})
        receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=60)
        if receipt["status"] != 1:
            raise RuntimeError(f"transaction {tx_hash.to_0x_hex()} reverted")
        return receipt

    gas: dict[str, list[int]] = {name: [] for name in TARGETS}
    genesis = digest("genesis")
    address = None
    for i in range(calls):
        receipt = send(
            factory.constructor(genesis, fake_cid("genesis"), digest("manifest"), fake_cid("manifest")), coordinator
        )
        gas["deploy"].append(receipt["gasUsed"])
        address = address or receipt["contractAddress"]
    ledger = w3.eth.contract(address=address, abi=artifact["abi"])

    others = [Web3.to_checksum_address(digest(f"participant {i}")[:20]) for i in range(calls - PARTICIPANTS)]
    for account in (wide + others)[: max(calls, WIDE)]:
        gas["registerParticipant"].append(
            send(ledger.functions.registerParticipant(account, 1_000_000), coordinator)["gasUsed"]
        )

    base = genesis
    round_id = 0
    submit_receipt: TxReceipt | None = None

    def run_round(members: list[str], suffix: str, *, abandon: bool = False) -> int:
        nonlocal base, round_id, submit_receipt
        deadline = w3.eth.get_block("latest")["timestamp"] + 3600
        call = ledger.functions.openRound(round_id, base, fake_cid(f"base {round_id}"), deadline, len(members))
        total = opened = send(call, coordinator)["gasUsed"]
        for participant in members:
            label = f"update {round_id} {participant}"
            call = ledger.functions.submitUpdate(round_id, digest(label), fake_cid(label), 1000)
            submit_receipt = send(call, participant)
            if not suffix:
                gas["submitUpdate"].append(submit_receipt["gasUsed"])
            total += submit_receipt["gasUsed"]
        closed = send(ledger.functions.closeRound(round_id), coordinator)["gasUsed"]
        total += closed
        if abandon:
            gas["abandonRound"].append(send(ledger.functions.abandonRound(round_id), coordinator)["gasUsed"])
        else:
            aggregate = digest(f"aggregate {round_id}")
            call = ledger.functions.finalizeRound(round_id, aggregate, fake_cid(f"aggregate {round_id}"), members)
            finalized = send(call, coordinator)["gasUsed"]
            total += finalized
            gas["finalizeRound" + suffix].append(finalized)
            gas["fullRound" + suffix].append(total)
            base = aggregate
            if not suffix:
                gas["openRound"].append(opened)
                gas["closeRound"].append(closed)
        round_id += 1
        return total

    for _ in range(calls):
        run_round(participants, "")
    for _ in range(calls):
        run_round(wide, "10")
    for _ in range(calls):
        run_round(participants[:1], "", abandon=True)

    assert submit_receipt is not None
    tx = w3.eth.get_transaction(submit_receipt["transactionHash"])
    log = submit_receipt["logs"][0]
    calldata = calldata_gas(bytes(tx["input"]))
    log_gas = LOG_BASE + LOG_TOPIC * len(log["topics"]) + LOG_BYTE * len(bytes(log["data"]))
    floor = {
        "transaction": TX_BASE,
        "storage": COLD_SSTORE_SET,
        "calldata": calldata,
        "calldataBytes": len(bytes(tx["input"])),
        "log": log_gas,
        "total": TX_BASE + COLD_SSTORE_SET + calldata + log_gas,
    }
    return {
        "client": w3.client_version,
        "chainId": w3.eth.chain_id,
        "calls": calls,
        "bytecodeBytes": (len(artifact["deployedBytecode"]) - 2) // 2,
        "median": {name: int(statistics.median(values)) for name, values in gas.items()},
        "min": {name: min(values) for name, values in gas.items()},
        "max": {name: max(values) for name, values in gas.items()},
        "submitUpdateFloor": floor,
    }


# --------------------------------------------------------------------------- reporting


def within_targets(results: dict[str, dict[str, Any]]) -> bool:
    return all(
        target is None or result["median"][name] <= target
        for result in results.values()
        for name, target in TARGETS.items()
    )


def print_table(results: dict[str, dict[str, Any]]) -> None:
    backends = list(results)
    header = f"{'operation (median gas)':<42}{'target':>10}" + "".join(
        f"{b:>14}{'/target':>9}{'max':>10}" for b in backends
    )
    print(header)
    print("-" * len(header))
    for name, target in TARGETS.items():
        row = f"{LABELS[name]:<42}{target or '':>10,}" if target else f"{LABELS[name]:<42}{'-':>10}"
        for backend in backends:
            median = results[backend]["median"][name]
            ratio = f"{median / target:.2f}" if target else "-"
            row += f"{median:>14,}{ratio:>9}{results[backend]['max'][name]:>10,}"
        print(row)
    print()
    for backend in backends:
        floor = results[backend]["submitUpdateFloor"]
        median = results[backend]["median"]["submitUpdate"]
        print(
            f"{backend}: floor for recording one 32-byte digest = {floor['total']:,} "
            f"(transaction {floor['transaction']:,} + cold storage write {floor['storage']:,} "
            f"+ calldata {floor['calldata']:,} for {floor['calldataBytes']} bytes + log {floor['log']:,}); "
            f"submitUpdate median {median:,} = {median / floor['total']:.2f}x the floor, "
            f"{median - floor['total']:,} above it"
        )
    for backend, result in results.items():
        print(
            f"{backend}: {result['client']}, chain id {result['chainId']}, {result['calls']} calls each, "
            f"deployed code {result['bytecodeBytes']:,} bytes"
        )
    print("all medians within target" if within_targets(results) else "SOME MEDIANS ABOVE TARGET")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20, help="calls of each operation (default 20)")
    parser.add_argument(
        "--backend",
        nargs="+",
        choices=("anvil", "eth-tester"),
        default=["anvil", "eth-tester"],
        help="chains to measure",
    )
    parser.add_argument("--anvil", type=Path, default=DEFAULT_ANVIL, help=f"anvil executable (default {DEFAULT_ANVIL})")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if args.calls < PARTICIPANTS:
        parser.error(f"--calls must be at least {PARTICIPANTS}")

    backends: dict[str, Callable[[], Any]] = {
        "anvil": lambda: anvil_node(args.anvil),
        "eth-tester": eth_tester_chain,
    }
    results: dict[str, dict[str, Any]] = {}
    for name in args.backend:
        try:
            with backends[name]() as w3:
                results[name] = measure(w3, args.calls)
        except RuntimeError as err:
            print(f"gas_report: {name}: {err}", file=sys.stderr)
            return 2
    if args.json:
        report = {"targets": TARGETS, "backends": results, "withinTargets": within_targets(results)}
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        print_table(results)
    return 0 if within_targets(results) else 1


if __name__ == "__main__":
    sys.exit(main())
