"""Shared fixtures: the real ICD-10-CM data (loaded once) and a small slice of it split like the demo."""

from __future__ import annotations

import pytest

from fedchain.tasks.icd.data import HOSPITALS, Dataset, FederatedSplit, demo_split, load_icd10, split_non_iid


@pytest.fixture(scope="session")
def icd10() -> Dataset:
    return load_icd10()


@pytest.fixture(scope="session")
def demo() -> FederatedSplit:
    return demo_split()


@pytest.fixture(scope="session")
def small_split(icd10: Dataset) -> FederatedSplit:
    """Every 10th record (about 7,500), split like the demo."""
    keep = range(0, len(icd10), 10)
    small = Dataset(
        name="small",
        texts=tuple(icd10.texts[i] for i in keep),
        labels=tuple(icd10.labels[i] for i in keep),
        label_names=icd10.label_names,
    )
    return split_non_iid(small, list(HOSPITALS.values()), names=list(HOSPITALS), seed=0)
