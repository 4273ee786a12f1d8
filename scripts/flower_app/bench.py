"""Round time of the audited example against the plain one, same run settings, simulation engine.

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD python scripts/flower_app/bench.py --nodes 3 10 --rounds 3

Prints, per K, the wall time per round of each whole run (setup included) and the ratio.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as example


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--nodes", type=int, nargs="+", default=[3, 10])
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    logging.basicConfig(level=logging.ERROR)
    for k in args.nodes:
        t = time.perf_counter()
        plain, _ = example.simulate(nodes=k, rounds=args.rounds, audited=False)
        plain_s = (time.perf_counter() - t) / args.rounds
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            audited, _ = example.simulate(nodes=k, rounds=args.rounds, audited=True, workdir=Path(tmp))
            audited_s = (time.perf_counter() - t) / args.rounds
        print(
            f"K={k}: plain {plain_s:.2f} s/round (acc {plain['accuracy']:.4f}), audited {audited_s:.2f} s/round "
            f"(acc {audited['accuracy']:.4f}), ratio {audited_s / plain_s:.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
