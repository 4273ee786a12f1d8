"""flower_app: the ClientApp (Flower's quickstart shape; the fedchain line is marked)."""

from __future__ import annotations

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedchain.flower import fedchain_mod
from fedchain.hashing import derive_seed
from flower_app.task import initial_model, load_data, load_test
from flower_app.task import test as test_fn
from flower_app.task import train as train_fn

app = ClientApp(mods=[fedchain_mod])  # fedchain: the one line a ClientApp adds


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the model on the partition's data."""
    model = initial_model()
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    partition_id = int(context.node_config["partition-id"])
    num_partitions = int(context.node_config["num-partitions"])
    data = load_data(partition_id, num_partitions)
    server_round = int(msg.content["config"]["server-round"])
    train_loss = train_fn(
        model,
        data,
        int(context.run_config["local-epochs"]),
        float(msg.content["config"]["lr"]),
        seed=derive_seed(int(context.run_config.get("seed", 0)), "train", server_round, partition_id),
    )
    content = RecordDict(
        {
            "arrays": ArrayRecord(model.state_dict()),
            "metrics": MetricRecord({"train_loss": train_loss, "num-examples": len(data)}),
        }
    )
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Evaluate the model on the held-out digits."""
    model = initial_model()
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    data = load_test(int(context.node_config["num-partitions"]))
    loss, accuracy = test_fn(model, data)
    metrics = MetricRecord({"eval_loss": loss, "eval_acc": accuracy, "num-examples": len(data)})
    return Message(content=RecordDict({"metrics": metrics}), reply_to=msg)
