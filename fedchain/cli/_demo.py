"""``fedchain demo``: the whole three-hospital federation on the embedded defaults."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from fedchain.cli._common import EXIT_ERROR, print_audit


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "demo",
        help="run the three-hospital demo federation end to end, then audit it",
        description=(
            "Three hospitals train one ICD-10-CM chapter classifier on data they do not share. "
            "Every round is recorded on a ledger (the in-process chain by default, persisted in "
            "WORKDIR/chain.jsonl), blobs go to the embedded IPFS-compatible store (WORKDIR/store), "
            "and the run ends by auditing what it wrote. Audit it again later with "
            "`fedchain audit --workdir WORKDIR`."
        ),
    )
    p.add_argument(
        "--workdir",
        type=Path,
        default=Path("fedchain-demo"),
        help="where the chain journal, store and federation.json go (default: ./fedchain-demo)",
    )
    p.add_argument("--rounds", type=int, default=5, help="federated rounds (default: 5)")
    p.add_argument(
        "--rpc", default=None, help="JSON-RPC URL of a development node (anvil) instead of the in-process chain"
    )
    p.add_argument(
        "--seed", type=int, default=0, help="root seed of the data split, the genesis model and training (default: 0)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace a federation already in WORKDIR")
    p.set_defaults(handler=_run, error_exit_code=EXIT_ERROR)


def _run(args: argparse.Namespace) -> int:
    from fedchain.fl import demo_split
    from fedchain.hashing import short
    from fedchain.orchestrator.federation import RoundSummary, run_demo
    from fedchain.orchestrator.settings import default_settings

    if args.rounds < 1:
        print("fedchain demo: error: --rounds must be at least 1", file=sys.stderr)
        return EXIT_ERROR
    console = Console(stderr=True, soft_wrap=True)
    out = Console(soft_wrap=True)
    settings = default_settings(seed=args.seed)
    with console.status("loading ICD-10-CM data and splitting it across three hospitals..."):
        split = demo_split(seed=args.seed)
    for shard in split.shards:
        console.print(f"  {shard.name}: {len(shard):,} records")
    console.print(f"  held-out test set: {len(split.test):,} records")

    rows: list[RoundSummary] = []
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("starting", total=1)

        def progress(stage: str, done: int, total: int) -> None:
            bar.update(task, description=stage, completed=done, total=max(total, 1))

        def on_round(summary: RoundSummary) -> None:
            rows.append(summary)
            console.print(
                f"round {summary.round_id}: {summary.included} participants, test accuracy {summary.accuracy:.1%}, "
                f"gas {summary.gas_used:,}, aggregate {short(summary.aggregate_hash)} ({summary.seconds:.1f}s)"
            )

        result = run_demo(
            args.workdir,
            split,
            settings,
            rounds=args.rounds,
            rpc=args.rpc,
            overwrite=args.overwrite,
            progress=progress,
            on_round=on_round,
        )

    out.print(
        f"\nledger {result.ledger} ({'embedded chain' if args.rpc is None else args.rpc}), setup gas {result.setup_gas:,}"
    )
    out.print(f"{'round':>5}  {'participants':>12}  {'accuracy':>8}  {'gas':>9}  aggregate")
    for s in rows:
        out.print(f"{s.round_id:>5}  {s.included:>12}  {s.accuracy:>8.1%}  {s.gas_used:>9,}  {short(s.aggregate_hash)}")
    out.print(f"finished in {result.seconds:.1f}s; working directory {args.workdir}")
    code = print_audit(out, result.audit)
    if code == 0:
        out.print(f"audit it again from a fresh process: fedchain audit --workdir {args.workdir}")
    return code
