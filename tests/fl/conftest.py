"""Shared fixtures: the real ICD-10-CM data (loaded once) and a small slice of it split like the demo.

Imported lazily from the ICD modules (which import torch), so the numpy-side tests of this
directory (codec, aggregation, schema) run without them.
"""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(scope="session")
def icd10() -> Any:
    from fedchain.fl.data import load_icd10

    return load_icd10()


@pytest.fixture(scope="session")
def demo() -> Any:
    from fedchain.fl.scenario import demo_split

    return demo_split()


@pytest.fixture(scope="session")
def small_split(icd10: Any) -> Any:
    """Every 10th record (about 7,500), split like the demo."""
    from fedchain.fl.data import Dataset, split_non_iid
    from fedchain.fl.scenario import HOSPITALS

    keep = range(0, len(icd10), 10)
    small = Dataset(
        name="small",
        texts=tuple(icd10.texts[i] for i in keep),
        labels=tuple(icd10.labels[i] for i in keep),
        label_names=icd10.label_names,
    )
    return split_non_iid(small, list(HOSPITALS.values()), names=list(HOSPITALS), seed=0)
