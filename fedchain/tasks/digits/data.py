"""scikit-learn's digits (1,797 8x8 images, 10 classes, shipped with the package), a Dirichlet split, shard files.

Shard format
------------
A participant's records are a numpy ``.npz`` file holding exactly two arrays: ``x``, float32
of shape ``(n, 8, 8)`` with pixel values in ``[0, 16]`` (scikit-learn's scale), and ``y``,
int64 of shape ``(n,)`` with labels in ``[0, 10)``; ``n >= 1``. Written without pickles and
read with ``allow_pickle=False``.
"""

from __future__ import annotations

import functools
import logging
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedchain.errors import DataError
from fedchain.tasks._seeds import derive_seed

logger = logging.getLogger(__name__)

NUM_CLASSES = 10
IMAGE_SHAPE = (8, 8)


@dataclass(frozen=True, eq=False)
class DigitsData:
    """Images and labels.

    Attributes
    ----------
    name:
        A participant's name, ``test``, ``pooled``, ...
    x:
        float32 ``(n, 8, 8)``, pixels in ``[0, 16]``.
    y:
        int64 ``(n,)``, labels in ``[0, 10)``.
    """

    name: str
    x: np.ndarray
    y: np.ndarray

    def __post_init__(self) -> None:
        if self.x.dtype != np.float32 or self.x.ndim != 3 or tuple(self.x.shape[1:]) != IMAGE_SHAPE:
            raise DataError(f"{self.name}: x must be float32 of shape (n, 8, 8), got {self.x.dtype} {self.x.shape}")
        if self.y.dtype != np.int64 or self.y.shape != (self.x.shape[0],):
            raise DataError(
                f"{self.name}: y must be int64 of shape ({self.x.shape[0]},), got {self.y.dtype} {self.y.shape}"
            )
        if self.y.size and not (0 <= int(self.y.min()) and int(self.y.max()) < NUM_CLASSES):
            raise DataError(f"{self.name}: labels must lie in [0, {NUM_CLASSES})")
        if not np.all(np.isfinite(self.x)):
            raise DataError(f"{self.name}: pixels must be finite")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def label_counts(self) -> tuple[int, ...]:
        """Records per class."""
        return tuple(int(c) for c in np.bincount(self.y, minlength=NUM_CLASSES))

    def __repr__(self) -> str:
        return f"DigitsData(name={self.name!r}, records={len(self)})"


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = np.ascontiguousarray(bunch.images, dtype=np.float32)
    y = np.ascontiguousarray(bunch.target, dtype=np.int64)
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


def load_digits_data() -> DigitsData:
    """All 1,797 images of scikit-learn's ``load_digits``, in its order."""
    x, y = _digits()
    return DigitsData("digits", x, y)


def _subset(data: DigitsData, name: str, idx: np.ndarray) -> DigitsData:
    idx = np.sort(idx)
    return DigitsData(name, np.ascontiguousarray(data.x[idx]), np.ascontiguousarray(data.y[idx]))


def dirichlet_split(
    data: DigitsData,
    names: Sequence[str],
    *,
    seed: int,
    alpha: float = 0.5,
    test_fraction: float = 0.2,
    min_records: int = 10,
) -> tuple[list[DigitsData], DigitsData]:
    """A stratified test set, then each class's records dealt to participants in Dirichlet(alpha) shares.

    For every class, proportions over the participants are drawn from ``Dirichlet(alpha, ..., alpha)``
    (numpy's PCG64 seeded with ``derive_seed(seed, "digits-split", attempt)``); the whole draw is
    repeated until every participant holds at least ``min_records`` records. Smaller ``alpha``
    is more skewed.

    Returns
    -------
    (shards, test)
        One dataset per name, in the given order, and the held-out test set.

    Raises
    ------
    DataError
        If the arguments are inconsistent or no draw in 100 attempts gives everyone ``min_records``.
    """
    if len(names) < 1 or len(set(names)) != len(names):
        raise DataError(f"need distinct participant names, got {list(names)}")
    if not alpha > 0:
        raise DataError(f"alpha must be positive, got {alpha}")
    if not 0 < test_fraction < 1:
        raise DataError(f"test_fraction must be in (0, 1), got {test_fraction}")
    k = len(names)
    rng = np.random.Generator(np.random.PCG64(derive_seed(seed, "digits-test")))
    test_idx: list[np.ndarray] = []
    train_by_class: list[np.ndarray] = []
    for c in range(NUM_CLASSES):
        members = rng.permutation(np.flatnonzero(data.y == c))
        n_test = round(test_fraction * len(members))
        test_idx.append(members[:n_test])
        train_by_class.append(members[n_test:])
    for attempt in range(100):
        draw = np.random.Generator(np.random.PCG64(derive_seed(seed, "digits-split", attempt)))
        parts: list[list[np.ndarray]] = [[] for _ in range(k)]
        for members in train_by_class:
            shares = draw.dirichlet(np.full(k, alpha))
            cuts = np.round(np.cumsum(shares)[:-1] * len(members)).astype(np.int64)
            for p, chunk in enumerate(np.split(members, cuts)):
                parts[p].append(chunk)
        sizes = [sum(len(c) for c in part) for part in parts]
        if min(sizes) >= min_records:
            shards = [_subset(data, names[p], np.concatenate(parts[p])) for p in range(k)]
            logger.debug("dirichlet split (alpha %s, attempt %d): %s", alpha, attempt, sizes)
            return shards, _subset(data, "test", np.concatenate(test_idx))
    raise DataError(f"no Dirichlet({alpha}) split over {k} participants gave each {min_records} records in 100 draws")


def export_shard(data: DigitsData, path: str | os.PathLike[str]) -> None:
    """Write ``data`` as an ``.npz`` shard (see the module docstring), via a temporary name and a rename."""
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    with tmp.open("wb") as out:
        np.savez(out, x=data.x, y=data.y)
    tmp.replace(target)


def load_shard(path: str | os.PathLike[str], *, name: str | None = None) -> DigitsData:
    """Read a participant's ``.npz`` shard.

    Raises
    ------
    DataError
        If the file cannot be read, is not an ``.npz`` of exactly ``x`` and ``y`` of the
        documented dtypes and shapes, or holds no record.
    """
    source = os.fspath(path)
    try:
        with np.load(source, allow_pickle=False) as npz:
            keys = sorted(npz.files)
            if keys != ["x", "y"]:
                raise DataError(f"{source}: an .npz shard holds exactly arrays 'x' and 'y', found {keys}")
            x, y = npz["x"], npz["y"]
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise DataError(f"{source}: cannot read as an .npz shard: {err}") from err
    data = DigitsData(name if name is not None else Path(source).stem, x, y)
    if len(data) == 0:
        raise DataError(f"{source}: holds no records")
    return data


__all__ = [
    "IMAGE_SHAPE",
    "NUM_CLASSES",
    "DigitsData",
    "dirichlet_split",
    "export_shard",
    "load_digits_data",
    "load_shard",
]
