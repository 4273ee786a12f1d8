"""``python -m benchmarks [--quick] [--json] [--check] [--only PART...]``: every part, then the targets.

Run from the repository root (this directory's ``benchmarks`` must come first on ``sys.path``).
Progress goes to stderr; the tables (or, with ``--json``, one JSON document with the machine,
every part's figures and the verdicts) to stdout. ``--check`` exits 1 when a target is missed:
for people and for review, not a CI gate (on a shared machine the ratios move by 0.05 or more).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks._common import Verdict, fmt_met, machine

#: The parts ``--quick`` and a plain run include.
PARTS = ("gas", "overhead", "aggregation", "audit", "scale")
#: Parts with figures and targets like the default ones, too slow at full size for a plain run: run only when named with ``--only``.
NAMED = ("private",)
#: Slow or separate benchmarks, run only when named with ``--only``.
OPTIONAL = {"robust": "benchmarks.robust", "masking": "benchmarks.masking", "tasks": "benchmarks.tasks_accuracy"}
ROOT = Path(__file__).resolve().parents[1]


def _optional(name: str, quick: bool) -> dict[str, Any]:
    """Run one of the separate benchmark scripts in its own interpreter; keep what it printed."""
    args = [sys.executable, "-m", OPTIONAL[name]]
    if quick and name == "robust":
        args.append("--quick")
    if name == "tasks":
        args.append("--json")
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    proc = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, env=env, check=False)
    out: dict[str, Any] = {
        "command": " ".join(["python", *args[1:]]),
        "exit_code": proc.returncode,
        "output": proc.stdout,
    }
    if name == "tasks" and proc.returncode == 0:
        out["results"] = json.loads(proc.stdout)
    if proc.returncode != 0:
        out["stderr"] = proc.stderr[-2000:]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--quick", action="store_true", help="a reduced grid (under a minute)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=(*PARTS, *NAMED, *OPTIONAL),
        metavar="PART",
        help=f"parts to run: {', '.join((*PARTS, *NAMED, *OPTIONAL))}",
    )
    args = parser.parse_args(argv)
    parts = tuple(args.only or PARTS)
    results: dict[str, Any] = {}
    verdicts: list[Verdict] = []
    tables: list[str] = []
    seconds: dict[str, float] = {}
    for name in parts:
        print(f"benchmarks: {name}", file=sys.stderr, flush=True)
        started = time.perf_counter()
        if name in OPTIONAL:
            results[name] = _optional(name, args.quick)
            tables.append(
                f"## {name}\n\n`{results[name]['command']}` (exit {results[name]['exit_code']})\n\n{results[name]['output']}"
            )
        else:
            module = importlib.import_module(f"benchmarks.{name}")
            results[name] = module.run(args.quick)
            verdicts += module.verdicts(results[name])
            tables.append(module.table(results[name]))
        seconds[name] = time.perf_counter() - started
        # each part's figures as soon as it ends, so a long run that is stopped keeps what it measured
        print(f"benchmarks: {name} done: {json.dumps(results[name], default=str)}", file=sys.stderr, flush=True)
    missed = [v for v in verdicts if v.met is False]
    if args.json:
        doc = {
            "machine": machine(),
            "quick": args.quick,
            "parts": results,
            "seconds": seconds,
            "verdicts": [v.to_json() for v in verdicts],
        }
        print(json.dumps(doc, indent=2, default=str))
    else:
        m = machine()
        print(
            f"{m['date']}, {m['cpu']} (nproc {m['nproc']}, load {m['load_1min']:.1f}), caches {m['caches']}, {m['memory_gb']} GB, Python {m['python']}, numpy {m['numpy']}\n"
        )
        for t in tables:
            print(t + "\n")
        print("## targets\n\n| figure | measured | target | |\n| --- | ---: | --- | --- |")
        for v in verdicts:
            measured = (
                "-" if v.measured is None else f"{v.measured:,.2f}" if abs(v.measured) < 1000 else f"{v.measured:,.0f}"
            )
            note = f" ({v.note})" if v.note else ""
            print(f"| {v.figure}{note} | {measured} | {v.op} {v.bound:g} | {fmt_met(v.met)} |")
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
