"""Flower records <-> fedchain arrays, and the one encoding of a train reply as an update blob.

The client mod and the server's strategy wrapper both call :func:`reply_update`, so a reply and
the update recorded for it can only agree if they are the same bytes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fedchain.errors import CodecError
from fedchain.fl.schema import Schema
from fedchain.protocol.blobs import update_blob

#: The ConfigRecord a train message carries (ledger, round, base) and a reply carries back (the record).
RECORD_KEY = "fedchain"
#: The ConfigRecord of an enrollment message (the server asks a node for its address).
ENROLL_KEY = "fedchain-enroll"

_METRIC = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def to_arrays(record: ArrayRecord, schema: Schema | None = None) -> dict[str, np.ndarray]:
    """An ArrayRecord's tensors by name (float32, as fedchain moves them); with ``schema``, exactly its tensors.

    Raises
    ------
    CodecError
        If a tensor is not float32, or (with ``schema``) the names or shapes differ from it.
    """
    out: dict[str, np.ndarray] = {}
    for name, array in record.items():
        value = array.numpy()
        if value.dtype != np.float32:
            raise CodecError("dtype", f"tensor {name!r} is {value.dtype}, the federation exchanges float32")
        out[name] = value
    if schema is not None:
        expected = {t.name: tuple(t.shape) for t in schema.tensors}
        actual = {k: tuple(v.shape) for k, v in out.items()}
        if actual != expected:
            raise CodecError(
                "shape", f"tensors {sorted(actual.items())} differ from the schema {sorted(expected.items())}"
            )
    return out


def to_record(arrays: Mapping[str, np.ndarray], order: Sequence[str] | None = None) -> ArrayRecord:
    """An ArrayRecord of ``arrays`` in ``order`` (default: sorted names), copied as float32."""
    names = list(order) if order is not None else sorted(arrays)
    return ArrayRecord({n: Array(np.ascontiguousarray(arrays[n], dtype=np.float32)) for n in names})


def same_arrays(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> bool:
    """Whether two tensor sets are bit for bit the same (names, shapes, dtypes, bytes)."""
    if set(a) != set(b):
        return False
    return all(a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and a[k].tobytes() == b[k].tobytes() for k in a)


def single(records: Mapping[str, object], kind: str, key: str | None = None) -> object:
    """The record under ``key``, or the only one of its kind."""
    if key is not None and key in records:
        return records[key]
    if len(records) != 1:
        raise CodecError("reply", f"expected one {kind} in the reply, found {sorted(records)}")
    return next(iter(records.values()))


@dataclass(frozen=True)
class ReplyUpdate:
    """A train reply as fedchain records it: the update blob, its sample count and header metrics."""

    blob: bytes
    num_samples: int
    metrics: dict[str, float]


def reply_metrics(metrics: MetricRecord, weight_key: str) -> tuple[int, dict[str, float]]:
    """The sample count (``weight_key``) and the scalar metrics (short plain names, finite) of a reply."""
    if weight_key not in metrics:
        raise CodecError("reply", f"the reply's MetricRecord has no {weight_key!r}")
    weight = metrics[weight_key]
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight != int(weight) or weight < 1:
        raise CodecError("reply", f"{weight_key!r} must be a positive whole number, got {weight!r}")
    header: dict[str, float] = {}
    for name, value in metrics.items():
        if name == weight_key or isinstance(value, (list, bool)):
            continue
        if _METRIC.fullmatch(name) and math.isfinite(float(value)):
            header[name] = float(value)
    return int(weight), header


def reply_update(
    content: RecordDict,
    base: Mapping[str, np.ndarray],
    schema: Schema,
    *,
    round_id: int,
    base_hash: bytes,
    sender: str,
    arrays_key: str,
    weight_key: str,
) -> ReplyUpdate:
    """Encode a train reply's content as the update blob of ``sender`` for ``round_id``.

    ``delta = trained - base`` in float32, the sample count from ``weight_key``, the reply's scalar
    metrics in the header.

    Raises
    ------
    CodecError
        If the reply does not hold one ArrayRecord of the schema's tensors and one MetricRecord with the weight.
    """
    record = single(content.array_records, "ArrayRecord", arrays_key)
    metrics = single(content.metric_records, "MetricRecord")
    assert isinstance(record, ArrayRecord) and isinstance(metrics, MetricRecord)
    trained = to_arrays(record, schema)
    num_samples, header = reply_metrics(metrics, weight_key)
    delta = {k: np.subtract(trained[k], base[k], dtype=np.float32) for k in sorted(base)}
    blob = update_blob(
        delta, round_id=round_id, base_hash=base_hash, sender=sender, num_samples=num_samples, metrics=header
    )
    return ReplyUpdate(blob, num_samples, header)


def config_str(record: ConfigRecord, key: str) -> str:
    """A string entry of a fedchain ConfigRecord."""
    value = record.get(key)
    if not isinstance(value, str):
        raise CodecError("record", f"the {RECORD_KEY!r} record has no string {key!r}")
    return value


def config_int(record: ConfigRecord, key: str) -> int:
    """An integer entry of a fedchain ConfigRecord."""
    value = record.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise CodecError("record", f"the {RECORD_KEY!r} record has no integer {key!r}")
    return value


__all__ = [
    "ENROLL_KEY",
    "RECORD_KEY",
    "ReplyUpdate",
    "config_int",
    "config_str",
    "reply_metrics",
    "reply_update",
    "same_arrays",
    "single",
    "to_arrays",
    "to_record",
]
