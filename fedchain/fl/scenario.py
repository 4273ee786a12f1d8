"""The demo scenario: three hospitals, each strong in a group of ICD-10-CM chapters."""

from __future__ import annotations

from fedchain.fl.data import FederatedSplit, load_icd10, split_non_iid

#: Hospital names and the chapters (0-based) each holds most of the records of.
HOSPITALS: dict[str, tuple[int, ...]] = {
    # infections, neoplasms, blood, endocrine, mental, nervous, eye, ear
    "st-mary": (0, 1, 2, 3, 4, 5, 6, 7),
    # circulatory, respiratory, digestive, skin, musculoskeletal, genitourinary, pregnancy
    "northgate": (8, 9, 10, 11, 12, 13, 14),
    # perinatal, congenital, symptoms, injuries, external causes, health factors, special codes
    "riverside": (15, 16, 17, 18, 19, 20, 21),
}


def demo_split(*, seed: int = 0) -> FederatedSplit:
    """The demo's three-hospital non-IID split of ICD-10-CM with a held-out test set."""
    return split_non_iid(load_icd10(), list(HOSPITALS.values()), names=list(HOSPITALS), seed=seed)


__all__ = ["HOSPITALS", "demo_split"]
