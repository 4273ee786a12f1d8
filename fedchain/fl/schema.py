"""The tensor schema: which named tensors a federation exchanges, with their shapes and dtype.

Fixed by the federation manifest at deployment; the codec, the aggregation and every verifier
check blobs against it and know nothing else about the model. numpy only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

#: The only dtype the codec moves today (``fedchain/f32-v1``).
FLOAT32 = "float32"

#: Arrays as they cross the protocol: float32, C-contiguous, keyed by tensor name.
Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class TensorSpec:
    """One exchanged tensor: its name, shape and dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: str = FLOAT32

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or self.name.startswith("__") or not self.name.isascii():
            raise ValueError(f"tensor name {self.name!r} is not a plain ASCII name")
        if not isinstance(self.shape, tuple) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in self.shape
        ):
            raise ValueError(f"tensor {self.name!r}: shape {self.shape!r} is not a tuple of non-negative ints")
        if self.dtype != FLOAT32:
            raise ValueError(f"tensor {self.name!r}: dtype {self.dtype!r} is not supported (only {FLOAT32})")

    @property
    def size(self) -> int:
        """Number of elements."""
        return math.prod(self.shape)


@dataclass(frozen=True)
class Schema:
    """The exchanged tensors, sorted by name (the order of a blob's data)."""

    tensors: tuple[TensorSpec, ...]

    def __post_init__(self) -> None:
        names = [t.name for t in self.tensors]
        if names != sorted(names):
            object.__setattr__(self, "tensors", tuple(sorted(self.tensors, key=lambda t: t.name)))
        if len(set(names)) != len(names):
            raise ValueError("a tensor name appears twice in the schema")
        if not self.tensors:
            raise ValueError("a schema needs at least one tensor")

    @classmethod
    def of(cls, arrays: Mapping[str, np.ndarray]) -> Schema:
        """The schema of ``arrays`` (float32 each)."""
        return cls(
            tuple(TensorSpec(n, tuple(int(d) for d in a.shape), str(np.dtype(a.dtype))) for n, a in arrays.items())
        )

    @classmethod
    def from_shapes(cls, shapes: Mapping[str, Iterable[int]]) -> Schema:
        return cls(tuple(TensorSpec(n, tuple(int(d) for d in s)) for n, s in shapes.items()))

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Name to shape, sorted by name."""
        return {t.name: t.shape for t in self.tensors}

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tensors)

    @property
    def size(self) -> int:
        """Elements in all tensors."""
        return sum(t.size for t in self.tensors)

    @property
    def nbytes(self) -> int:
        """Bytes of tensor data in a blob of this schema."""
        return 4 * self.size

    def to_json(self) -> list[dict[str, object]]:
        return [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype} for t in self.tensors]

    @classmethod
    def from_json(cls, data: object) -> Schema:
        if not isinstance(data, list):
            raise TypeError("schema must be a list of {name, shape, dtype}")
        out = []
        for entry in data:
            if not isinstance(entry, dict) or set(entry) != {"name", "shape", "dtype"}:
                raise ValueError(f"schema entry {entry!r} must have exactly name, shape and dtype")
            shape = entry["shape"]
            if not isinstance(shape, list):
                raise TypeError(f"schema entry {entry['name']!r}: shape must be a list")
            out.append(TensorSpec(entry["name"], tuple(shape), entry["dtype"]))
        return cls(tuple(out))


__all__ = ["FLOAT32", "Arrays", "Schema", "TensorSpec"]
