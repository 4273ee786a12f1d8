"""Real deployments on one machine, for tests/deployment: anvil, a coordinator and participant processes.

Each node is a separate ``python -m fedchain coordinator|participant --config FILE`` process
with its own keystore and config; they share only the anvil node and an embedded store
directory (standing in for IPFS). The shards are written by ``fedchain data export`` from every
60th ICD-10-CM record (``demo_every = 60``), and a small model keeps a three-round federation
to seconds. Every subprocess imports this checkout's ``fedchain`` (``PYTHONPATH``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from fedchain.chain import Ledger, Signer, connect
from fedchain.chain.anvil import AnvilNode
from fedchain.records import RoundStatus

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery staple"
HOSPITALS = ("st-mary", "northgate", "riverside")
ROUNDS = 3
#: Every wait in these tests is bounded by this (seconds), so nothing hangs.
WAIT = 240.0
#: The task every node of these tests runs: the icd task with a small model.
TASK = """
[task]
app = "icd"

[task.settings]
num_buckets = 512
dim = 8
batch_size = 64
"""


def node_env(**extra: str) -> dict[str, str]:
    """The environment of a fedchain subprocess: this checkout's package, one compute thread, no key variable."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)
    env.pop("FEDCHAIN_PRIVATE_KEY", None)
    return env


def fedchain(*args: str, timeout: float = WAIT, **extra: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m fedchain ARGS`` to completion in a fresh process."""
    return subprocess.run(
        [sys.executable, "-m", "fedchain", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        env=node_env(**extra),
    )


@dataclass
class Node:
    """One fedchain process and its log file."""

    name: str
    args: list[str]
    log: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self) -> Node:
        self.starts += 1
        with open(self.log, "ab") as out:
            out.write(f"--- start {self.starts}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "fedchain", *self.args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
            )
        return self

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""

    def last_run(self) -> str:
        """The log of the latest start only."""
        return self.text().split(f"--- start {self.starts}\n")[-1]

    def kill(self) -> None:
        """SIGKILL: no cleanup of any kind, as a power cut."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def wait_for(self, needle: str, *, count: int = 1, timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.text().count(needle) >= count:
                return
            if self.proc is not None and self.proc.poll() is not None and self.text().count(needle) < count:
                raise AssertionError(
                    f"{self.name} exited with {self.proc.returncode} before logging {needle!r}:\n{self.text()[-3000:]}"
                )
            time.sleep(0.05)
        raise AssertionError(f"{self.name} did not log {needle!r} within {timeout:.0f}s:\n{self.text()[-3000:]}")

    def wait_exit(self, timeout: float = WAIT) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} still running after {timeout:.0f}s:\n{self.text()[-3000:]}") from None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def federation_toml(
    *,
    rpc: str,
    rounds: int = ROUNDS,
    min_updates: int = 3,
    round_seconds: int = 300,
    poll: float = 0.2,
    outage_seconds: float = 120,
) -> str:
    """The tables every node of a test deployment shares: chain, ledger, store, federation rules and task."""
    return f"""
[chain]
rpc = "{rpc}"
dev = true
retries = 4
backoff = 0.2
outage_seconds = {outage_seconds}

[ledger]
address_file = "shared/ledger.address"

[store]
location = "shared/store"

[federation]
rounds = {rounds}
poll_seconds = {poll}
min_updates = {min_updates}
round_seconds = {round_seconds}
server_lr = 1.0
seed = 3
max_update_norm = 1000.0

[federation.train]
epochs = 1
batch_size = 64
{TASK}"""


@dataclass
class Deployment:
    """Configs, keystores and processes of one federation under ``root``."""

    password: ClassVar[str] = PASSWORD
    root: Path
    anvil: AnvilNode
    shards: Path
    coordinator: Node = field(init=False)
    participants: list[Node] = field(init=False)
    addresses: dict[str, str] = field(init=False, default_factory=dict)

    def configure(
        self,
        *,
        rounds: int = ROUNDS,
        min_updates: int = 3,
        round_seconds: int = 300,
        poll: float = 0.2,
        outage_seconds: float = 120,
        hospitals: tuple[str, ...] = HOSPITALS,
        extra: str = "",
    ) -> Deployment:
        """Write every node's keystore and config (``extra``: more TOML every node shares, e.g. ``[federation.privacy]``).

        Each hospital's data is ``shards/<name>.jsonl``.
        """
        env = node_env(FEDCHAIN_KEY_PASSWORD=PASSWORD)
        keys = self.root / "keys"
        keys.mkdir()
        for name in ("coordinator", *hospitals):
            signer = Signer.create(name)
            signer.to_keystore(keys / f"{name}.json", PASSWORD, kdf_iterations=2)  # cheap KDF: tests only
            self.addresses[name] = signer.address
        common = (
            federation_toml(
                rpc=self.anvil.url,
                rounds=rounds,
                min_updates=min_updates,
                round_seconds=round_seconds,
                poll=poll,
                outage_seconds=outage_seconds,
            )
            + extra
        )
        participants = "".join(
            f'\n[[participants]]\nname = "{n}"\naddress = "{self.addresses[n]}"\nmax_samples = 100000\n'
            for n in hospitals
        )
        (self.root / "coordinator.toml").write_text(
            f'[key]\nkeystore = "keys/coordinator.json"\n{common}{participants}', encoding="utf-8"
        )
        self.coordinator = Node(
            "coordinator",
            ["coordinator", "--config", str(self.root / "coordinator.toml")],
            self.root / "coordinator.log",
            env,
        )
        self.participants = []
        for n in hospitals:
            (self.root / f"{n}.toml").write_text(
                f'[key]\nkeystore = "keys/{n}.json"\n{common}\n[participant]\nname = "{n}"\n'
                f'data = "{self.shards / (n + ".jsonl")}"\n',
                encoding="utf-8",
            )
            self.participants.append(
                Node(n, ["participant", "--config", str(self.root / f"{n}.toml")], self.root / f"{n}.log", env)
            )
        return self

    def start(self) -> Deployment:
        """Start the participants, then (once each has loaded its data and task) the coordinator.

        A participant's start (torch, the task, its shard) takes seconds on a loaded machine; started
        first, none of them misses round 0's deadline because the coordinator was quicker.
        """
        for p in self.participants:
            p.start()
        for p in self.participants:
            p.wait_for("event=connecting")
        self.coordinator.start()
        return self

    @property
    def nodes(self) -> list[Node]:
        return [self.coordinator, *self.participants]

    def ledger_address(self) -> str:
        return (self.root / "shared" / "ledger.address").read_text(encoding="utf-8").strip()

    def ledger(self) -> Ledger:
        return Ledger(connect(self.anvil.url), self.ledger_address())

    def audit(self) -> subprocess.CompletedProcess[str]:
        """``fedchain audit`` in a fresh process, from the chain and the store only."""
        store = str(self.root / "shared" / "store")
        return fedchain("audit", "--rpc", self.anvil.url, "--ledger", self.ledger_address(), "--store", store)

    def assert_complete(self, rounds: int = ROUNDS, included: int = 3) -> Ledger:
        """Exactly ``rounds`` rounds, all finalized, each with ``included`` updates, none twice."""
        ledger = self.ledger()
        assert ledger.next_round() == rounds
        for h in ledger.history():
            assert h.state.status is RoundStatus.FINALIZED
            assert h.aggregate is not None
            senders = [u.participant for u in h.updates]
            assert len(senders) == len(set(senders))
            assert len(h.aggregate.included) == included, h
        return ledger
