"""Federated learning core: data, the model, local training, the codec and aggregation.

The only fedchain package that imports torch.
"""

from fedchain.fl.codec import CODEC, BlobMeta, DecodedModel, DecodedUpdate, decode_model, decode_update, encode_aggregate, encode_genesis, encode_update
from fedchain.fl.data import Dataset, FederatedSplit, export_shard, load_icd10, load_shard, majority_accuracy, split_non_iid
from fedchain.fl.model import ModelSpec, derive_seed, init_params, param_shapes
from fedchain.fl.scenario import HOSPITALS, demo_split
from fedchain.fl.strategy import FedAvg, Strategy, UpdateItem, fedavg_stream
from fedchain.fl.train import LocalUpdate, TrainConfig, TrainMetrics, evaluate, train_local

__all__ = [
    "CODEC",
    "HOSPITALS",
    "BlobMeta",
    "Dataset",
    "DecodedModel",
    "DecodedUpdate",
    "FedAvg",
    "FederatedSplit",
    "LocalUpdate",
    "ModelSpec",
    "Strategy",
    "TrainConfig",
    "TrainMetrics",
    "UpdateItem",
    "decode_model",
    "decode_update",
    "demo_split",
    "derive_seed",
    "encode_aggregate",
    "encode_genesis",
    "encode_update",
    "evaluate",
    "export_shard",
    "fedavg_stream",
    "init_params",
    "load_icd10",
    "load_shard",
    "majority_accuracy",
    "param_shapes",
    "split_non_iid",
    "train_local",
]
