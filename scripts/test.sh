#!/usr/bin/env bash
# Install what the test suite needs (Debian, npm and Python tools), check the style, and run the
# whole suite. This is the README's second command; CI's .ci/run calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

# ipfs_cid: an independent CID oracle; docker-compose: validates docker-compose.yml (no engine
# needed); chromium: renders the audit's HTML report headless in its test; gcc: builds the compiled
# loops (fedchain/fl/_loops.c), which tests/fl/test_kernels.py compares with the numpy loops, and
# the store's leaf reader (fedchain/storage/_leaves.c), which tests/storage/test_leaf_runs.py
# compares with the Python reads.
if ! command -v ipfs_cid >/dev/null 2>&1 || ! command -v docker-compose >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1 || ! command -v gcc >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends ipfs-cid docker-compose chromium gcc libc6-dev >/dev/null
fi
# Pinned in package-lock.json: anvil and hardhat (real Ethereum nodes), js-ipfs (a real IPFS RPC
# daemon) and solc-js (the compiler fallback). The tests start and stop the nodes themselves
# (session fixtures in tests/conftest.py, one per xdist worker, on free loopback ports);
# FEDCHAIN_KUBO_API=http://HOST:PORT points the real-daemon storage tests at a kubo instead.
npm ci --no-audit --no-fund --loglevel=error
# torch==2.13.0 first: it is the CPU wheel; a looser requirement could pull a CUDA build.
python -m pip install -q --disable-pip-version-check torch==2.13.0 -e '.[test]'
# Style is not a matter of memory: the formatter, the linter and strict typing, before the tests.
python -m ruff format --check .
python -m ruff check fedchain benchmarks
python -m mypy --strict fedchain
python -m pytest -n 2 --durations=25 "$@"
