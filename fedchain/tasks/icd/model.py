"""A small, fast text classifier: hashed word n-grams into a mean embedding bag.

A text is lower-cased, split into words (runs of ``[a-z0-9]``), and every word n-gram
up to :attr:`ModelSpec.ngram` is hashed into one of :attr:`ModelSpec.num_buckets`
buckets with CRC-32 (stable across processes and machines, unlike Python's salted
``hash``). The model averages the buckets' embeddings and applies one linear layer:
fastText's architecture, which trains in seconds on a CPU.

Parameters are exchanged as float32 numpy arrays named as in :func:`param_shapes`; the
``torch.nn.Module`` never leaves this package's training code. The model has no buffers.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor, nn

from fedchain.errors import CodecError
from fedchain.tasks._seeds import derive_seed

logger = logging.getLogger(__name__)

#: Names of the model's tensors, in canonical (sorted) order.
PARAM_NAMES = ("embedding.weight", "fc.bias", "fc.weight")

_WORD = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True)
class ModelSpec:
    """The shape of a model; everything needed to rebuild it besides its parameters.

    Attributes
    ----------
    num_buckets:
        Hash buckets (rows of the embedding table).
    dim:
        Embedding width.
    num_classes:
        Output classes.
    ngram:
        Longest word n-gram hashed (1 = words only, 2 = words and word pairs).
    """

    num_buckets: int = 1 << 14
    dim: int = 16
    num_classes: int = 22
    ngram: int = 2

    def __post_init__(self) -> None:
        for field in ("num_buckets", "dim", "num_classes", "ngram"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ModelSpec.{field} must be a positive int, got {value!r}")
        if self.num_classes < 2:
            raise ValueError(f"ModelSpec.num_classes must be at least 2, got {self.num_classes}")

    @property
    def num_parameters(self) -> int:
        """Scalar parameters in the model."""
        return self.num_buckets * self.dim + self.dim * self.num_classes + self.num_classes

    @classmethod
    def sized(cls, num_parameters: int, *, dim: int = 16, num_classes: int = 22, ngram: int = 2) -> ModelSpec:
        """The spec of width ``dim`` whose bucket count brings it closest to ``num_parameters``."""
        head = dim * num_classes + num_classes
        return cls(
            num_buckets=max(1, round((num_parameters - head) / dim)), dim=dim, num_classes=num_classes, ngram=ngram
        )

    def to_json(self) -> str:
        """Canonical JSON: sorted keys, no spaces (what a model blob's header carries)."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        """Parse :meth:`to_json` output.

        Raises
        ------
        CodecError
            ``spec``: not the canonical JSON of a valid spec.
        """
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError) as err:
            raise CodecError("spec", f"model spec is not JSON: {err}") from err
        if not isinstance(obj, dict) or set(obj) != {"num_buckets", "dim", "num_classes", "ngram"}:
            raise CodecError(
                "spec", f"model spec must have exactly num_buckets, dim, num_classes, ngram: {text[:200]!r}"
            )
        try:
            spec = cls(**obj)
        except (TypeError, ValueError) as err:
            raise CodecError("spec", str(err)) from err
        if spec.to_json() != text:
            raise CodecError("spec", f"model spec is not in canonical form: {text[:200]!r}")
        return spec


def param_shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """The name and shape of every parameter of a model of ``spec``, sorted by name."""
    return {
        "embedding.weight": (spec.num_buckets, spec.dim),
        "fc.bias": (spec.num_classes,),
        "fc.weight": (spec.num_classes, spec.dim),
    }


def blob_data_size(spec: ModelSpec) -> int:
    """Bytes of tensor data in an encoded model or update of ``spec`` (float32)."""
    return 4 * spec.num_parameters


def init_params(spec: ModelSpec, seed: int) -> dict[str, Tensor]:
    """Fresh parameters for ``spec``, a pure function of ``(spec, seed)``.

    Embeddings are uniform in ``±1/dim`` and the linear layer uniform in ``±1/sqrt(dim)``
    (bias zero), drawn from a ``torch.Generator`` seeded with ``seed``.
    """
    gen = torch.Generator().manual_seed(seed)
    emb = torch.empty(spec.num_buckets, spec.dim).uniform_(-1.0 / spec.dim, 1.0 / spec.dim, generator=gen)
    bound = 1.0 / spec.dim**0.5
    fc = torch.empty(spec.num_classes, spec.dim).uniform_(-bound, bound, generator=gen)
    return {"embedding.weight": emb, "fc.bias": torch.zeros(spec.num_classes), "fc.weight": fc}


class TextClassifier(nn.Module):
    """Mean of hashed n-gram embeddings, then a linear layer (fastText)."""

    def __init__(self, spec: ModelSpec, *, sparse: bool = True) -> None:
        super().__init__()
        self.spec = spec
        # sparse gradients: a batch touches a few hundred rows, not num_buckets of them
        # (DP-SGD needs dense ones: Opacus computes a dense per-sample gradient anyway)
        self.embedding = nn.EmbeddingBag(spec.num_buckets, spec.dim, mode="mean", sparse=sparse)
        self.fc = nn.Linear(spec.dim, spec.num_classes)

    def forward(self, ids: Tensor, offsets: Tensor) -> Tensor:
        """Logits for a batch given as flat bucket ids and each text's start offset."""
        out: Tensor = self.fc(self.embedding(ids, offsets))
        return out


def build_model(spec: ModelSpec, params: Mapping[str, Tensor], *, sparse: bool = True) -> TextClassifier:
    """A :class:`TextClassifier` holding a copy of ``params`` (torch tensors).

    Raises
    ------
    CodecError
        ``shape``: ``params`` does not fit ``spec``.
    """
    check_params(spec, params)
    model = TextClassifier(spec, sparse=sparse)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(params[name])
    return model


def model_params(model: nn.Module) -> dict[str, Tensor]:
    """A detached float32 copy of ``model``'s parameters, sorted by name."""
    return {name: p.detach().to(torch.float32).clone() for name, p in sorted(model.named_parameters())}


def check_params(spec: ModelSpec, params: Mapping[str, Tensor]) -> None:
    """Check that ``params`` has exactly the tensors of ``spec`` with the right shapes.

    Raises
    ------
    CodecError
        ``missing-tensor``, ``unexpected-tensor`` or ``shape``.
    """
    expected = param_shapes(spec)
    for name in expected:
        if name not in params:
            raise CodecError("missing-tensor", f"tensor {name!r} is missing")
    for name, t in params.items():
        if name not in expected:
            raise CodecError("unexpected-tensor", f"tensor {name!r} is not a parameter of the model")
        if tuple(t.shape) != expected[name]:
            raise CodecError("shape", f"tensor {name!r} has shape {tuple(t.shape)}, expected {expected[name]}")


# --------------------------------------------------------------------------- features


@dataclass(frozen=True)
class Features:
    """Texts turned into bucket ids, ready for :class:`TextClassifier`.

    Attributes
    ----------
    ids:
        Every text's bucket ids, concatenated (int64).
    starts:
        Where each text's ids begin in ``ids`` (int64, one per text).
    lengths:
        How many ids each text has (int64, one per text).
    labels:
        One class index per text (int64).
    """

    ids: np.ndarray
    starts: np.ndarray
    lengths: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.starts)

    def batch(self, rows: np.ndarray) -> tuple[Tensor, Tensor, Tensor]:
        """``(ids, offsets, labels)`` tensors for the texts at ``rows``."""
        lens = self.lengths[rows]
        offsets = np.cumsum(lens) - lens
        flat = (
            np.arange(int(lens.sum()), dtype=np.int64) - np.repeat(offsets, lens) + np.repeat(self.starts[rows], lens)
        )
        return torch.from_numpy(self.ids[flat]), torch.from_numpy(offsets), torch.from_numpy(self.labels[rows])


