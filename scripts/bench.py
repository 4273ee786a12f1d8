#!/usr/bin/env python3
"""A shim: fedchain's benchmarks are ``python -m benchmarks`` (the top-level ``benchmarks/`` package)."""

import sys
from pathlib import Path

# this checkout's benchmarks and fedchain, even where others are installed
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
