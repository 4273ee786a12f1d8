"""The text of the ``lm`` task: a public pre-training corpus, the hospitals' private text, a byte tokenizer.

Everything is real ICD-10-CM text from the ``simple-icd-10-cm`` package, so it ships offline:

- **public** (the base's pre-training corpus): the description of every *non-leaf* code, i.e.
  the hierarchy's chapters, blocks, categories and subcategories (23,769 lines). Every
  hospital may hold it; none of it is a billable diagnosis title.
- **private** (the hospitals'): the titles of the *leaf* (billable) codes, split by chapter
  between the hospitals of :data:`fedchain.tasks.icd.data.HOSPITALS` (a trauma centre, an
  orthopaedics and dermatology hospital, a general hospital), each with a held-out part.

Records are tokenized as UTF-8 bytes (ids 0-255) between a ``BOS`` and an ``EOS`` token, so
the vocabulary needs no corpus and no hub. Every random choice of a split is sha256 of the
seed and the record's code, as in :mod:`fedchain.tasks.icd.data`.

Local file format
-----------------
:func:`load_corpus` reads a UTF-8 file: ``.jsonl`` holds one JSON object per line with a
non-empty ``"text"`` string (other keys such as ``"label"`` are ignored, so a shard of the
``icd`` task loads as is); any other file holds one record per line. Blank lines are skipped.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fedchain.errors import DataError

logger = logging.getLogger(__name__)

#: Token ids: the 256 byte values, then the specials.
BOS, EOS, PAD = 256, 257, 258
#: Vocabulary size of the byte tokenizer.
VOCAB_SIZE = 259


@dataclass(frozen=True)
class Corpus:
    """Text records (one diagnosis title, say, per record).

    Attributes
    ----------
    name:
        Whose text it is (a hospital, ``public``, ``pooled``, or a file's stem).
    texts:
        The records, each a non-empty line.
    """

    name: str
    texts: tuple[str, ...]

    def __post_init__(self) -> None:
        for i, text in enumerate(self.texts):
            if not isinstance(text, str) or not text.strip() or "\n" in text:
                raise DataError(f"{self.name}: record {i} is not a non-empty single line of text")

    def __len__(self) -> int:
        return len(self.texts)

    def __repr__(self) -> str:
        return f"Corpus(name={self.name!r}, records={len(self)})"


@dataclass(frozen=True)
class Holding:
    """One participant's text: what it trains on and what it holds out."""

    name: str
    train: Corpus
    heldout: Corpus


@dataclass(frozen=True)
class Split:
    """The demo federation's text: one holding per participant."""

    holdings: tuple[Holding, ...]
    seed: int

    def pooled_heldout(self) -> Corpus:
        """Every participant's held-out text, in participant order."""
        return Corpus("pooled", tuple(t for h in self.holdings for t in h.heldout.texts))

    def pooled_train(self) -> Corpus:
        """Every participant's training text, in participant order (for centralized training)."""
        return Corpus("pooled-train", tuple(t for h in self.holdings for t in h.train.texts))


def encode(text: str, max_len: int) -> list[int]:
    """``[BOS] + utf-8 bytes + [EOS]``, the bytes cut so the whole is at most ``max_len`` tokens."""
    if max_len < 3:
        raise ValueError(f"max_len must be at least 3, got {max_len}")
    return [BOS, *text.encode("utf-8")[: max_len - 2], EOS]


def decode(ids: Sequence[int]) -> str:
    """The text of token ids (specials dropped, invalid UTF-8 replaced)."""
    return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


@functools.lru_cache(maxsize=1)
def _icd_text() -> tuple[tuple[str, ...], tuple[tuple[str, str, int], ...]]:
    """(non-leaf descriptions, (code, title, chapter index) of every leaf), in the package's order."""
    with warnings.catch_warnings():
        # the package reads its data through importlib.resources' legacy API, which warns
        warnings.simplefilter("ignore", DeprecationWarning)
        import simple_icd_10_cm as icd

    codes = icd.get_all_codes(with_dots=False)
    chapter_index = {c: i for i, c in enumerate(c for c in codes if icd.is_chapter(c))}
    public = tuple(icd.get_description(c) for c in codes if not icd.is_leaf(c))
    leaves = tuple(
        (c, icd.get_description(c), chapter_index[icd.get_ancestors(c)[-1]]) for c in codes if icd.is_leaf(c)
    )
    logger.debug("ICD-10-CM: %d public (non-leaf) lines, %d leaf titles", len(public), len(leaves))
    return public, leaves


def public_corpus() -> Corpus:
    """The base's pre-training text: every non-leaf ICD-10-CM description (23,769 lines)."""
    return Corpus("public", _icd_text()[0])


def _rank(seed: int, code: str) -> bytes:
    return hashlib.sha256(f"{seed}\x1flm\x1f{code}".encode()).digest()


def demo_split(
    num_participants: int,
    seed: int,
    *,
    train_records: int,
    heldout_records: int,
    hospitals: dict[str, tuple[int, ...]] | None = None,
) -> Split:
    """Leaf titles split by chapter between hospitals, each with a held-out part.

    Participant ``i`` belongs to hospital ``i % H`` (``H`` hospitals, three by default); a
    hospital with several participants (``num_participants > H``) divides its titles between
    them. Within a hospital, titles are ranked by sha256 of the seed and the code; each of its
    participants takes ``train_records`` then ``heldout_records`` titles in rank order.

    Raises
    ------
    DataError
        If ``num_participants`` is not in ``[1, 10]`` or a hospital has too few titles.
    """
    if hospitals is None:
        from fedchain.tasks.icd.data import HOSPITALS

        hospitals = HOSPITALS
    if not 1 <= num_participants <= 10:
        raise DataError(f"the lm demo supports 1 to 10 participants, not {num_participants}")
    names = list(hospitals)
    leaves = _icd_text()[1]
    pools: dict[str, list[tuple[str, str]]] = {}
    for name, chapters in hospitals.items():
        wanted = set(chapters)
        pool = [(code, title) for code, title, chapter in leaves if chapter in wanted]
        pools[name] = sorted(pool, key=lambda r: _rank(seed, r[0]))
    per = train_records + heldout_records
    holdings = []
    for i in range(num_participants):
        hospital = names[i % len(names)]
        j = i // len(names)
        part = pools[hospital][j * per : (j + 1) * per]
        if len(part) < per:
            raise DataError(f"hospital {hospital} has too few titles for participant {i} ({len(part)} < {per})")
        name = hospital if j == 0 else f"{hospital}-{j + 1}"
        holdings.append(
            Holding(
                name,
                Corpus(name, tuple(t for _, t in part[:train_records])),
                Corpus(f"{name}-heldout", tuple(t for _, t in part[train_records:])),
            )
        )
    return Split(tuple(holdings), seed)


def load_corpus(path: str | os.PathLike[str]) -> Corpus:
    """Read a participant's text from ``path`` (see the module docstring for the format).

    Raises
    ------
    DataError
        If the file cannot be read, a line is malformed, or it holds no record.
    """
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{p}: cannot read: {err}") from err
    texts = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if p.suffix == ".jsonl":
            try:
                obj = json.loads(line)
            except ValueError as err:
                raise DataError(f"{p}:{number}: not JSON: {err}") from err
            if not isinstance(obj, dict) or not isinstance(obj.get("text"), str) or not obj["text"].strip():
                raise DataError(f"{p}:{number}: expected an object with a non-empty string 'text'")
            texts.append(obj["text"])
        else:
            texts.append(line)
    if not texts:
        raise DataError(f"{p}: no records")
    return Corpus(p.stem, tuple(texts))


def export_corpus(corpus: Corpus, path: str | os.PathLike[str]) -> None:
    """Write ``corpus`` one record per line (UTF-8), the format :func:`load_corpus` reads."""
    Path(path).write_text("".join(f"{t}\n" for t in corpus.texts), encoding="utf-8")


__all__ = [
    "BOS",
    "EOS",
    "PAD",
    "VOCAB_SIZE",
    "Corpus",
    "Holding",
    "Split",
    "decode",
    "demo_split",
    "encode",
    "export_corpus",
    "load_corpus",
    "public_corpus",
]
