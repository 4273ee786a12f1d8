"""Run the example Flower app plain or audited, under the simulation engine (in process) or the deployment engine.

    python scripts/flower_app/run.py simulation --nodes 3 --rounds 3 [--audited --workdir DIR]
    python scripts/flower_app/run.py deployment --nodes 3 --rounds 2 --workdir DIR   (audited; anvil + processes)

Audit an audited run afterwards: ``fedchain audit --workdir DIR`` (the deployment run prints the
``--rpc/--ledger/--store`` form too while its anvil still runs; ``federation.json`` records it).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from flwr.app import Context
from flwr.clientapp import ClientApp

from fedchain.chain import EmbeddedChain
from fedchain.flower import EMBEDDED, in_process, run_simulation_in_process
from fedchain.storage import open_store


def simulate(
    *,
    nodes: int,
    rounds: int,
    audited: bool,
    workdir: Path | None = None,
    seed: int = 0,
    client_app: ClientApp | None = None,
    fraction_train: float = 1.0,
) -> tuple[dict[str, float], Context]:
    """One simulation-engine run; returns the final central metrics and the ServerApp's context.

    Audited, the chain is an embedded one journaled in ``workdir/chain.jsonl`` and the store is
    ``workdir/store``, shared in process by the ServerApp and every ClientApp.
    """
    from flower_app.client_app import app as default_client
    from flower_app.server_app import app as server_app

    config: dict[str, Any] = {
        "num-server-rounds": rounds,
        "fraction-train": fraction_train,
        "local-epochs": 1,
        "lr": 0.3,
        "seed": seed,
        "num-nodes": nodes,
        "fedchain-audit": audited,
    }
    client = client_app or default_client
    if not audited:
        context = run_simulation_in_process(server_app, client, nodes, run_config=config)
    else:
        if workdir is None:
            raise ValueError("an audited run needs a workdir")
        workdir.mkdir(parents=True, exist_ok=True)
        chain = EmbeddedChain(workdir / "chain.jsonl")
        store = open_store(str(workdir / "store"))
        config.update(
            {
                "fedchain-rpc": EMBEDDED,
                "fedchain-store": str(workdir / "store"),
                "fedchain-workdir": str(workdir),
                "fedchain-demo-seed": seed,
            }
        )
        try:
            with in_process(chain, store):
                context = run_simulation_in_process(server_app, client, nodes, run_config=config)
        finally:
            chain.close()
    result = context.state.metric_records["result"]
    return {k: float(v) for k, v in result.items()}, context  # type: ignore[arg-type]


def _wait_for(path: Path, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        time.sleep(0.5)
    raise TimeoutError(f"no {path} after {timeout:.0f}s")


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f}s")


def deploy_run(*, nodes: int, rounds: int, workdir: Path, seed: int = 0, timeout: float = 900.0) -> dict[str, Any]:
    """An audited run under the deployment engine: anvil, a SuperLink and ``nodes`` SuperNodes as processes.

    Each SuperNode gets its own ``FEDCHAIN_PRIVATE_KEY`` (demo keys from ``seed``); the SuperLink's
    ServerApp gets the coordinator's. Insecure mode on 127.0.0.1. Returns the result file's content
    with ``rpc`` and ``store`` added; anvil is stopped at the end (its state is dumped to
    ``workdir/anvil.json``, so the audit can run afterwards with ``fedchain audit --workdir``
    after restarting it: see the README).
    """
    from fedchain.chain.anvil import AnvilNode, free_port
    from fedchain.hashing import to_hex
    from fedchain.orchestrator.federation import demo_signer

    workdir.mkdir(parents=True, exist_ok=True)
    store = workdir / "store"
    open_store(str(store))
    home = workdir / "flwr-home"
    home.mkdir(exist_ok=True)
    # flwr 1.42 serves the Fleet and Control APIs on one HTTP port; flwr's CLI finds it by connection name in FLWR_HOME/config.toml
    control = free_port()
    (home / "config.toml").write_text(
        '[superlink]\ndefault = "local-deployment"\n\n'
        f'[superlink.local-deployment]\naddress = "127.0.0.1:{control}"\ninsecure = true\n',
        encoding="utf-8",
    )
    logs = workdir / "logs"
    logs.mkdir(exist_ok=True)
    procs: list[subprocess.Popen[bytes]] = []
    outputs: list[Any] = []  # the processes' log files, closed once the processes are gone
    anvil = AnvilNode(state_file=workdir / "anvil.json").start()
    base_env = dict(os.environ, FLWR_HOME=str(home), FEDCHAIN_RPC=anvil.url, FEDCHAIN_STORE=str(store))
    # the apps run in this environment (fedchain, torch): no per-run environment installed from a registry
    base_env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] = "1"
    base_env["PYTHONPATH"] = os.pathsep.join([str(HERE), base_env.get("PYTHONPATH", "")])

    def key(name: str) -> str:
        # the demo key of `name`, handed to the process that holds it (a real node reads its own from a keystore)
        return to_hex(bytes(demo_signer(seed, name)._account.key))

    def spawn(args: list[str], env: dict[str, str], log: str) -> subprocess.Popen[bytes]:
        out = open(logs / log, "wb")  # noqa: SIM115 - closed in the finally below, after its process
        outputs.append(out)
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        procs.append(proc)
        return proc

    result_file = workdir / "result.json"
    try:
        server_env = dict(base_env, FEDCHAIN_PRIVATE_KEY=key("coordinator"), FEDCHAIN_WORKDIR=str(workdir))
        spawn(
            [
                "flower-superlink",
                "--insecure",
                "--host=127.0.0.1",
                f"--port={control}",
            ],
            server_env,
            "superlink.log",
        )
        _wait_for_port(control, procs[0], 120.0)
        for i in range(nodes):
            env = dict(base_env, FEDCHAIN_PRIVATE_KEY=key(f"node-{i}"))
            spawn(
                [
                    "flower-supernode",
                    "--insecure",
                    f"--superlink=127.0.0.1:{control}",
                    "--host=127.0.0.1",
                    f"--port={free_port()}",
                    f"--node-config=partition-id={i} num-partitions={nodes}",
                ],
                env,
                f"supernode-{i}.log",
            )
        overrides = (
            f'num-server-rounds={rounds} num-nodes={nodes} seed={seed} fedchain-audit=true result-file="{result_file}"'
        )
        flwr_env = dict(base_env)
        run = subprocess.run(
            ["flwr", "run", str(HERE), "local-deployment", "--run-config", overrides],
            env=flwr_env,
            check=False,  # its exit status is checked below, with its output
            capture_output=True,
            text=True,
            timeout=120,
            cwd=str(HERE),
        )
        (logs / "flwr-run.log").write_text(run.stdout + run.stderr, encoding="utf-8")
        if run.returncode != 0:
            raise RuntimeError(f"flwr run exited {run.returncode}: {run.stdout[-2000:]}{run.stderr[-2000:]}")
        _wait_for(result_file, procs[0], timeout)
        summary: dict[str, Any] = json.loads(result_file.read_text(encoding="utf-8"))
        summary.update({"rpc": anvil.url, "store": str(store)})
        return summary
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        for out in outputs:
            out.close()
        anvil.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("engine", choices=["simulation", "deployment"])
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--audited", action="store_true", help="simulation: audit the run (deployment runs always are)")
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.engine == "simulation":
        metrics, _ = simulate(
            nodes=args.nodes, rounds=args.rounds, audited=args.audited, workdir=args.workdir, seed=args.seed
        )
        print(json.dumps(metrics))
    else:
        if args.workdir is None:
            p.error("deployment needs --workdir")
        print(json.dumps(deploy_run(nodes=args.nodes, rounds=args.rounds, workdir=args.workdir, seed=args.seed)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
