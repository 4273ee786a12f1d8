"""A strict reader and a canonical writer for the safetensors container.

The format (https://github.com/huggingface/safetensors): an 8-byte little-endian
header length ``N``, ``N`` bytes of JSON header, then the raw tensor data. The header
maps each tensor name to ``{"dtype", "shape", "data_offsets": [start, end]}`` (offsets
relative to the data section) and may hold ``"__metadata__"``, a string-to-string map.

We write the header ourselves because the ``safetensors`` library's serializer keeps
metadata in a hash map, so its key order, and therefore the bytes and the hash, vary
from run to run. Our header is the JSON of the header object with every key sorted
(``__metadata__`` sorts before any lower-case name), no whitespace, ASCII only, padded
with spaces to a multiple of 8 bytes as the reference writer pads it. The output is
an ordinary safetensors file that every safetensors reader loads.

The reader never trusts a length before checking it against the blob, and rejects any
header that is not plain, small, well-formed JSON of the expected shape.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np

from fedchain.errors import CodecError

#: Bytes of the little-endian header-length prefix.
PREFIX_SIZE = 8
#: The header is padded with spaces to a multiple of this.
ALIGNMENT = 8
#: safetensors dtype codes and their little-endian numpy dtypes (for reporting and crafting).
DTYPES: dict[str, str] = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U8": "u1",
    "BOOL": "?",
}
_DTYPE_CODES = {
    np.dtype(v).newbyteorder("<") if np.dtype(v).itemsize > 1 else np.dtype(v): k for k, v in DTYPES.items()
}


@dataclass(frozen=True)
class Entry:
    """One tensor as the header describes it."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int


@dataclass(frozen=True)
class Parsed:
    """A structurally valid safetensors header, and where the data section starts."""

    metadata: dict[str, str]
    entries: tuple[Entry, ...]
    header: bytes
    data_start: int


def _fail(reason: str, detail: str) -> NoReturn:
    raise CodecError(reason, detail)


def render_header(entries: Mapping[str, tuple[str, tuple[int, ...], int, int]], metadata: Mapping[str, str]) -> bytes:
    """The canonical header bytes (JSON plus padding) for tensors and metadata."""
    obj: dict[str, Any] = {"__metadata__": dict(metadata)}
    for name, (dtype, shape, start, end) in entries.items():
        obj[name] = {"data_offsets": [start, end], "dtype": dtype, "shape": list(shape)}
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")
    return text + b" " * (-len(text) % ALIGNMENT)


def _layout(
    arrays: Mapping[str, np.ndarray],
) -> tuple[dict[str, tuple[str, tuple[int, ...], int, int]], list[np.ndarray]]:
    """The header entries of ``arrays`` in sorted name order, and each one's little-endian bytes (views where possible)."""
    entries: dict[str, tuple[str, tuple[int, ...], int, int]] = {}
    datas: list[np.ndarray] = []
    offset = 0
    for name in sorted(arrays):
        arr = np.asarray(arrays[name])
        le = arr.astype(arr.dtype.newbyteorder("<"), copy=False) if arr.dtype.itemsize > 1 else arr
        code = _DTYPE_CODES.get(le.dtype)
        if code is None:
            _fail("dtype", f"tensor {name!r} has unsupported dtype {arr.dtype}")
        data = np.ascontiguousarray(le).reshape(-1).view(np.uint8)  # the bytes tobytes() would give
        entries[name] = (code, tuple(int(d) for d in arr.shape), offset, offset + data.size)
        datas.append(data)
        offset += data.size
    return entries, datas


def render(arrays: Mapping[str, np.ndarray], metadata: Mapping[str, str]) -> bytes:
    """Encode arrays (any supported dtype) with their data in sorted name order.

    No value checks are made here; :mod:`fedchain.fl.codec` decides what may be encoded.
    The tensors' bytes are joined from views of the arrays: one copy of the data, the result.
    """
    entries, datas = _layout(arrays)
    header = render_header(entries, metadata)
    return b"".join([struct.pack("<Q", len(header)), header, *(memoryview(d) for d in datas)])  # type: ignore[arg-type]  # an ndarray is a buffer


