"""flower_app: the ServerApp (Flower's quickstart shape; the fedchain line is marked).

Run config: ``num-server-rounds``, ``fraction-train``, ``lr``, ``local-epochs``, ``seed``, and
``fedchain-audit`` (``true``: the strategy is audited; where the chain, store and coordinator key
are: :mod:`fedchain.flower._config`).
"""

from __future__ import annotations

import json
from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from fedchain.flower import audited
from flower_app.task import TASK, initial_model, load_test
from flower_app.task import test as test_fn

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run FedAvg for ``num-server-rounds`` rounds; evaluate the global model centrally after each."""
    cfg = context.run_config
    num_nodes = int(cfg.get("num-nodes", 3))
    seed = int(cfg.get("seed", 0))
    model = initial_model(seed)
    arrays = ArrayRecord(model.state_dict())
    strategy = FedAvg(fraction_train=float(cfg["fraction-train"]), fraction_evaluate=0.0, min_available_nodes=num_nodes)
    if bool(cfg.get("fedchain-audit", False)):
        strategy = audited(strategy, context, task=TASK, fund_nodes=True, seed=seed)  # fedchain: the server's one line

    test = load_test(num_nodes, seed)

    def central(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        model.load_state_dict(arrays.to_torch_state_dict())
        loss, accuracy = test_fn(model, test)
        return MetricRecord({"accuracy": accuracy, "loss": loss})

    result = strategy.start(
        grid=grid,
        initial_arrays=arrays,
        train_config=ConfigRecord({"lr": float(cfg["lr"])}),
        num_rounds=int(cfg["num-server-rounds"]),
        evaluate_fn=central,
    )
    final = result.evaluate_metrics_serverapp[max(result.evaluate_metrics_serverapp)]
    context.state["result"] = MetricRecord({k: float(v) for k, v in final.items()})  # type: ignore[arg-type]
    out = cfg.get("result-file")
    if out:
        summary = {"accuracy": float(final["accuracy"]), "loss": float(final["loss"])}  # type: ignore[arg-type]
        if hasattr(strategy, "ledger"):
            summary["ledger"] = strategy.ledger.address  # type: ignore[assignment]
        Path(str(out)).write_text(json.dumps(summary) + "\n", encoding="utf-8")
