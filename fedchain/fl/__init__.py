"""The audit path's federated-learning core: the tensor schema, the codec and aggregation.

numpy only, no torch: parameters cross the protocol as ``dict[str, np.ndarray]`` (float32,
sorted by name; see :mod:`.schema`) and as canonical blobs (:mod:`.codec`). Training lives in
the tasks (:mod:`fedchain.tasks`), the only place torch is imported.
"""

from fedchain.fl.codec import (
    CODEC,
    DEFAULT_MAX_BLOB_SIZE,
    GENESIS_BASE,
    GENESIS_STRATEGY,
    MAX_HEADER_SIZE,
    MAX_METRICS,
    MAX_MODEL_DESCRIPTION,
    DecodedModel,
    DecodedUpdate,
    ExpectedMeta,
    ModelMeta,
    UpdateMeta,
    decode_model,
    decode_update,
    encode_model,
    encode_update,
    is_checksum_address,
    l2_norm,
    model_blob_matches,
    render_metrics,
)
from fedchain.fl.schema import FLOAT32, Arrays, Schema, TensorSpec
from fedchain.fl.strategy import (
    FedAvg,
    Strategy,
    UpdateItem,
    default_threads,
    fedavg_stream,
    participant_order,
)

__all__ = [
    "CODEC",
    "DEFAULT_MAX_BLOB_SIZE",
    "FLOAT32",
    "GENESIS_BASE",
    "GENESIS_STRATEGY",
    "MAX_HEADER_SIZE",
    "MAX_METRICS",
    "MAX_MODEL_DESCRIPTION",
    "Arrays",
    "DecodedModel",
    "DecodedUpdate",
    "ExpectedMeta",
    "FedAvg",
    "ModelMeta",
    "Schema",
    "Strategy",
    "TensorSpec",
    "UpdateItem",
    "UpdateMeta",
    "decode_model",
    "decode_update",
    "default_threads",
    "encode_model",
    "encode_update",
    "fedavg_stream",
    "is_checksum_address",
    "l2_norm",
    "model_blob_matches",
    "participant_order",
    "render_metrics",
]
