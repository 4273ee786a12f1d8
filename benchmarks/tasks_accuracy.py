#!/usr/bin/env python
"""Federated accuracy against centralized training and each participant alone, for the shipped tasks.

For ``icd`` (the three hospitals) and ``digits`` (K=3 and K=10, Dirichlet 0.5), prints the
test accuracy of plain FedAvg (no ledger: the same arithmetic as the ledger's), of the same
model trained on the pooled data for as many epochs, and of each participant training alone
for as many epochs. Then ``digits`` K=3 with DP-SGD at three noise multipliers, with the
epsilon each participant spends per round and over all rounds (Opacus' RDP accountant, delta 1e-5).

Usage: OMP_NUM_THREADS=1 python benchmarks/tasks_accuracy.py [--icd-rounds 5] [--digits-rounds 20]
       [--noise 0.6 1.0 2.0] [--seed 0] [--skip-icd] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any


def compare(app: str, k: int, rounds: int, seed: int, settings: dict[str, Any] | None = None) -> dict[str, Any]:
    from fedchain.tasks import load_task
    from fedchain.tasks._baselines import centralized, local_only, plain_fedavg

    task = load_task(app, settings)
    demo = task.demo(k, seed)
    started = time.perf_counter()
    epochs = rounds * int(task.train_config()["epochs"])
    fed = plain_fedavg(task, demo, rounds, seed)
    out: dict[str, Any] = {
        "task": app,
        "participants": k,
        "rounds": rounds,
        "sizes": {p.name: task.num_samples(p.data) for p in demo.participants},
        "federated": fed.accuracies[-1],
        "federated_per_round": list(fed.accuracies),
    }
    if not settings or not settings.get("dp_noise_multiplier"):
        out["centralized"] = centralized(task, demo, epochs, seed).accuracy
        out["alone"] = {name: run.accuracy for name, run in local_only(task, demo, epochs, seed).items()}
    else:
        from opacus.accountants import RDPAccountant

        per_round = [max(m["dp_epsilon"] for m in r.train.values()) for r in fed.rounds]
        totals = []
        for p in demo.participants:
            accountant = RDPAccountant()
            accountant.history = [
                (m["dp_noise_multiplier"], m["dp_sample_rate"], int(m["dp_steps"]))
                for m in (r.train[p.name] for r in fed.rounds)
            ]
            totals.append(accountant.get_epsilon(delta=1e-5))
        out["dp_noise_multiplier"] = settings["dp_noise_multiplier"]
        out["epsilon_per_round_max"] = max(per_round)
        out["epsilon_total_max"] = max(totals)
    out["seconds"] = time.perf_counter() - started
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--icd-rounds", type=int, default=5)
    parser.add_argument("--digits-rounds", type=int, default=20)
    parser.add_argument("--noise", type=float, nargs="+", default=[0.6, 1.0, 2.0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-icd", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    import warnings

    warnings.filterwarnings("ignore", category=UserWarning, module="opacus")
    from fedchain.tasks._torch import quiet_opacus

    results = []
    with quiet_opacus():
        if not args.skip_icd:
            results.append(compare("icd", 3, args.icd_rounds, args.seed))
        for k in (3, 10):
            results.append(compare("digits", k, args.digits_rounds, args.seed))
        for noise in args.noise:
            results.append(
                compare(
                    "digits", 3, args.digits_rounds, args.seed, {"dp_noise_multiplier": noise, "dp_max_grad_norm": 1.0}
                )
            )
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for r in results:
        head = f"{r['task']:6s} K={r['participants']:<2d} rounds={r['rounds']:<3d}"
        if "centralized" in r:
            alone = " ".join(f"{v:.3f}" for v in r["alone"].values())
            print(
                f"{head} federated {r['federated']:.3f}  centralized {r['centralized']:.3f}  alone [{alone}]  ({r['seconds']:.0f} s)"
            )
        else:
            print(
                f"{head} DP sigma={r['dp_noise_multiplier']:<4} federated {r['federated']:.3f}  "
                f"epsilon/round {r['epsilon_per_round_max']:.2f}  epsilon total {r['epsilon_total_max']:.2f}  ({r['seconds']:.0f} s)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
