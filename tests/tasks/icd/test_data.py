"""The ICD-10-CM dataset and the non-IID hospital split."""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest

from fedchain.errors import DataError
from fedchain.tasks.icd.data import (
    HOSPITALS,
    Dataset,
    FederatedSplit,
    demo_split,
    icd10_codes,
    majority_accuracy,
    split_non_iid,
)

DEMO_SPLIT_DIGEST = "d447a2eb53b406baf4284541b2e5962418fdf86da775ee4450bc45792802157f"


def test_icd10_has_one_record_per_leaf_code_labelled_by_its_chapter(icd10: Dataset) -> None:
    codes = icd10_codes()
    assert len(icd10) == len(codes) > 70_000
    assert icd10.num_classes == 22
    assert icd10.label_names[0].startswith("Certain infectious and parasitic diseases")
    by_code = dict(zip(codes, zip(icd10.texts, icd10.labels, strict=True), strict=True))
    assert by_code["A000"] == ("Cholera due to Vibrio cholerae 01, biovar cholerae", 0)
    assert by_code["S52521A"][1] == 18  # injuries are chapter XIX
    assert set(icd10.labels) == set(range(22))


def test_demo_split_is_disjoint_and_covers_every_record_once(icd10: Dataset, demo: FederatedSplit) -> None:
    split = demo
    parts = [*split.shards, split.test]
    assert sum(len(p) for p in parts) == len(icd10)
    pooled = Counter(pair for p in parts for pair in zip(p.texts, p.labels, strict=True))
    assert pooled == Counter(zip(icd10.texts, icd10.labels, strict=True))


def test_demo_split_holds_out_a_stratified_test_set(icd10: Dataset, demo: FederatedSplit) -> None:
    split = demo
    for c, (total, held) in enumerate(zip(icd10.label_counts(), split.test.label_counts(), strict=True)):
        assert held == round(0.15 * total), c
    train = Counter(pair for s in split.shards for pair in zip(s.texts, s.labels, strict=True))
    test = Counter(zip(split.test.texts, split.test.labels, strict=True))
    # only the handful of duplicate titles may appear on both sides
    assert sum((train & test).values()) < 10


def test_each_hospital_holds_most_of_its_specialty_and_some_of_the_rest(demo: FederatedSplit) -> None:
    split = demo
    assert split.names == tuple(HOSPITALS)
    totals = [sum(col) for col in zip(*(s.label_counts() for s in split.shards), strict=True)]
    for shard, group in zip(split.shards, HOSPITALS.values(), strict=True):
        counts = shard.label_counts()
        for c in group:
            if totals[c] >= 10:
                assert counts[c] / totals[c] == pytest.approx(0.8, abs=0.01), (shard.name, c)
        others = [c for c in range(22) if c not in group and totals[c] >= 20]
        assert all(0.05 < counts[c] / totals[c] < 0.15 for c in others), shard.name
    assert [len(s) for s in split.shards] == [30839, 15885, 16801]


def test_split_is_deterministic_and_depends_on_the_seed(icd10: Dataset) -> None:
    def digest(seed: int) -> str:
        split = split_non_iid(icd10, list(HOSPITALS.values()), names=list(HOSPITALS), seed=seed)
        h = hashlib.sha256()
        for part in (*split.shards, split.test):
            h.update(repr((part.name, part.texts, part.labels)).encode())
        return h.hexdigest()

    assert digest(0) == digest(0)
    assert digest(0) != digest(1)


def test_the_demo_split_is_the_same_on_every_machine() -> None:
    split = demo_split()  # computed afresh here
    h = hashlib.sha256()
    for part in (*split.shards, split.test):
        h.update(repr((part.name, part.texts, part.labels)).encode())
    # simple-icd-10-cm 1.5.0 data (April 2026); a data release changes this digest
    assert h.hexdigest() == DEMO_SPLIT_DIGEST


def test_majority_baseline_predicts_the_largest_training_chapter(demo: FederatedSplit) -> None:
    split = demo
    assert majority_accuracy(split.pooled(), split.test) == pytest.approx(6172 / 11211)


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"groups": [[0], [0]]}, "in the groups of both"),
        ({"groups": [[0], [99]]}, "names class 99"),
        ({"groups": [[0], [1]], "names": ["a", "a"]}, "distinct participant names"),
        ({"groups": [[0], [1]], "test_fraction": 1.0}, "test_fraction"),
        ({"groups": [[0], [1]], "home_share": 1.5}, "home_share"),
        ({"groups": []}, "at least one"),
    ],
)
def test_inconsistent_split_arguments_are_a_data_error(icd10: Dataset, kwargs: dict, problem: str) -> None:  # type: ignore[type-arg]
    groups = kwargs.pop("groups")
    with pytest.raises(DataError, match=problem):
        split_non_iid(icd10, groups, **kwargs)


def test_a_shard_can_be_looked_up_by_name(demo: FederatedSplit) -> None:
    split = demo
    assert split.shard("northgate") is split.shards[1]
    with pytest.raises(DataError, match="no shard named 'nowhere'"):
        split.shard("nowhere")


def test_a_dataset_refuses_labels_outside_its_classes() -> None:
    with pytest.raises(DataError, match=r"labels must lie in \[0, 2\)"):
        Dataset(name="bad", texts=("a", "b"), labels=(0, 2), label_names=("x", "y"))
    with pytest.raises(DataError, match="2 texts but 1 labels"):
        Dataset(name="bad", texts=("a", "b"), labels=(0,), label_names=("x", "y"))
