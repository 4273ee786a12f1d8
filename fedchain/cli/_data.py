"""``fedchain data export``: write a task's demo shards as local files, one per participant."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fedchain.cli._common import EXIT_OK
from fedchain.cli._demo import TASK_HELP, parse_settings


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("data", help="export a task's demo shards as local data files (for separate processes)")
    data = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    export = data.add_parser(
        "export",
        help="write each demo participant's shard and the held-out test set",
        description=(
            "Splits the task's shipped data across its demo participants exactly as `fedchain demo` does and writes "
            "OUT/<participant>.<ext> and OUT/test.<ext> in the task's own format (for icd: JSON Lines of "
            '{"text": ..., "label": ...}). A participant\'s config points [participant] data at its shard.'
        ),
    )
    export.add_argument("--out", type=Path, required=True, help="directory to write into (created if missing)")
    export.add_argument("--task", default="icd", help=TASK_HELP)
    export.add_argument(
        "--set", dest="settings", action="append", default=[], metavar="KEY=VALUE", help="a task setting (repeatable)"
    )
    export.add_argument(
        "--participants", type=int, default=None, help="how many participants (default: the task's demo)"
    )
    export.add_argument("--seed", type=int, default=0, help="seed of the split (default: 0, the demo's)")
    export.add_argument("--json", action="store_true", help="print what was written as JSON")
    export.set_defaults(handler=_export)


def _export(args: argparse.Namespace) -> int:
    from fedchain.tasks import load_task

    task = load_task(args.task, parse_settings(args.settings), search=(Path.cwd(),))
    demo = task.demo(args.participants or int(getattr(task, "demo_participants", 3)), args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = str(getattr(task, "data_suffix", ".data"))
    written: dict[str, int] = {}
    for name, data in [*((m.name, m.data) for m in demo.participants), ("test", demo.test)]:
        path = args.out / f"{name}{suffix}"
        task.export_data(data, str(path))
        written[path.name] = task.num_samples(data)
    if args.json:
        print(json.dumps({"directory": str(args.out), "files": written}))
    else:
        for name, count in written.items():
            print(f"{args.out / name}: {count:,} records")
    return EXIT_OK
