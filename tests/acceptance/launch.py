"""A small launcher of fedchain processes for the acceptance tests: the command line as a user runs it.

Every command runs as ``python -P -m fedchain ...``: ``-P`` keeps the current directory off
``sys.path``, as the ``fedchain`` console script does, so a user's task package in the current
directory is found only because the command line looks for it there. ``PYTHONPATH`` is this
checkout's root, so the processes run this checkout's fedchain.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fedchain

#: The checkout whose fedchain the processes import.
ROOT = Path(fedchain.__file__).resolve().parents[1]
PASSWORD = "correct horse battery staple"
#: Every wait in these tests is bounded by this (seconds), so nothing hangs.
WAIT = 240.0
#: Keeps the auditing interpreter from importing torch: ``import torch`` raises ImportError.
NO_TORCH = "import sys; sys.modules['torch'] = None\nfrom fedchain.cli import main\nsys.exit(main(sys.argv[1:]))"


def environment() -> dict[str, str]:
    """The processes' environment: this checkout first on the path, the keystore password, one thread each."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), FEDCHAIN_KEY_PASSWORD=PASSWORD, PYTHONUNBUFFERED="1")
    env["OMP_NUM_THREADS"] = "1"
    env.pop("FEDCHAIN_PRIVATE_KEY", None)
    return env


def fedchain_cli(*args: str, cwd: Path, timeout: float = WAIT, torch: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``fedchain ARGS`` to completion in ``cwd`` (``torch=False``: in an interpreter where torch is unimportable)."""
    command = [sys.executable, "-P", "-m", "fedchain"] if torch else [sys.executable, "-P", "-c", NO_TORCH]
    return subprocess.run(
        [*command, *args], cwd=cwd, env=environment(), capture_output=True, text=True, timeout=timeout, check=False
    )


@dataclass
class Service:
    """One long-running ``fedchain coordinator|participant --config FILE`` process and its log file."""

    name: str
    role: str
    config: Path
    cwd: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.cwd / f"{self.name}.log"

    def start(self) -> Service:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-P", "-m", "fedchain", self.role, "--config", str(self.config)],
                cwd=self.cwd,
                env=environment(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return self

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""

    def check_running(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.text()[-3000:]}")

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
    """A coordinator and participants of the task ``app`` on one anvil node, configured under ``root``.

    They share only the chain and an embedded store directory (``shared/store``); the coordinator
    deploys the ledger and writes its address to ``shared/ledger.address``.
    """

    root: Path
    rpc: str
    app: str
    shards: dict[str, Path]
    rounds: int = 2
    addresses: dict[str, str] = field(default_factory=dict)
    coordinator: Service = field(init=False)
    participants: list[Service] = field(init=False)

    def configure(self, settings: dict[str, Any] | None = None, *, round_seconds: int = 600) -> Deployment:
        """Create every node's keystore (``fedchain keys new``) and TOML config."""
        names = ["coordinator", *self.shards]
        for name in names:
            made = fedchain_cli("keys", "new", "--out", f"keys/{name}.json", "--json", cwd=self.root)
            assert made.returncode == 0, made.stderr
            self.addresses[name] = json.loads(made.stdout)["address"]
        task = f'[task]\napp = "{self.app}"\n\n[task.settings]\n' + "".join(
            f"{k} = {json.dumps(v)}\n" for k, v in (settings or {}).items()
        )
        common = f"""
[chain]
rpc = "{self.rpc}"
dev = true
outage_seconds = 120

[ledger]
address_file = "shared/ledger.address"

[store]
location = "shared/store"

[federation]
rounds = {self.rounds}
min_updates = {len(self.shards)}
round_seconds = {round_seconds}
poll_seconds = 0.2

{task}"""
        listed = "".join(
            f'\n[[participants]]\nname = "{n}"\naddress = "{self.addresses[n]}"\nmax_samples = 100000\n'
            for n in self.shards
        )
        (self.root / "coordinator.toml").write_text(
            f'[key]\nkeystore = "keys/coordinator.json"\n{common}{listed}', encoding="utf-8"
        )
        self.coordinator = Service("coordinator", "coordinator", self.root / "coordinator.toml", self.root)
        self.participants = []
        for n, shard in self.shards.items():
            config = self.root / f"{n}.toml"
            config.write_text(
                f'[key]\nkeystore = "keys/{n}.json"\n{common}\n[participant]\nname = "{n}"\ndata = "{shard}"\n',
                encoding="utf-8",
            )
            self.participants.append(Service(n, "participant", config, self.root))
        return self

    @property
    def services(self) -> list[Service]:
        return [self.coordinator, *self.participants]

    def ledger_address(self, timeout: float = WAIT) -> str:
        """The ledger's address, once the coordinator has deployed it."""
        path = self.root / "shared" / "ledger.address"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if path.exists() and (text := path.read_text(encoding="utf-8").strip()):
                return text
            self.coordinator.check_running()
            time.sleep(0.2)
        raise AssertionError(f"no ledger address within {timeout:.0f}s:\n{self.coordinator.text()[-3000:]}")

    def where(self) -> list[str]:
        """``--rpc --ledger --store`` of this federation."""
        return ["--rpc", self.rpc, "--ledger", self.ledger_address(), "--store", str(self.root / "shared" / "store")]

    def stop(self) -> None:
        for s in self.services:
            s.stop()