def text_buckets(text: str, spec: ModelSpec) -> list[int]:
    """The bucket id of every word n-gram of ``text`` (words first, then pairs, ...)."""
    words = _WORD.findall(text.lower())
    grams = list(words)
    for n in range(2, spec.ngram + 1):
        grams.extend(" ".join(words[i : i + n]) for i in range(len(words) - n + 1))
    return [zlib.crc32(g.encode()) % spec.num_buckets for g in grams]


def featurize(texts: Sequence[str], labels: Sequence[int], spec: ModelSpec) -> Features:
    """Hash ``texts`` into bucket ids for a model of ``spec``.

    Results for tuples (e.g. a :class:`~fedchain.tasks.icd.data.Dataset`'s fields) are cached,
    since a participant featurizes the same shard every round.
    """
    if isinstance(texts, tuple) and isinstance(labels, tuple):
        return _featurize_cached(texts, labels, spec.num_buckets, spec.ngram)
    return _featurize(texts, labels, spec)


@functools.lru_cache(maxsize=8)
def _featurize_cached(texts: tuple[str, ...], labels: tuple[int, ...], num_buckets: int, ngram: int) -> Features:
    return _featurize(texts, labels, ModelSpec(num_buckets=num_buckets, ngram=ngram))


def _featurize(texts: Sequence[str], labels: Sequence[int], spec: ModelSpec) -> Features:
    per_text = [text_buckets(t, spec) for t in texts]
    lengths = np.fromiter((len(b) for b in per_text), dtype=np.int64, count=len(per_text))
    starts = np.cumsum(lengths) - lengths
    ids = np.fromiter((i for b in per_text for i in b), dtype=np.int64, count=int(lengths.sum()))
    features = Features(ids=ids, starts=starts, lengths=lengths, labels=np.asarray(labels, dtype=np.int64))
    features.ids.flags.writeable = False
    return features


__all__ = [
    "PARAM_NAMES",
    "Features",
    "ModelSpec",
    "TextClassifier",
    "blob_data_size",
    "build_model",
    "check_params",
    "derive_seed",
    "featurize",
    "init_params",
    "model_params",
    "param_shapes",
    "text_buckets",
]
