"""fedchain's FedAvg against the numpy float32 floor and against Flower's ``aggregate``, on the same K arrays.

- fedchain in memory: :func:`fedchain.fl.fedavg_stream` given all K updates as a list;
- fedchain streamed: the same, given an iterator (one update at a time, the coordinator's path);
- both again on one thread (``threads=1``), which is what one core does: the floor below is one
  thread, fedchain by default uses :func:`~fedchain.fl.default_threads`, and on a shared machine
  the second core is often busy;
- the floor: a plain float32 sum of the same K arrays into one accumulator (one operation per
  element; memory bandwidth bound), which no weighted average can beat;
- Flower: ``flwr.server.strategy.aggregate.aggregate`` of the same arrays with their counts.

Each is the median of interleaved repeats (so a busy spell of a shared machine hits all alike)
after a warm-up call; the figures are ratios ``other seconds / fedchain seconds`` (>= 1: fedchain
faster).
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from benchmarks._common import Verdict, interleaved, part_main
from fedchain.fl import UpdateItem, default_threads, fedavg_stream

#: The issue's targets.
TARGET_FLOOR = 0.5
TARGET_FLOOR_STREAMED = 0.4
TARGET_FLOWER = 1.3


def _flower() -> tuple[Callable[..., Any] | None, str]:
    try:
        import flwr
        from flwr.server.strategy.aggregate import aggregate
    except Exception as err:  # noqa: BLE001 - optional dependency: any import failure means "not installed"
        return None, f"not installed ({type(err).__name__})"
    return aggregate, f"flwr {flwr.__version__}"


def row(k: int, p: int, repeats: int) -> dict[str, Any]:
    """One K: every contender on the same arrays."""
    rng = np.random.default_rng(k)
    split = p * 3 // 4
    shapes = {"b": (p - split,), "w": (split,)}
    base = {name: rng.standard_normal(s, dtype=np.float32) for name, s in shapes.items()}
    updates: list[UpdateItem] = [
        (
            f"0x{i + 1:040x}",
            100 + 7 * i,
            {name: rng.standard_normal(s, dtype=np.float32) * np.float32(1e-3) for name, s in shapes.items()},
        )
        for i in range(k)
    ]
    total = sum(n for _, n, _ in updates)
    flat = [np.concatenate([d["b"], d["w"]]) for _, _, d in updates]

    def streamed() -> Iterator[UpdateItem]:
        yield from updates

    def floor() -> None:
        acc = flat[0].copy()
        for a in flat[1:]:
            np.add(acc, a, out=acc)

    fns: dict[str, Callable[[], object]] = {
        "fedchain": lambda: fedavg_stream(base, updates, total_samples=total),
        "fedchain_streamed": lambda: fedavg_stream(base, streamed(), total_samples=total),
        "fedchain_1thread": lambda: fedavg_stream(base, updates, total_samples=total, threads=1),
        "fedchain_streamed_1thread": lambda: fedavg_stream(base, streamed(), total_samples=total, threads=1),
        "floor": floor,
    }
    aggregate, flower = _flower()
    if aggregate is not None:
        results = [([d["b"] + base["b"], d["w"] + base["w"]], n) for _, n, d in updates]
        fns["flower"] = lambda: aggregate(results)
    faults: dict[str, float] = {}
    seconds = interleaved(fns, repeats, faults=faults)
    out: dict[str, Any] = {
        "k": k,
        "p": p,
        "mb": k * p * 4 / 2**20,
        "seconds": seconds,
        "page_faults": faults,
        "flower": flower,
        "threads": default_threads(),
    }
    out["vs_floor"] = seconds["floor"] / seconds["fedchain"]
    out["streamed_vs_floor"] = seconds["floor"] / seconds["fedchain_streamed"]
    out["one_thread_vs_floor"] = seconds["floor"] / seconds["fedchain_1thread"]
    out["streamed_one_thread_vs_floor"] = seconds["floor"] / seconds["fedchain_streamed_1thread"]
    if "flower" in seconds:
        out["vs_flower"] = seconds["flower"] / seconds["fedchain"]
        out["streamed_vs_flower"] = seconds["flower"] / seconds["fedchain_streamed"]
    return out


def run(quick: bool) -> dict[str, Any]:
    ks, p, repeats = ((10,), 1_000_000, 3) if quick else ((10, 100), 1_000_000, 11)
    rows = []
    for k in ks:
        rows.append(row(k, p, repeats))
        gc.collect()  # the previous K's arrays
    return {"rows": rows}


def verdicts(result: dict[str, Any]) -> list[Verdict]:
    out = []
    for r in result["rows"]:
        k = r["k"]
        out.append(Verdict(f"aggregation vs numpy float32 floor, K={k}, in memory", r["vs_floor"], ">=", TARGET_FLOOR))
        out.append(
            Verdict(
                f"aggregation vs numpy float32 floor, K={k}, streamed",
                r["streamed_vs_floor"],
                ">=",
                TARGET_FLOOR_STREAMED,
            )
        )
        out.append(
            Verdict(
                f"aggregation vs Flower aggregate, K={k}, in memory",
                r.get("vs_flower"),
                ">=",
                TARGET_FLOWER,
                r["flower"],
            )
        )
    return out


def table(result: dict[str, Any]) -> str:
    lines = [
        "## aggregation (FedAvg of K updates of P float32 parameters; ms, median of interleaved repeats)",
        "",
        (
            "| K | P | fedchain | streamed | float32 floor | Flower | vs floor | streamed vs floor | vs Flower "
            "| streamed vs Flower | 1 thread vs floor (streamed) | page faults a call: fedchain / streamed / floor |"
        ),
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["rows"]:
        s = r["seconds"]
        flower = f"{s['flower'] * 1e3:.1f}" if "flower" in s else r["flower"]
        vs = f"{r['vs_flower']:.2f}" if "vs_flower" in r else "-"
        svs = f"{r['streamed_vs_flower']:.2f}" if "streamed_vs_flower" in r else "-"
        faults = " / ".join(f"{r['page_faults'][name]:,.0f}" for name in ("fedchain", "fedchain_streamed", "floor"))
        lines.append(
            f"| {r['k']} | {r['p']:,} | {s['fedchain'] * 1e3:.1f} | {s['fedchain_streamed'] * 1e3:.1f} | {s['floor'] * 1e3:.1f} "
            f"| {flower} | {r['vs_floor']:.2f} | {r['streamed_vs_floor']:.2f} | {vs} | {svs} "
            f"| {r['one_thread_vs_floor']:.2f} ({r['streamed_one_thread_vs_floor']:.2f}) "
            f"| {faults} |"
        )
    if result["rows"]:
        lines.append(f"\n{result['rows'][0]['flower']}; fedchain threads: {result['rows'][0]['threads']}")
        lines.append(
            "Page faults: the median minor faults of a call (4 KiB pages first written). A call that gets fresh "
            "pages from the kernel pays for each (the streamed path's float64 accumulator is twice the model's "
            "size, the floor's copy once): on a virtual machine that can cost as much time as the arithmetic."
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return part_main(__doc__, run, table, argv)


if __name__ == "__main__":
    sys.exit(main())
