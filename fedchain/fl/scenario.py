"""The demo scenario: three hospitals, each holding most of the records of its specialty.

ICD-10-CM's injury chapter alone holds 55% of the leaf codes, so the trauma centre gets it
alone and the other chapters are shared so that the two other hospitals hold about as
many records each: about 31k, 16k and 17k training records, 11k held out for testing.
"""

from __future__ import annotations

from fedchain.fl.data import FederatedSplit, load_icd10, split_non_iid
from fedchain.fl.model import ModelSpec
from fedchain.fl.strategy import FedAvg
from fedchain.fl.train import TrainConfig

#: Hospital names and the chapters (0-based labels: chapter 1 is label 0) they specialise in.
HOSPITALS: dict[str, tuple[int, ...]] = {
    # a trauma centre: injury, poisoning and other consequences of external causes (XIX)
    "st-mary": (18,),
    # orthopaedics, dermatology and accident follow-up: skin (XII), musculoskeletal (XIII),
    # congenital malformations (XVII), external causes of morbidity (XX)
    "northgate": (11, 12, 16, 19),
    # a general hospital: every other chapter (medicine, oncology, maternity, eye and ear, ...)
    "riverside": (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 13, 14, 15, 17, 20, 21),
}

#: The demo's root seed (split, genesis model, local training).
DEMO_SEED = 0
#: The demo's number of rounds.
DEMO_ROUNDS = 5
#: The demo's model: 16,384 buckets x 16 dimensions, 262,518 parameters, 1.05 MB per blob.
DEFAULT_SPEC = ModelSpec()
#: The demo's local training: one epoch of SGD, lr 8, batches of 32.
DEFAULT_TRAIN = TrainConfig()


def default_strategy() -> FedAvg:
    """The demo's strategy: plain FedAvg (server learning rate 1)."""
    return FedAvg()


def demo_split(*, seed: int = DEMO_SEED) -> FederatedSplit:
    """The demo's three-hospital split of ICD-10-CM: 80% of a specialty's training records
    go to its hospital, the rest are dealt to the others; 15% of every chapter is held out."""
    return split_non_iid(load_icd10(), list(HOSPITALS.values()), names=list(HOSPITALS), seed=seed)


__all__ = ["DEFAULT_SPEC", "DEFAULT_TRAIN", "DEMO_ROUNDS", "DEMO_SEED", "HOSPITALS", "default_strategy", "demo_split"]
