"""A real deployment on one machine: anvil, a coordinator and three participant processes.

Each node is a separate ``python -m fedchain coordinator|participant --config FILE`` process
with its own keystore and config; they share only the anvil node and an embedded store
directory (standing in for IPFS). A small slice of ICD-10-CM and a small model keep a
three-round federation to seconds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fedchain.chain import Ledger, Signer, connect
from fedchain.chain.anvil import AnvilNode
from fedchain.fl import HOSPITALS, Dataset, export_shard, load_icd10, split_non_iid
from fedchain.records import RoundStatus

PASSWORD = "correct horse battery staple"
ROUNDS = 3
#: Every wait in these tests is bounded by this (seconds), so nothing hangs.
WAIT = 150.0


@pytest.fixture(scope="session")
def shard_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three small hospital shards (JSONL) and labels.txt, written once per test worker."""
    out = tmp_path_factory.mktemp("shards")
    full = load_icd10()
    keep = range(0, len(full), 60)
    small = Dataset(
        name="small",
        texts=tuple(full.texts[i] for i in keep),
        labels=tuple(full.labels[i] for i in keep),
        label_names=full.label_names,
    )
    split = split_non_iid(small, list(HOSPITALS.values()), names=list(HOSPITALS), seed=0)
    for shard in split.shards:
        export_shard(shard, out / f"{shard.name}.jsonl")
    (out / "labels.txt").write_text("".join(n + "\n" for n in full.label_names), encoding="utf-8")
    return out


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
        return self.log.read_text(encoding="utf-8", errors="replace")

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
            time.sleep(0.1)
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


@dataclass
class Deployment:
    """Configs, keystores and processes of one federation under ``root``."""

    root: Path
    anvil: AnvilNode
    shards: Path
    coordinator: Node = field(init=False)
    participants: list[Node] = field(init=False)
    addresses: dict[str, str] = field(init=False, default_factory=dict)

    def configure(
        self, *, rounds: int = ROUNDS, min_updates: int = 3, round_seconds: int = 120, poll: float = 0.2
    ) -> Deployment:
        env = dict(os.environ, FEDCHAIN_KEY_PASSWORD=PASSWORD, PYTHONUNBUFFERED="1")
        env.pop("FEDCHAIN_PRIVATE_KEY", None)
        keys = self.root / "keys"
        keys.mkdir()
        for name in ("coordinator", *HOSPITALS):
            signer = Signer.create(name)
            signer.to_keystore(keys / f"{name}.json", PASSWORD, kdf_iterations=2)  # cheap KDF: tests only
            self.addresses[name] = signer.address
        federation = f"""
[chain]
rpc = "{self.anvil.url}"
dev = true
retries = 4
backoff = 0.2
outage_seconds = 120

[ledger]
address_file = "shared/ledger.address"

[store]
location = "shared/store"

[federation]
rounds = {rounds}
min_updates = {min_updates}
round_seconds = {round_seconds}
server_lr = 1.0
seed = 3
poll_seconds = {poll}
labels = "{self.shards / "labels.txt"}"

[federation.model]
num_buckets = 512
dim = 8

[federation.train]
epochs = 1
batch_size = 64
"""
        participants = "".join(
            f'\n[[participants]]\nname = "{n}"\naddress = "{self.addresses[n]}"\nmax_samples = 100000\n'
            for n in HOSPITALS
        )
        (self.root / "coordinator.toml").write_text(
            f'[key]\nkeystore = "keys/coordinator.json"\n{federation}{participants}', encoding="utf-8"
        )
        self.coordinator = Node(
            "coordinator",
            ["coordinator", "--config", str(self.root / "coordinator.toml")],
            self.root / "coordinator.log",
            env,
        )
        self.participants = []
        for n in HOSPITALS:
            (self.root / f"{n}.toml").write_text(
                f'[key]\nkeystore = "keys/{n}.json"\n{federation}\n[participant]\nname = "{n}"\ndata = "{self.shards / (n + ".jsonl")}"\n',
                encoding="utf-8",
            )
            self.participants.append(
                Node(n, ["participant", "--config", str(self.root / f"{n}.toml")], self.root / f"{n}.log", env)
            )
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
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "fedchain",
                "audit",
                "--rpc",
                self.anvil.url,
                "--ledger",
                self.ledger_address(),
                "--store",
                str(self.root / "shared" / "store"),
            ],
            capture_output=True,
            text=True,
            timeout=WAIT,
            stdin=subprocess.DEVNULL,
        )

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


@pytest.fixture
def deployment(tmp_path: Path, shard_dir: Path) -> Iterator[Deployment]:
    """A configured deployment on its own anvil (state persisted), all processes stopped at the end."""
    node = AnvilNode(state_file=tmp_path / "anvil-state.json").start()
    d = Deployment(tmp_path, node, shard_dir)
    try:
        yield d
    finally:
        for n in getattr(d, "participants", []) + ([d.coordinator] if hasattr(d, "coordinator") else []):
            n.stop()
        d.anvil.stop()
