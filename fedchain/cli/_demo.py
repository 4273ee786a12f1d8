"""``fedchain demo``: a whole federation end to end on the embedded defaults, then its audit."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from fedchain.cli._common import EXIT_OK, print_audit
from fedchain.errors import ConfigError

#: ``--task``'s help, shared by the commands that load a task.
TASK_HELP = (
    "icd (default), digits, lm, or package.module:attribute of your own task (e.g. the output of `fedchain new`); "
    "a package that is not importable otherwise is looked for in the current directory"
)

#: Aggregation rules ``--aggregation`` accepts (the manifest's names).
RULES = ("fedavg", "median", "trimmed-mean", "krum", "multi-krum")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "demo",
        help="run a demo federation end to end (three hospitals by default), then audit it",
        description=(
            "Runs a federation in one process: a coordinator and the task's demo participants (for the default "
            "task, three hospitals training one ICD-10-CM chapter classifier on data they do not share), each with "
            "its own key, sharing only the chain and the store. Every round is recorded on a ledger (the in-process "
            "chain by default, persisted in WORKDIR/chain.jsonl), blobs go to the embedded IPFS-compatible store "
            "(WORKDIR/store), and the run ends by auditing what it wrote. Audit it again later with "
            "`fedchain audit --workdir WORKDIR`. Exit status: 0 the audit passed, 1 it found a discrepancy, "
            "2 the demo could not run."
        ),
    )
    p.add_argument("--task", default="icd", help=TASK_HELP)
    p.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a task setting (repeatable), e.g. --set epochs=2; values are parsed as JSON when they can be",
    )
    p.add_argument(
        "--participants",
        type=int,
        default=None,
        help="how many participants (default: the task's demo, 3 for icd and lm)",
    )
    p.add_argument(
        "--workdir",
        type=Path,
        default=Path("fedchain-demo"),
        help="where the chain journal, store and federation.json go (default: ./fedchain-demo)",
    )
    p.add_argument("--rounds", type=int, default=5, help="federated rounds (default: 5)")
    p.add_argument(
        "--rpc",
        default=None,
        help="JSON-RPC URL of a development node (anvil, hardhat) instead of the in-process chain",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="root seed: keys, data split, genesis model and training (default: 0); the same seed gives the same digests",
    )
    p.add_argument("--aggregation", choices=RULES, default="fedavg", help="aggregation rule (default: fedavg)")
    p.add_argument("--server-lr", type=float, default=1.0, help="server learning rate (default: 1.0)")
    p.add_argument("--trim", type=float, default=None, help="trimmed-mean: fraction trimmed at each end (default 0.1)")
    p.add_argument(
        "--byzantine", type=int, default=None, metavar="F", help="krum/multi-krum: attackers tolerated (default 1)"
    )
    p.add_argument(
        "--select", type=int, default=None, metavar="M", help="multi-krum: updates averaged (default: K - F)"
    )
    p.add_argument("--clip", type=float, default=None, help="server-side norm clipping in front of a robust rule")
    p.add_argument(
        "--max-update-norm", type=float, default=None, help="the manifest's update norm bound (default: 1000)"
    )
    p.add_argument("--min-updates", type=int, default=None, help="quorum (default: every participant)")
    p.add_argument("--overwrite", action="store_true", help="replace a federation already in WORKDIR")
    p.add_argument(
        "--private",
        action="store_true",
        help="masked rounds: no update is readable in the store, the audit still recomputes every aggregate",
    )
    p.add_argument(
        "--html", type=Path, default=None, help="also write the audit as a self-contained HTML report to this file"
    )
    p.set_defaults(handler=_run)


def parse_settings(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs to a settings dict (JSON values where they parse, strings otherwise)."""
    settings: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError("--set", f"expected KEY=VALUE, got {item!r}")
        try:
            settings[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            settings[key.strip()] = value
    return settings


def aggregation_of(args: argparse.Namespace) -> dict[str, Any]:
    """The manifest's aggregation table from the flags."""
    agg: dict[str, Any] = {"rule": args.aggregation, "server_lr": float(args.server_lr)}
    for flag, key in (("trim", "trim"), ("byzantine", "f"), ("select", "m"), ("clip", "clip")):
        value = getattr(args, flag)
        if value is not None:
            agg[key] = value
    return agg


def check_rpc(rpc: str | None) -> None:
    if rpc is not None and rpc != "embedded" and not rpc.startswith(("http://", "https://")):
        raise ConfigError("--rpc", f"must be an http:// or https:// JSON-RPC URL (or 'embedded'), got {rpc!r}")


def _run(args: argparse.Namespace) -> int:
    from fedchain.audit import audit_ledger
    from fedchain.hashing import short, to_hex
    from fedchain.orchestrator.federation import RoundSummary, make_manifest, prepare_workdir, run_demo
    from fedchain.protocol import DEFAULT_MAX_UPDATE_NORM
    from fedchain.tasks import load_task

    # everything that can be checked is checked before any slow work
    if args.rounds < 1:
        raise ConfigError("--rounds", f"must be at least 1, got {args.rounds}")
    if args.participants is not None and args.participants < 1:
        raise ConfigError("--participants", f"must be at least 1, got {args.participants}")
    check_rpc(args.rpc)
    settings = parse_settings(args.settings)
    task = load_task(args.task, settings, search=(Path.cwd(),))  # a wrong task leaves no working directory behind
    prepare_workdir(args.workdir, overwrite=args.overwrite)
    console = Console(stderr=True, soft_wrap=True, highlight=False)
    out = Console(soft_wrap=True, highlight=False)
    with console.status(f"loading the {task.name} task's data and splitting it across the participants..."):
        demo = task.demo(args.participants or _default_participants(task), args.seed)
    for m in demo.participants:
        console.print(f"  {m.name}: {task.num_samples(m.data):,} records")
    privacy = None
    min_updates = args.min_updates or len(demo.participants)
    if args.private:
        from fedchain.protocol.privacy import default_masked

        privacy = default_masked(len(demo.participants))
        min_updates = min(min_updates, int(privacy["min_survivors"]))
    manifest = make_manifest(
        task,
        seed=args.seed,
        min_updates=min_updates,
        aggregation=aggregation_of(args),
        max_update_norm=args.max_update_norm if args.max_update_norm is not None else DEFAULT_MAX_UPDATE_NORM,
        privacy=privacy,
    )
    rows: list[RoundSummary] = []
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        job = bar.add_task("round 1", total=args.rounds)

        def progress(stage: str, done: int, total: int) -> None:
            bar.update(job, description=stage, completed=done, total=max(total, 1))

        def on_round(s: RoundSummary) -> None:
            rows.append(s)
            metrics = ", ".join(f"{k} {v:.4g}" for k, v in sorted(s.metrics.items()))
            agg = short(s.aggregate_hash) if s.aggregate_hash else "-"
            console.print(
                f"round {s.round_id} {s.status}: {s.included} included, {metrics or 'no metrics'}, gas {s.gas_used:,}, aggregate {agg} ({s.seconds:.1f}s)"
            )

        def audit(ledger: Any, store: Any, names: Any) -> Any:
            bar.update(job, description="auditing")
            return audit_ledger(ledger, store, names=names, details=args.html is not None)

        result = run_demo(
            args.workdir,
            task,
            manifest,
            members=demo.participants,
            test_data=demo.test,
            rounds=args.rounds,
            rpc=args.rpc,
            seed=args.seed,
            task_app=args.task,
            task_settings=settings,
            overwrite=False,
            progress=progress,
            on_round=on_round,
            audit=audit,
        )
    out.print(
        f"ledger {result.ledger} ({'embedded chain' if args.rpc in (None, 'embedded') else args.rpc}), setup gas {result.setup_gas:,}"
    )
    out.print(f"{'round':>5}  {'status':<9}  {'included':>8}  {'accuracy':>8}  {'gas':>9}  aggregate")
    for s in rows:
        acc = f"{s.accuracy:.1%}" if s.accuracy is not None else "-"
        out.print(
            f"{s.round_id:>5}  {s.status:<9}  {s.included:>8}  {acc:>8}  {s.gas_used:>9,}  {short(s.aggregate_hash) if s.aggregate_hash else '-'}"
        )
    last = next((s for s in reversed(rows) if s.aggregate_hash is not None), None)
    if last is not None:
        out.print(
            f"final aggregate (round {last.round_id}): {to_hex(bytes(last.aggregate_hash or b''))} at {last.aggregate_cid}"
        )
    out.print(f"finished in {result.seconds:.1f}s; working directory {args.workdir}")
    code = print_audit(out, result.audit)
    if args.html is not None:
        from fedchain.audit.report import write_html

        write_html(result.audit, args.html)
        out.print(f"report written to {args.html}")
    if code == EXIT_OK:
        out.print(f"audit it again from a fresh process: fedchain audit --workdir {args.workdir}")
    return code


def _default_participants(task: Any) -> int:
    return int(getattr(task, "demo_participants", 3))


__all__ = ["RULES", "TASK_HELP", "aggregation_of", "check_rpc", "parse_settings"]