def matches(
    blob: bytes | bytearray | memoryview, arrays: Mapping[str, np.ndarray], metadata: Mapping[str, str]
) -> bool:
    """Whether ``blob`` is exactly ``render(arrays, metadata)``, compared piece by piece without building it.

    Mirrors :func:`render` step for step: the same entries, the same header bytes, the same
    tensor bytes in the same order. So it is true exactly when ``render`` would return
    ``blob``: every byte of the blob is compared, the length prefix, the header, each
    tensor's data, and the total length (nothing may follow the last tensor). It costs
    a memory comparison of the data instead of a copy of it (and of a hash, for a caller
    that would have hashed the rendering).

    Raises
    ------
    CodecError
        ``dtype``, as :func:`render` does.
    """
    entries, datas = _layout(arrays)
    offset = sum(data.size for data in datas)
    view = memoryview(blob).cast("B")
    start = _framing_matches(view, render_header(entries, metadata), offset)
    if start is None:
        return False
    position = start
    for data in datas:
        # as int32 words where the length allows (float32 data always does): one pass, 4 bytes a step
        unit = np.dtype("<i4") if data.size % 4 == 0 else np.dtype(np.uint8)
        stored = np.frombuffer(view, dtype=unit, count=data.size // unit.itemsize, offset=position)
        if not np.array_equal(stored, data.view(unit)):
            return False
        position += data.size
    return True


def _framing_matches(view: memoryview, header: bytes, data_size: int) -> int | None:
    """Where the data starts, if ``view`` is the length prefix of ``header``, ``header``, and ``data_size`` bytes."""
    start = PREFIX_SIZE + len(header)
    if (
        len(view) != start + data_size
        or view[:PREFIX_SIZE].tobytes() != struct.pack("<Q", len(header))
        or view[PREFIX_SIZE:start].tobytes() != header
    ):
        return None
    return start


def float32_views(
    blob: bytes | bytearray | memoryview, shapes: Mapping[str, tuple[int, ...]], metadata: Mapping[str, str]
) -> dict[str, np.ndarray] | None:
    """The tensors of ``blob`` as float32 views, if it is ``render`` of float32 arrays of ``shapes`` in all but
    their values: the same length prefix and header bytes (entries and ``metadata``), and the length that
    leaves nothing after the last tensor. ``None`` otherwise.

    So ``render(arrays, metadata) == blob`` exactly when ``arrays`` (float32, of ``shapes``) have
    these views' bits. The views are read-only.
    """
    entries: dict[str, tuple[str, tuple[int, ...], int, int]] = {}
    offset = 0
    for name in sorted(shapes):
        shape = tuple(int(d) for d in shapes[name])
        size = 4 * math.prod(shape)
        entries[name] = ("F32", shape, offset, offset + size)
        offset += size
    view = memoryview(blob).cast("B")
    start = _framing_matches(view, render_header(entries, metadata), offset)
    if start is None:
        return None
    arrays = {}
    for name, (_, shape, lo, _) in entries.items():
        array = np.frombuffer(view, dtype="<f4", count=math.prod(shape), offset=start + lo).reshape(shape)
        array.flags.writeable = False  # what was verified is not changed through these
        arrays[name] = array
    return arrays


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key[:80]!r}")
        out[key] = value
    return out


def _reject_float(text: str) -> NoReturn:
    raise ValueError(f"non-integer number {text[:40]!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def parse(blob: bytes | bytearray | memoryview, *, max_header: int) -> Parsed:
    """Parse and structurally check a blob's header; the data section is not read.

    Raises
    ------
    CodecError
        ``not-safetensors``, ``truncated``, ``header`` (also for a header longer than ``max_header``)
        or ``metadata``.
    """
    if len(blob) < PREFIX_SIZE + 2:
        _fail("truncated", f"blob of {len(blob)} bytes is shorter than a safetensors header")
    # Every safetensors header is a JSON object; pickle, zip, npz or random bytes are not.
    if blob[PREFIX_SIZE : PREFIX_SIZE + 1] != b"{":
        _fail("not-safetensors", f"no JSON header after the length prefix (starts with {bytes(blob[:12])!r})")
    (size,) = struct.unpack_from("<Q", blob, 0)
    if size > max_header:
        _fail("header", f"header claims {size} bytes, limit is {max_header}")
    if size > len(blob) - PREFIX_SIZE:
        _fail("truncated", f"header claims {size} bytes but only {len(blob) - PREFIX_SIZE} follow the prefix")
    header = bytes(blob[PREFIX_SIZE : PREFIX_SIZE + size])
    try:
        text = header.decode("utf-8")
        obj = json.loads(
            text, object_pairs_hook=_reject_duplicates, parse_float=_reject_float, parse_constant=_reject_float
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        _fail("header", f"header is not well-formed JSON: {str(err)[:200]}")
    if not isinstance(obj, dict):
        _fail("header", f"header is a JSON {type(obj).__name__}, not an object")

    raw_meta = obj.pop("__metadata__", None)
    if not isinstance(raw_meta, dict):
        _fail("metadata", "header has no __metadata__ object" if raw_meta is None else "__metadata__ is not an object")
    for key, value in raw_meta.items():
        if not isinstance(value, str):
            _fail("metadata", f"metadata field {key[:80]!r} is a {type(value).__name__}, not a string")

    entries: list[Entry] = []
    for name, info in obj.items():
        label = f"tensor {name[:80]!r}"
        if not name or name.startswith("__"):
            _fail("header", f"{label}: reserved or empty tensor name")
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            _fail("header", f"{label}: entry must have exactly dtype, shape and data_offsets")
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if not isinstance(dtype, str):
            _fail("header", f"{label}: dtype is not a string")
        if not isinstance(shape, list) or not all(_is_int(d) for d in shape):
            _fail("header", f"{label}: shape is not a list of non-negative integers")
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_int(o) for o in offsets):
            _fail("header", f"{label}: data_offsets is not a pair of non-negative integers")
        entries.append(Entry(name=name, dtype=dtype, shape=tuple(shape), start=offsets[0], end=offsets[1]))
    return Parsed(metadata=dict(raw_meta), entries=tuple(entries), header=header, data_start=PREFIX_SIZE + size)


__all__ = ["ALIGNMENT", "DTYPES", "PREFIX_SIZE", "Entry", "Parsed", "matches", "parse", "render", "render_header"]
