#!/usr/bin/env python3
"""fedchain's benchmarks (issue 7): gas, ledger overhead, aggregation, audit, scale.

A thin wrapper: the harness lives in :mod:`fedchain.bench` so that ``fedchain bench`` runs the
same code. ``python scripts/bench.py --quick --json`` is the under-two-minutes run.
"""

import sys
from pathlib import Path

# this checkout's fedchain, even where another one is installed
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fedchain.bench import main

if __name__ == "__main__":
    sys.exit(main())
