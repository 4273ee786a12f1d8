"""The federation manifest: every rule the parties of one federation agree on, as one canonical blob.

Its sha256 is fixed in the ledger at deployment (beside the genesis model's), and its CID is in
the ledger's ``LedgerCreated`` event, so a verifier needs nothing but the chain, the store and
the ledger's address: it fetches the manifest, checks it against the digest the contract holds,
and reads every rule from it. A node whose own configuration differs from the manifest refuses
to start and names the field (:func:`check_against`).

The canonical form is JSON with sorted keys, no insignificant whitespace, ASCII only, floats
rendered by ``repr`` (shortest round-trip) and integers as integers. Parsing is strict: the bytes
must be exactly what :meth:`Manifest.to_bytes` writes for the values they hold, every field
present, no unknown field.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fedchain.errors import ConfigError
from fedchain.fl.codec import CODEC
from fedchain.fl.robust import rule_from_config
from fedchain.fl.schema import Schema
from fedchain.hashing import sha256
from fedchain.protocol.privacy import Privacy, parse_privacy
from fedchain.types import Digest

#: The manifest format written into every manifest.
FORMAT = "fedchain/manifest-v1"
#: The update norm bound when a deployment names none: far above an honest update of the shipped
#: tasks (the ICD demo's first-round updates have norms of 40 to 76, later rounds less), far
#: below anything that could make an aggregate overflow float32.
DEFAULT_MAX_UPDATE_NORM = 1000.0
#: Time from opening a round to its deadline, when a deployment names none.
DEFAULT_ROUND_SECONDS = 600
#: Largest update or model blob anybody fetches, when a deployment names none.
DEFAULT_MAX_BLOB_SIZE = 64 * 1024 * 1024
#: Largest norm bound a manifest may hold: with it, no aggregate of finite updates on a base of
#: float32 values can leave float32's range (``eta * bound`` stays below 2**104, float32's
#: largest value is about 2**128), so an honest coordinator can never be crashed by overflow.
MAX_NORM_BOUND = 1e30
#: Largest server learning rate a manifest may hold (same reason).
MAX_SERVER_LR = 1e6
#: Largest manifest accepted.
MAX_MANIFEST_SIZE = 1024 * 1024

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_MODEL = re.compile(r"[\x20-\x7e]{1,2000}")
_PRIVACY_MODES = ("none", "masked")
_FIELDS = (
    "aggregation",
    "codec",
    "format",
    "frozen",
    "max_blob_size",
    "max_update_norm",
    "model",
    "privacy",
    "rounds",
    "schema",
    "seed",
    "task",
    "train",
)


@dataclass(frozen=True)
class Manifest:
    """The rules of one federation.

    Attributes
    ----------
    task_name, task_version:
        The training task (informational: the protocol never re-runs training).
    schema:
        The exchanged tensors: names, shapes, dtypes. Every update and model blob is checked against it.
    model:
        The task's model description, written into every model blob's header.
    aggregation:
        The aggregation rule and all its parameters (``{"rule": "fedavg", "server_lr": 1.0}``).
    max_update_norm:
        L2 bound on an update's delta; a larger update is excluded. Always present.
    max_blob_size:
        Largest blob anybody fetches, in bytes.
    min_updates, round_seconds:
        The round rules: the quorum to finalize before the deadline, and the time from opening
        a round to its deadline.
    train:
        The round config every participant trains with (the task's epochs, learning rate, ...).
    seed:
        Root seed: the genesis model and each participant's training seeds derive from it.
    privacy:
        ``{"mode": "none"}`` or the private-round settings.
    frozen:
        Frozen parts the exchanged tensors build on, ``name -> 0x digest`` (e.g. a LoRA base).
    codec:
        The blob codec.
    """

    task_name: str
    task_version: str
    schema: Schema
    model: str
    aggregation: Mapping[str, Any] = field(default_factory=lambda: {"rule": "fedavg", "server_lr": 1.0})
    max_update_norm: float = DEFAULT_MAX_UPDATE_NORM
    max_blob_size: int = DEFAULT_MAX_BLOB_SIZE
    min_updates: int = 1
    round_seconds: int = DEFAULT_ROUND_SECONDS
    train: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0
    privacy: Mapping[str, Any] = field(default_factory=lambda: {"mode": "none"})
    frozen: Mapping[str, str] = field(default_factory=dict)
    codec: str = CODEC

    def __post_init__(self) -> None:
        _validate(self)

    # ------------------------------------------------------------------ canonical form

    def to_json(self) -> dict[str, Any]:
        """The manifest as a JSON-ready dict (what :meth:`to_bytes` renders)."""
        return {
            "aggregation": dict(self.aggregation),
            "codec": self.codec,
            "format": FORMAT,
            "frozen": dict(self.frozen),
            "max_blob_size": self.max_blob_size,
            "max_update_norm": float(self.max_update_norm),
            "model": self.model,
            "privacy": dict(self.privacy),
            "rounds": {"min_updates": self.min_updates, "round_seconds": self.round_seconds},
            "schema": self.schema.to_json(),
            "seed": self.seed,
            "task": {"name": self.task_name, "version": self.task_version},
            "train": dict(self.train),
        }

    def to_bytes(self) -> bytes:
        """The canonical bytes: what the ledger's manifest digest is the sha256 of."""
        return _render(self.to_json())

    @property
    def digest(self) -> Digest:
        """sha256 of :meth:`to_bytes`."""
        return sha256(self.to_bytes())

    @classmethod
    def from_bytes(cls, blob: bytes | bytearray | memoryview) -> Manifest:
        """Parse canonical manifest bytes.

        Raises
        ------
        ConfigError
            Naming ``manifest.<field>`` if anything is missing, unknown, of the wrong type, or
            the bytes are not in canonical form.
        """
        data = bytes(blob)
        if len(data) > MAX_MANIFEST_SIZE:
            raise ConfigError("manifest", f"{len(data)} bytes, more than the {MAX_MANIFEST_SIZE} a manifest may have")
        try:
            raw = json.loads(data.decode("ascii"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ConfigError("manifest", f"not ASCII JSON: {err}") from None
        manifest = cls.from_json(raw)
        if manifest.to_bytes() != data:
            raise ConfigError("manifest", "not in canonical form (key order, whitespace or number rendering)")
        return manifest

    @classmethod
    def from_json(cls, raw: object) -> Manifest:
        """Build a manifest from its JSON dict, naming the field of any problem."""
        if not isinstance(raw, dict):
            raise ConfigError("manifest", "must be a JSON object")
        for key in sorted(raw):
            if key not in _FIELDS:
                raise ConfigError(f"manifest.{str(key)[:40]}", "unknown field")
        for key in _FIELDS:
            if key not in raw:
                raise ConfigError(f"manifest.{key}", "missing")
        if raw["format"] != FORMAT:
            raise ConfigError("manifest.format", f"{str(raw['format'])[:60]!r}, expected {FORMAT!r}")
        task, rounds = _table(raw, "task", ("name", "version")), _table(raw, "rounds", ("min_updates", "round_seconds"))
        try:
            schema = Schema.from_json(raw["schema"])
        except (ValueError, TypeError) as err:
            raise ConfigError("manifest.schema", str(err)) from None
        for key in ("aggregation", "train", "privacy", "frozen"):
            if not isinstance(raw[key], dict):
                raise ConfigError(f"manifest.{key}", "must be an object")
        return cls(
            task_name=task["name"],
            task_version=task["version"],
            schema=schema,
            model=raw["model"],
            aggregation=raw["aggregation"],
            max_update_norm=raw["max_update_norm"],
            max_blob_size=raw["max_blob_size"],
            min_updates=rounds["min_updates"],
            round_seconds=rounds["round_seconds"],
            train=raw["train"],
            seed=raw["seed"],
            privacy=raw["privacy"],
            frozen=raw["frozen"],
            codec=raw["codec"],
        )

    # ------------------------------------------------------------------ reading

    @property
    def server_lr(self) -> float:
        """The aggregation's server learning rate."""
        return float(self.aggregation.get("server_lr", 1.0))

    @property
    def rule(self) -> str:
        """The aggregation rule's name (``fedavg``, ``median``, ...)."""
        return str(self.aggregation["rule"])

    @property
    def privacy_settings(self) -> Privacy:
        """The parsed ``privacy`` table (masked-round settings, DP budget)."""
        return parse_privacy(self.privacy)

    @property
    def private(self) -> bool:
        """Whether rounds are masked."""
        return bool(self.privacy.get("mode", "none") != "none")

    def flat(self) -> dict[str, Any]:
        """Every rule as ``dotted.name -> value``, the names :func:`check_against` reports."""
        out: dict[str, Any] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict):
                for k in sorted(value):
                    walk(f"{prefix}.{k}" if prefix else str(k), value[k])
            else:
                out[prefix] = value

        walk("", {k: v for k, v in self.to_json().items() if k != "schema"})
        out["schema"] = self.schema.to_json()
        return out


def check_against(manifest: Manifest, local: Mapping[str, Any], *, source: str) -> None:
    """Refuse a node whose own configuration differs from the manifest.

    Parameters
    ----------
    local:
        What the node was configured with, as ``dotted.name -> value`` (see :meth:`Manifest.flat`);
        only the names given are compared.
    source:
        Where the local values come from (a config file), for the message.

    Raises
    ------
    ConfigError
        Naming the first field that differs, with both values.
    """
    rules = manifest.flat()
    for name in sorted(local):
        if name not in rules:
            raise ConfigError(name, f"{source} sets it, but the federation manifest has no such rule")
        mine, theirs = local[name], rules[name]
        if not _same(mine, theirs):
            raise ConfigError(name, f"{source} says {mine!r}, the federation manifest on the ledger says {theirs!r}")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return bool(a == b)


def _table(raw: Mapping[str, Any], key: str, fields: tuple[str, ...]) -> dict[str, Any]:
    value = raw[key]
    if not isinstance(value, dict):
        raise ConfigError(f"manifest.{key}", "must be an object")
    for k in sorted(value):
        if k not in fields:
            raise ConfigError(f"manifest.{key}.{str(k)[:40]}", "unknown field")
    for k in fields:
        if k not in value:
            raise ConfigError(f"manifest.{key}.{k}", "missing")
    return value


def _is_int(value: object, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _check_json_value(name: str, value: Any, depth: int = 0) -> None:
    """Only JSON scalars, lists and objects with short plain keys; finite numbers."""
    if depth > 8:
        raise ConfigError(name, "nested too deeply")
    if isinstance(value, bool) or value is None or isinstance(value, str):
        if isinstance(value, str) and (len(value) > 2000 or not value.isascii()):
            raise ConfigError(name, "strings must be ASCII and at most 2000 characters")
        return
    if isinstance(value, int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(name, f"must be finite, got {value!r}")
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_json_value(f"{name}[{i}]", v, depth + 1)
        return
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str) or not _NAME.fullmatch(k):
                raise ConfigError(f"{name}.{str(k)[:40]}", "keys must match [A-Za-z0-9_.-]{1,64}")
            _check_json_value(f"{name}.{k}", v, depth + 1)
        return
    raise ConfigError(name, f"{type(value).__name__} is not a JSON value")


def _validate(m: Manifest) -> None:
    if m.codec != CODEC:
        raise ConfigError("manifest.codec", f"{m.codec!r} is not a codec this fedchain reads (known: {CODEC})")
    for key, value in (("task.name", m.task_name), ("task.version", m.task_version)):
        if not isinstance(value, str) or not _NAME.fullmatch(value):
            raise ConfigError(f"manifest.{key}", f"must match [A-Za-z0-9_.-]{{1,64}}, got {value!r}")
    if not isinstance(m.schema, Schema):
        raise ConfigError("manifest.schema", "must be a Schema")
    if not isinstance(m.model, str) or not _MODEL.fullmatch(m.model):
        raise ConfigError("manifest.model", "must be 1 to 2000 printable ASCII characters")
    norm = m.max_update_norm
    if (
        isinstance(norm, bool)
        or not isinstance(norm, (int, float))
        or not math.isfinite(norm)
        or not 0 < norm <= MAX_NORM_BOUND
    ):
        raise ConfigError(
            "manifest.max_update_norm", f"must be a positive finite number <= {MAX_NORM_BOUND:g}, got {norm!r}"
        )
    object.__setattr__(m, "max_update_norm", float(norm))
    if not _is_int(m.max_blob_size, 1):
        raise ConfigError("manifest.max_blob_size", f"must be a positive integer, got {m.max_blob_size!r}")
    if m.max_blob_size < m.schema.nbytes:
        raise ConfigError(
            "manifest.max_blob_size",
            f"{m.max_blob_size} bytes is less than the schema's {m.schema.nbytes} bytes of tensor data",
        )
    if not _is_int(m.min_updates, 1):
        raise ConfigError("manifest.rounds.min_updates", f"must be an integer >= 1, got {m.min_updates!r}")
    if not _is_int(m.round_seconds, 1):
        raise ConfigError("manifest.rounds.round_seconds", f"must be an integer >= 1, got {m.round_seconds!r}")
    if not _is_int(m.seed, 0):
        raise ConfigError("manifest.seed", f"must be an integer >= 0, got {m.seed!r}")
    for key in ("aggregation", "train", "privacy", "frozen"):
        _check_json_value(f"manifest.{key}", getattr(m, key))
    rule = m.aggregation.get("rule")
    if not isinstance(rule, str) or not _NAME.fullmatch(rule):
        raise ConfigError("manifest.aggregation.rule", f"must name a rule, got {rule!r}")
    try:
        rule_from_config(rule, {k: v for k, v in m.aggregation.items() if k != "rule"})
    except ConfigError as err:
        raise ConfigError(f"manifest.{err.key}", err.problem) from None
    lr = m.aggregation.get("server_lr", 1.0)
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or not 0 < lr <= MAX_SERVER_LR:
        raise ConfigError(
            "manifest.aggregation.server_lr", f"must be a positive finite number <= {MAX_SERVER_LR:g}, got {lr!r}"
        )
    mode = m.privacy.get("mode")
    if mode not in _PRIVACY_MODES:
        raise ConfigError("manifest.privacy.mode", f"must be one of {', '.join(_PRIVACY_MODES)}, got {mode!r}")
    privacy = parse_privacy(m.privacy)
    if privacy.masked is not None and m.min_updates > privacy.masked.min_survivors:
        raise ConfigError(
            "manifest.rounds.min_updates",
            f"{m.min_updates} is above the masked rounds' minimum of survivors {privacy.masked.min_survivors}",
        )
    if mode == "masked" and rule != "fedavg":
        raise ConfigError(
            "manifest.aggregation.rule",
            f"{rule!r} cannot be used with masked rounds: a robust rule must see each update, and masked updates "
            "are unreadable by design (only clipping by each participant applies)",
        )
    for name, digest in m.frozen.items():
        if not isinstance(digest, str) or not re.fullmatch(r"0x[0-9a-f]{64}", digest):
            raise ConfigError(f"manifest.frozen.{name}", f"must be 0x + 64 lower-case hex digits, got {digest!r}")


def _render(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")


__all__ = [
    "DEFAULT_MAX_BLOB_SIZE",
    "DEFAULT_MAX_UPDATE_NORM",
    "DEFAULT_ROUND_SECONDS",
    "FORMAT",
    "MAX_NORM_BOUND",
    "Manifest",
    "check_against",
]
