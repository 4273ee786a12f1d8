"""The ``icd`` task: ICD-10-CM diagnosis titles classified by chapter, on three hospitals' data.

See :class:`IcdTask`; the data, model and training live in :mod:`.data`, :mod:`.model`, :mod:`.train`.
"""

from __future__ import annotations

from fedchain.tasks.icd.data import (
    HOSPITALS,
    Dataset,
    FederatedSplit,
    demo_split,
    export_shard,
    load_icd10,
    load_shard,
    majority_accuracy,
    split_non_iid,
)
from fedchain.tasks.icd.model import ModelSpec
from fedchain.tasks.icd.task import IcdTask

__all__ = [
    "HOSPITALS",
    "Dataset",
    "FederatedSplit",
    "IcdTask",
    "ModelSpec",
    "demo_split",
    "export_shard",
    "load_icd10",
    "load_shard",
    "majority_accuracy",
    "split_non_iid",
]
