"""The ICD-10-CM dataset, the non-IID hospital split of the demo, and the local shard file format.

The running example is three hospitals that each hold medical text they cannot share.
The text is real and ships offline: the ICD-10-CM diagnosis titles of the
``simple-icd-10-cm`` package, one record per leaf (billable) code, labelled with the
code's chapter (22 classes).

Every random choice is derived from sha256 of the seed and the record's ICD code, so a
split is identical on every machine and with every numpy version.

Local shard format
------------------
A participant on another machine loads its own records from a UTF-8 JSON Lines file,
one object per line with exactly two keys::

    {"text": "Cholera due to Vibrio cholerae 01, biovar cholerae", "label": "Certain infectious and parasitic diseases (A00-B99)"}

``text`` is a non-empty string; ``label`` is the class *name*, exactly one of the
dataset's label names (names survive a reordering of classes, integers would not).
Blank lines are skipped. Anything else is a :class:`~fedchain.errors.DataError`
naming the file, the line and the problem.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fedchain.errors import DataError

logger = logging.getLogger(__name__)

#: The ICD-10-CM chapters in order; a record's label is the index into this tuple
#: (chapter 1 is label 0).
ICD10_NUM_CHAPTERS = 22


def _data_error(problem: str, *, source: str | None = None, line: int | None = None) -> DataError:
    where = (
        f"{source}:{line}: " if source is not None and line is not None else f"{source}: " if source is not None else ""
    )
    return DataError(f"{where}{problem}")


@dataclass(frozen=True)
class Dataset:
    """Labelled texts.

    Attributes
    ----------
    name:
        What the records are (``icd10cm``, ``test``, or a participant's name for a shard).
    texts:
        The inputs.
    labels:
        One class index per text, ``0 <= label < len(label_names)``.
    label_names:
        The class names, indexed by label.
    """

    name: str
    texts: tuple[str, ...]
    labels: tuple[int, ...]
    label_names: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise _data_error(f"{len(self.texts)} texts but {len(self.labels)} labels", source=self.name)
        if self.labels and not 0 <= min(self.labels) <= max(self.labels) < len(self.label_names):
            raise _data_error(f"labels must lie in [0, {len(self.label_names)})", source=self.name)

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def num_classes(self) -> int:
        """The number of classes (``len(label_names)``)."""
        return len(self.label_names)

    def label_counts(self) -> tuple[int, ...]:
        """Records per class, indexed by label."""
        counts = Counter(self.labels)
        return tuple(counts.get(i, 0) for i in range(self.num_classes))

    def __repr__(self) -> str:
        return f"Dataset(name={self.name!r}, records={len(self)}, classes={self.num_classes})"


@dataclass(frozen=True)
class FederatedSplit:
    """Per-participant training shards and a held-out test set no participant trains on.

    Attributes
    ----------
    shards:
        One dataset per participant, each named for its participant, in participant order.
    test:
        The held-out test set.
    seed:
        The seed the split was drawn with.
    """

    shards: tuple[Dataset, ...]
    test: Dataset
    seed: int

    @property
    def names(self) -> tuple[str, ...]:
        """The participants' names, in participant order."""
        return tuple(s.name for s in self.shards)

    def shard(self, name: str) -> Dataset:
        """Return the shard of participant ``name``.

        Raises
        ------
        DataError
            If no participant has that name.
        """
        for s in self.shards:
            if s.name == name:
                return s
        raise _data_error(f"no shard named {name!r} (have {', '.join(self.names)})")

    def pooled(self) -> Dataset:
        """All training shards concatenated in participant order (for centralized training)."""
        return Dataset(
            name="pooled",
            texts=tuple(t for s in self.shards for t in s.texts),
            labels=tuple(y for s in self.shards for y in s.labels),
            label_names=self.test.label_names,
        )


# --------------------------------------------------------------------------- ICD-10-CM


@functools.lru_cache(maxsize=1)
def _icd10_records() -> tuple[tuple[tuple[str, str, int], ...], tuple[str, ...]]:
    """(code, title, chapter index) of every leaf code, in the package's code order."""
    # simple_icd_10_cm reads its data through importlib.resources' legacy API, which
    # warns at import time; the warning is about the package, not about us.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import simple_icd_10_cm as icd

    codes = icd.get_all_codes(with_dots=False)
    chapters = [c for c in codes if icd.is_chapter(c)]
    chapter_index = {c: i for i, c in enumerate(chapters)}
    if len(chapters) != ICD10_NUM_CHAPTERS:
        raise _data_error(
            f"expected {ICD10_NUM_CHAPTERS} ICD-10-CM chapters, found {len(chapters)}", source="simple_icd_10_cm"
        )
    records = tuple(
        (code, icd.get_description(code), chapter_index[icd.get_ancestors(code)[-1]])
        for code in codes
        if icd.is_leaf(code)
    )
    names = tuple(icd.get_description(c) for c in chapters)
    logger.debug("loaded %d ICD-10-CM leaf codes in %d chapters", len(records), len(names))
    return records, names


def load_icd10() -> Dataset:
    """Load every ICD-10-CM leaf code's title, labelled with its chapter.

    The order is the package's code order, so the dataset is the same on every machine
    with the same ``simple-icd-10-cm`` release. The first call takes about two seconds
    (the package parses its XML); later calls are cached.

    Returns
    -------
    Dataset
        ``name="icd10cm"``, about 74,700 records, 22 classes named by chapter title.
    """
    records, names = _icd10_records()
    return Dataset(
        name="icd10cm",
        texts=tuple(r[1] for r in records),
        labels=tuple(r[2] for r in records),
        label_names=names,
    )


def icd10_codes() -> tuple[str, ...]:
    """The ICD-10-CM code of each record of :func:`load_icd10`, in the same order."""
    return tuple(r[0] for r in _icd10_records()[0])


# --------------------------------------------------------------------------- splitting


def _rank_key(seed: int, purpose: str, index: int, text: str) -> bytes:
    # The key names the record by its position and content, so the draw is a pure
    # function of (seed, record) and needs no RNG whose stream could change.
    return hashlib.sha256(f"{seed}\x1f{purpose}\x1f{index}\x1f{text}".encode()).digest()


def split_non_iid(
    dataset: Dataset,
    groups: Sequence[Sequence[int]],
    *,
    names: Sequence[str] | None = None,
    seed: int = 0,
    test_fraction: float = 0.15,
    home_share: float = 0.8,
) -> FederatedSplit:
    """Split ``dataset`` into a stratified test set and one skewed shard per participant.

    First ``round(test_fraction * n_c)`` records of every class ``c`` go to the test set.
    Of the remaining records of a class that belongs to participant ``p``'s group,
    ``round(home_share * m_c)`` go to ``p`` and the rest are dealt round-robin to the
    other participants; classes in no group are dealt round-robin to everyone. Which
    records are chosen is decided by sha256 of the seed and the record, so the split
    is deterministic and machine-independent.

    Parameters
    ----------
    dataset:
        The records to split.
    groups:
        One group of class indices per participant (its "specialty"); groups are disjoint.
    names:
        The participants' names; ``participant-0``, ``participant-1``, ... by default.
    seed:
        Decides which records are drawn.
    test_fraction:
        Share of each class held out for testing, in ``[0, 1)``.
    home_share:
        Share of a group's training records that its participant holds, in ``[0, 1]``.

    Returns
    -------
    FederatedSplit

    Raises
    ------
    DataError
        If the groups, names or fractions are inconsistent.
    """
    n_participants = len(groups)
    if n_participants < 1:
        raise _data_error("at least one participant group is needed")
    if not 0.0 <= test_fraction < 1.0:
        raise _data_error(f"test_fraction must be in [0, 1), got {test_fraction}")
    if not 0.0 <= home_share <= 1.0:
        raise _data_error(f"home_share must be in [0, 1], got {home_share}")
    names = tuple(names) if names is not None else tuple(f"participant-{i}" for i in range(n_participants))
    if len(names) != n_participants or len(set(names)) != n_participants:
        raise _data_error(f"need {n_participants} distinct participant names, got {list(names)}")
    home: dict[int, int] = {}
    for p, group in enumerate(groups):
        for c in group:
            if not 0 <= c < dataset.num_classes:
                raise _data_error(f"group {names[p]!r} names class {c}, but there are {dataset.num_classes} classes")
            if c in home:
                raise _data_error(f"class {c} is in the groups of both {names[home[c]]!r} and {names[p]!r}")
            home[c] = p

    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(dataset.labels):
        by_class.setdefault(y, []).append(i)

    test_idx: list[int] = []
    shard_idx: list[list[int]] = [[] for _ in range(n_participants)]
    for c in sorted(by_class):
        members = sorted(by_class[c], key=lambda i: _rank_key(seed, "test", i, dataset.texts[i]))
        n_test = round(test_fraction * len(members))
        test_idx.extend(members[:n_test])
        train = sorted(members[n_test:], key=lambda i: _rank_key(seed, "assign", i, dataset.texts[i]))
        if c in home and n_participants > 1:
            owner = home[c]
            n_home = round(home_share * len(train))
            shard_idx[owner].extend(train[:n_home])
            others = [p for p in range(n_participants) if p != owner]
            for j, i in enumerate(train[n_home:]):
                shard_idx[others[j % len(others)]].append(i)
        else:
            for j, i in enumerate(train):
                shard_idx[j % n_participants].append(i)

    def subset(name: str, idx: list[int]) -> Dataset:
        idx = sorted(idx)  # keep the dataset's order inside every part
        return Dataset(
            name=name,
            texts=tuple(dataset.texts[i] for i in idx),
            labels=tuple(dataset.labels[i] for i in idx),
            label_names=dataset.label_names,
        )

    split = FederatedSplit(
        shards=tuple(subset(names[p], shard_idx[p]) for p in range(n_participants)),
        test=subset("test", test_idx),
        seed=seed,
    )
    logger.debug("split %d records: test %d, shards %s", len(dataset), len(split.test), [len(s) for s in split.shards])
    return split


def majority_accuracy(train: Dataset, test: Dataset) -> float:
    """Test accuracy of always predicting the most frequent training class.

    Raises
    ------
    DataError
        If either dataset is empty.
    """
    if len(train) == 0 or len(test) == 0:
        raise _data_error("majority baseline needs non-empty training and test data")
    counts = train.label_counts()
    majority = max(range(len(counts)), key=lambda c: (counts[c], -c))
    return sum(1 for y in test.labels if y == majority) / len(test)


# --------------------------------------------------------------------------- shard files


def export_shard(shard: Dataset, path: str | os.PathLike[str]) -> None:
    """Write ``shard`` as JSON Lines in the local shard format (see the module docstring).

    The file is written to a temporary name and renamed, so a reader never sees half a file.
    """
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    with tmp.open("w", encoding="utf-8", newline="\n") as out:
        for text, label in zip(shard.texts, shard.labels, strict=True):
            out.write(json.dumps({"text": text, "label": shard.label_names[label]}, ensure_ascii=False))
            out.write("\n")
    tmp.replace(target)


def load_shard(path: str | os.PathLike[str], label_names: Sequence[str], *, name: str | None = None) -> Dataset:
    """Read a participant's local records from a JSON Lines file.

    Parameters
    ----------
    path:
        The file, in the local shard format (see the module docstring).
    label_names:
        The federation's class names; each record's ``label`` must be one of them.
    name:
        The dataset's name; the file's stem by default.

    Returns
    -------
    Dataset

    Raises
    ------
    DataError
        If the file cannot be read, a line is not a well-formed record (naming the line),
        or the file holds no record.
    """
    source = os.fspath(path)
    index = {n: i for i, n in enumerate(label_names)}
    texts: list[str] = []
    labels: list[int] = []
    try:
        with open(source, "rb") as stream:
            for lineno, raw in enumerate(stream, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise _data_error(
                        f"not UTF-8 ({err.reason} at byte {err.start})", source=source, line=lineno
                    ) from err
                if not line.strip():
                    continue
                text, label = _parse_record(line, index, source, lineno)
                texts.append(text)
                labels.append(label)
    except OSError as err:
        raise _data_error(f"cannot read: {err.strerror or err}", source=source) from err
    if not texts:
        raise _data_error("holds no records", source=source)
    return Dataset(
        name=name if name is not None else Path(source).stem,
        texts=tuple(texts),
        labels=tuple(labels),
        label_names=tuple(label_names),
    )


def _parse_record(line: str, index: dict[str, int], source: str, lineno: int) -> tuple[str, int]:
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError) as err:
        raise _data_error(f"not valid JSON ({err})", source=source, line=lineno) from err
    if not isinstance(obj, dict):
        raise _data_error(f"expected a JSON object, got {type(obj).__name__}", source=source, line=lineno)
    extra = sorted(set(obj) - {"text", "label"})
    if extra:
        raise _data_error(
            f"unknown key(s) {', '.join(map(repr, extra))}; a record has exactly 'text' and 'label'",
            source=source,
            line=lineno,
        )
    for key in ("text", "label"):
        if key not in obj:
            raise _data_error(f"missing key {key!r}", source=source, line=lineno)
    text, label = obj["text"], obj["label"]
    if not isinstance(text, str) or not text.strip():
        raise _data_error("'text' must be a non-empty string", source=source, line=lineno)
    if not isinstance(label, str):
        raise _data_error(
            f"'label' must be a class name (string), got {type(label).__name__}", source=source, line=lineno
        )
    if label not in index:
        raise _data_error(f"unknown label {label[:80]!r}", source=source, line=lineno)
    return text, index[label]


# --------------------------------------------------------------------------- the demo scenario

#: Hospital names and the chapters (0-based labels: chapter 1 is label 0) they specialise in.
#: ICD-10-CM's injury chapter alone holds 55% of the leaf codes, so the trauma centre gets it
#: alone and the other chapters are shared so that the two other hospitals hold about as many
#: records each: about 31k, 16k and 17k training records, 11k held out for testing.
HOSPITALS: dict[str, tuple[int, ...]] = {
    # a trauma centre: injury, poisoning and other consequences of external causes (XIX)
    "st-mary": (18,),
    # orthopaedics, dermatology and accident follow-up: skin (XII), musculoskeletal (XIII),
    # congenital malformations (XVII), external causes of morbidity (XX)
    "northgate": (11, 12, 16, 19),
    # a general hospital: every other chapter (medicine, oncology, maternity, eye and ear, ...)
    "riverside": (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 13, 14, 15, 17, 20, 21),
}


def demo_split(*, seed: int = 0) -> FederatedSplit:
    """The demo's three-hospital split of ICD-10-CM: 80% of a specialty's training records
    go to its hospital, the rest are dealt to the others; 15% of every chapter is held out."""
    return split_non_iid(load_icd10(), list(HOSPITALS.values()), names=list(HOSPITALS), seed=seed)


def icd10_label_names() -> tuple[str, ...]:
    """The 22 ICD-10-CM chapter titles, indexed by label."""
    return _icd10_records()[1]


__all__ = [
    "HOSPITALS",
    "ICD10_NUM_CHAPTERS",
    "Dataset",
    "FederatedSplit",
    "demo_split",
    "export_shard",
    "icd10_codes",
    "icd10_label_names",
    "load_icd10",
    "load_shard",
    "majority_accuracy",
    "split_non_iid",
]
