#!/usr/bin/env python
"""Does federated training learn as well as pooling the data would?

Prints three test accuracies on the demo's held-out ICD-10-CM test set:

- federated: plain FedAvg (no ledger) with the demo's split, model, strategy and seed;
- centralized: the same model trained on the three hospitals' data pooled, for as many
  epochs as the federation trains in all;
- majority: always predicting the most frequent training chapter.

The ledger path runs the same maths (local training seeded by ``participant_seed``,
:meth:`FedAvg.aggregate` in participant order), so with the same participant keys it
computes bit-identical models (tests/fl/test_simulate.py shows it through the codec).
This script keys participants by hospital name; the demo keys them by their (random)
addresses, which changes seeds and summation order and so the last digits of accuracy.

Usage: python scripts/accuracy_baseline.py [--rounds 5] [--seed 0] [--threads 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=None, help="federated rounds (default: the demo's, 5)")
    parser.add_argument("--seed", type=int, default=None, help="root seed (default: the demo's, 0)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (default: 1, fastest for this small model)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)

    from fedchain.fl import (
        DEFAULT_SPEC,
        DEFAULT_TRAIN,
        DEMO_ROUNDS,
        DEMO_SEED,
        default_strategy,
        demo_split,
        majority_accuracy,
        run_plain_fedavg,
        torch_threads,
        train_centralized,
    )

    rounds = DEMO_ROUNDS if args.rounds is None else args.rounds
    seed = DEMO_SEED if args.seed is None else args.seed
    started = time.perf_counter()
    split = demo_split(seed=seed)
    strategy = default_strategy()
    with torch_threads(args.threads):
        fed = run_plain_fedavg(split, DEFAULT_SPEC, rounds, strategy, seed, train=DEFAULT_TRAIN)
        central = train_centralized(split, DEFAULT_SPEC, rounds, strategy, seed, train=DEFAULT_TRAIN)
    majority = majority_accuracy(split.pooled(), split.test)
    train_seconds = {name: [t for r in fed.rounds for n, t in r.train_seconds if n == name] for name in split.names}

    result = {
        "federated": fed.accuracies[-1],
        "centralized": central.accuracy,
        "majority": majority,
        "federated_per_round": list(fed.accuracies),
        "rounds": rounds,
        "seed": seed,
        "spec": json.loads(DEFAULT_SPEC.to_json()),
        "parameters": DEFAULT_SPEC.num_parameters,
        "train": {"epochs": DEFAULT_TRAIN.epochs, "lr": DEFAULT_TRAIN.lr, "batch_size": DEFAULT_TRAIN.batch_size},
        "shards": {s.name: len(s) for s in split.shards},
        "test": len(split.test),
        "local_train_seconds_mean": {name: sum(ts) / len(ts) for name, ts in train_seconds.items() if ts},
        "federated_seconds": fed.seconds,
        "centralized_seconds": central.seconds,
        "total_seconds": time.perf_counter() - started,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"federated   {result['federated']:.4f}  (plain FedAvg, {rounds} rounds; per round: {', '.join(f'{a:.4f}' for a in fed.accuracies)})"
    )
    print(f"centralized {result['centralized']:.4f}  (pooled data, {central.epochs} epochs)")
    print(f"majority    {result['majority']:.4f}  (most frequent chapter)")
    print(
        f"shards {result['shards']}, test {result['test']}; local epoch seconds "
        + ", ".join(f"{n} {s:.2f}" for n, s in result["local_train_seconds_mean"].items())
        + f"; FedAvg {fed.seconds:.1f}s, centralized {central.seconds:.1f}s, total {result['total_seconds']:.1f}s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
