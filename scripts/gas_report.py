#!/usr/bin/env python3
"""A shim: the ledger's gas report is ``python -m benchmarks.gas [--calls 20] [--chains embedded anvil] [--json]``.

Exit code 0 when every median is within its target, 1 otherwise.
"""

import sys
from pathlib import Path

# this checkout's benchmarks and fedchain, even where others are installed
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.gas import main

if __name__ == "__main__":
    sys.exit(main())
