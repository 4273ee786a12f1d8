"""``fedchain data export``: write the demo's hospital shards as local JSONL files."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fedchain.cli._common import EXIT_ERROR, EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("data", help="export the demo's three hospital shards as local data files")
    data = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    export = data.add_parser(
        "export",
        help="write each hospital's shard (JSON Lines of text,label), the test set and labels.txt",
        description=(
            "Splits ICD-10-CM across the demo's three hospitals exactly as `fedchain demo` does and writes "
            'OUT/<hospital>.jsonl (one {"text": ..., "label": ...} object per line, label = chapter name), '
            "OUT/test.jsonl and OUT/labels.txt (the class names, one per line, in label order). A "
            "participant's config points [participant] data at its shard and [federation] labels at labels.txt."
        ),
    )
    export.add_argument("--out", type=Path, required=True, help="directory to write into (created if missing)")
    export.add_argument("--seed", type=int, default=0, help="seed of the split (default: 0, the demo's)")
    export.add_argument(
        "--every", type=int, default=1, help="keep every N-th record before splitting, for quick runs (default: 1, all)"
    )
    export.add_argument("--json", action="store_true", help="print what was written as JSON")
    export.set_defaults(handler=_export, error_exit_code=EXIT_ERROR)


def _export(args: argparse.Namespace) -> int:
    from fedchain.errors import ConfigError
    from fedchain.fl import HOSPITALS, Dataset, export_shard, load_icd10, split_non_iid

    if args.every < 1:
        raise ConfigError("--every", f"must be at least 1, got {args.every}")
    full = load_icd10()
    if args.every > 1:
        keep = range(0, len(full), args.every)
        full = Dataset(
            name=full.name,
            texts=tuple(full.texts[i] for i in keep),
            labels=tuple(full.labels[i] for i in keep),
            label_names=full.label_names,
        )
    split = split_non_iid(full, list(HOSPITALS.values()), names=list(HOSPITALS), seed=args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    written: dict[str, int] = {}
    for name, shard in [*((s.name, s) for s in split.shards), ("test", split.test)]:
        export_shard(shard, args.out / f"{name}.jsonl")
        written[f"{name}.jsonl"] = len(shard)
    (args.out / "labels.txt").write_text("".join(n + "\n" for n in full.label_names), encoding="utf-8")
    if args.json:
        print(json.dumps({"directory": str(args.out), "files": written, "labels": str(args.out / "labels.txt")}))
    else:
        for name, count in written.items():
            print(f"{args.out / name}: {count:,} records")
        print(f"{args.out / 'labels.txt'}: {len(full.label_names)} classes")
    return EXIT_OK
