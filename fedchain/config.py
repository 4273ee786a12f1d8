"""Configuration: the one module that reads environment variables and settings files.

* Keys: from an encrypted keystore file (password from ``FEDCHAIN_KEY_PASSWORD`` or a prompt)
  or from ``FEDCHAIN_PRIVATE_KEY``; never from a command-line argument, never logged.
* A working directory's ``federation.json``: where a federation's chain, ledger and store
  are, and the settings every actor agreed on, so that ``fedchain audit --workdir`` can
  find everything.
* A node's TOML configuration (``fedchain coordinator --config`` / ``fedchain participant
  --config``): :func:`load_node_config` validates it into a :class:`NodeConfig`, naming the
  key of any problem (``federation.rounds: must be a positive integer, got 0``).
"""

from __future__ import annotations

import getpass
import json
import math
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from fedchain.chain import Signer
from fedchain.errors import ConfigError

KEY_ENV = "FEDCHAIN_PRIVATE_KEY"
PASSWORD_ENV = "FEDCHAIN_KEY_PASSWORD"
KUBO_ENV = "FEDCHAIN_KUBO_API"
WORKDIR_FILE = "federation.json"
_WORKDIR_FORMAT = 2


def load_signer(keystore: Path | None, *, name: str, key_env: str = KEY_ENV, prompt: bool = True) -> Signer:
    """The acting key: a keystore file if given, else the ``key_env`` environment variable.

    Raises
    ------
    ConfigError
        If neither is available, or the key or password is wrong.
    """
    if keystore is not None:
        password = os.environ.get(PASSWORD_ENV)
        if password is None:
            if not prompt:
                raise ConfigError(PASSWORD_ENV, f"not set, and no prompt allowed for keystore {keystore}")
            password = getpass.getpass(f"password for {keystore}: ")
        return Signer.from_keystore(keystore, password, name)
    key = os.environ.get(key_env)
    if not key:
        raise ConfigError("key", f"give --keystore FILE (password in ${PASSWORD_ENV} or a prompt) or set ${key_env}")
    return Signer.from_key(key.strip(), name)


def keystore_password(*, confirm: bool = False) -> str:
    """The keystore password from ``FEDCHAIN_KEY_PASSWORD`` or a prompt."""
    password = os.environ.get(PASSWORD_ENV)
    if password is not None:
        return password
    password = getpass.getpass("new keystore password: " if confirm else "keystore password: ")
    if confirm and getpass.getpass("again: ") != password:
        raise ConfigError("password", "the two passwords differ")
    if not password:
        raise ConfigError("password", "empty")
    return password


def kubo_api() -> str | None:
    """The kubo RPC API address from ``FEDCHAIN_KUBO_API``, if set."""
    return os.environ.get(KUBO_ENV) or None


@dataclass(frozen=True)
class Workdir:
    """What ``federation.json`` in a working directory records.

    Attributes
    ----------
    rpc:
        ``embedded`` (the journal ``chain.jsonl`` beside this file) or a JSON-RPC URL.
    ledger:
        The ledger contract's address.
    store:
        The store location: a directory (relative to the working directory) or a kubo API.
    participants:
        Names by address (informational: the chain is the source of truth; the federation's
        rules are in the manifest the ledger fixes).
    task:
        The task the demo trained (``{"app": ..., "settings": {...}}``), to load its models again.
    """

    rpc: str
    ledger: str
    store: str
    participants: dict[str, str]
    task: dict[str, Any]

    def save(self, directory: Path) -> Path:
        """Write ``federation.json`` atomically."""
        path = directory / WORKDIR_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(
            json.dumps({"format": _WORKDIR_FORMAT, **asdict(self)}, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, directory: Path) -> Workdir:
        """Read ``federation.json``.

        Raises
        ------
        ConfigError
            If it is missing or malformed, naming the key.
        """
        path = directory / WORKDIR_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as err:
            raise ConfigError(
                str(path), "not found: is this a fedchain working directory (made by `fedchain demo`)?"
            ) from err
        except (OSError, json.JSONDecodeError) as err:
            raise ConfigError(str(path), f"unreadable: {err}") from err
        if not isinstance(data, dict) or data.get("format") != _WORKDIR_FORMAT:
            raise ConfigError(f"{path}: format", f"expected {_WORKDIR_FORMAT}")
        fields = ("rpc", "ledger", "store", "participants", "task")
        for key in fields:
            if key not in data:
                raise ConfigError(f"{path}: {key}", "missing")
        return cls(**{k: data[k] for k in fields})

    def store_location(self, directory: Path) -> str:
        """The store location, resolved against ``directory`` when it is a relative path."""
        if self.store.startswith(("http://", "https://", "/ip4/", "/ip6/", "/dns")):
            return self.store
        return str((directory / self.store).resolve())


# --------------------------------------------------------------------------- node config files

_REMOTE_PREFIXES = ("http://", "https://", "/ip4/", "/ip6/", "/dns")


@dataclass(frozen=True)
class ChainConfig:
    """``[chain]``: the node, and how long to keep trying when it does not answer.

    Attributes
    ----------
    rpc:
        JSON-RPC URL of the node.
    dev:
        The node is a development node (anvil): give this node's account ether at start,
        and mine an empty block before a transaction when the last block is stale, so that
        the contract sees the current time (anvil mines only on demand).
    retries, backoff, timeout:
        Per-request retries of the JSON-RPC client, its backoff factor and timeout (seconds).
    outage_seconds:
        How long a process keeps retrying while the node or store is unreachable before it
        gives up with a clear error.
    """

    rpc: str
    dev: bool = False
    retries: int = 6
    backoff: float = 0.25
    timeout: float = 30.0
    outage_seconds: float = 600.0


@dataclass(frozen=True)
class LedgerConfig:
    """``[ledger]``: the ledger's address, given or read from (and written to) a file.

    With ``address_file`` the coordinator deploys a ledger when the file does not exist and
    writes the address there; participants wait for the file to appear.
    """

    address: str | None = None
    address_file: Path | None = None


@dataclass(frozen=True)
class FederationConfig:
    """``[federation]``: how many rounds to run and how often to poll, plus the federation's rules.

    The rules (``rules``, as manifest names such as ``rounds.min_updates`` or
    ``aggregation.server_lr``) are only those the file sets. A coordinator deploys a manifest
    with them (defaults from :class:`fedchain.protocol.Manifest` for the rest); a participant's
    are compared with the manifest on the ledger, and any difference refuses to start.
    """

    rounds: int
    poll_seconds: float = 2.0
    rules: dict[str, Any] = field(default_factory=dict)

    @property
    def privacy(self) -> dict[str, Any] | None:
        """The ``[federation.privacy]`` settings the file gives, as the manifest's ``privacy`` table (``None``: none)."""
        out: dict[str, Any] = {}
        for name, value in self.rules.items():
            if name.startswith("privacy.dp."):
                out.setdefault("dp", {})[name.removeprefix("privacy.dp.")] = value
            elif name.startswith("privacy."):
                out[name.removeprefix("privacy.")] = value
        return out or None


@dataclass(frozen=True)
class TaskConfig:
    """``[task]``: which task trains (``app``: a shipped name or ``package.module:attribute``) and its settings."""

    app: str = "icd"
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ParticipantEntry:
    """One ``[[participants]]`` entry of a coordinator's config: who to register."""

    address: str
    max_samples: int
    name: str


@dataclass(frozen=True)
class ParticipantDataConfig:
    """``[participant]``: this participant's name and local data (a JSONL shard)."""

    data: Path
    name: str


@dataclass(frozen=True)
class NodeConfig:
    """A validated ``fedchain coordinator`` / ``fedchain participant`` configuration.

    Relative paths are resolved against the config file's directory.
    """

    path: Path
    chain: ChainConfig
    ledger: LedgerConfig
    store: str
    keystore: Path
    federation: FederationConfig
    task: TaskConfig
    participant: ParticipantDataConfig | None
    participants: tuple[ParticipantEntry, ...]
    log_json: bool = False


class _Table:
    """A TOML table being validated: typed getters that name the dotted key on error."""

    def __init__(self, data: dict[str, Any], prefix: str, known: tuple[str, ...]) -> None:
        self.data, self.prefix = data, prefix
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError(self.key(unknown[0]), f"unknown key (known: {', '.join(known)})")

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def _get(self, name: str, required: bool) -> Any:
        if name not in self.data:
            if required:
                raise ConfigError(self.key(name), "missing")
            return None
        return self.data[name]

    def text(self, name: str, *, required: bool = False, default: str | None = None) -> str | None:
        value = self._get(name, required)
        if value is None:
            return default
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(self.key(name), f"must be a non-empty string, got {value!r}")
        return value.strip()

    def integer(self, name: str, *, required: bool = False, default: int | None = None, minimum: int = 1) -> int | None:
        value = self._get(name, required)
        if value is None:
            return default
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ConfigError(self.key(name), f"must be an integer >= {minimum}, got {value!r}")
        return value

    def number(
        self, name: str, *, required: bool = False, default: float | None = None, positive: bool = True
    ) -> float | None:
        value = self._get(name, required)
        if value is None:
            return default
        if (
            not isinstance(value, (int, float))
            or isinstance(value, bool)
            or not math.isfinite(value)
            or (positive and value <= 0)
        ):
            raise ConfigError(
                self.key(name), f"must be a {'positive ' if positive else ''}finite number, got {value!r}"
            )
        return float(value)

    def flag(self, name: str, *, default: bool = False) -> bool:
        value = self._get(name, False)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise ConfigError(self.key(name), f"must be true or false, got {value!r}")
        return value

    def table(self, name: str, known: tuple[str, ...], *, required: bool = False) -> _Table:
        value = self._get(name, required)
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(self.key(name), "must be a table")
        return _Table(value, self.key(name), known)


def check_address(value: str, key: str) -> str:
    """``value`` if it is ``0x`` + 40 hex digits, else a :class:`ConfigError` naming ``key``."""
    if not (isinstance(value, str) and value.startswith("0x") and len(value) == 42):
        raise ConfigError(key, f"must be a 0x-prefixed 20-byte hex address, got {value!r}")
    try:
        int(value, 16)
    except ValueError as err:
        raise ConfigError(key, f"must be a 0x-prefixed 20-byte hex address, got {value!r}") from err
    return value


_address = check_address

#: The keys of ``[federation.privacy]``: the manifest's ``privacy`` fields (fedchain/protocol/privacy.py).
#: ``share_threshold`` is optional; :func:`fedchain.protocol.privacy.parse_privacy` says whether it is known.
_PRIVACY_KEYS = (
    "mode",
    "frac_bits",
    "clip",
    "min_survivors",
    "max_samples",
    "max_participants",
    "phase_seconds",
    "share_threshold",
    "dp",
)
#: Of those, the integers a masked manifest requires, with each one's minimum (``clip`` is a number).
_MASKED_INTEGERS = (
    ("frac_bits", 0),
    ("min_survivors", 2),
    ("max_samples", 1),
    ("max_participants", 2),
    ("phase_seconds", 1),
)


def _privacy_rules(fed_t: _Table) -> dict[str, Any]:
    """``[federation.privacy]`` as manifest rules (``privacy.mode``, ``privacy.clip``, ``privacy.dp.delta``...)."""
    if "privacy" not in fed_t.data:
        return {}
    t = fed_t.table("privacy", _PRIVACY_KEYS)
    mode = t.text("mode", required=True)
    if mode not in ("none", "masked"):
        raise ConfigError(t.key("mode"), f"must be 'none' or 'masked', got {mode!r}")
    rules: dict[str, Any] = {"privacy.mode": mode}
    for name, minimum in (*_MASKED_INTEGERS, ("share_threshold", 2)):
        if name in t.data:
            rules[f"privacy.{name}"] = t.integer(name, minimum=minimum)
    if "clip" in t.data:
        rules["privacy.clip"] = t.number("clip")
    if mode == "none":
        masked_only = sorted(k for k in t.data if k not in ("mode", "dp"))
        if masked_only:
            raise ConfigError(t.key(masked_only[0]), 'only masked rounds take it (mode = "masked")')
    if "dp" in t.data:
        dp_t = t.table("dp", ("epsilon_budget", "delta"))
        rules["privacy.dp.epsilon_budget"] = dp_t.number("epsilon_budget", required=True)
        delta = dp_t.number("delta", required=True)
        assert delta is not None
        if not delta < 1.0:
            raise ConfigError(dp_t.key("delta"), f"must be a number in (0, 1), got {delta!r}")
        rules["privacy.dp.delta"] = delta
    return rules


def _check_masked(federation: FederationConfig, entries: list[ParticipantEntry], *, complete: bool) -> None:
    """Refuse masked settings the manifest would refuse, naming the config's own keys.

    A coordinator's settings are completed with :func:`~fedchain.protocol.privacy.default_masked`
    (what it deploys) and checked whole; a participant's, only as far as the file sets them.
    """
    from fedchain.protocol.privacy import default_masked, parse_privacy

    given = federation.privacy
    assert given is not None
    rules = federation.rules
    rule = rules.get("aggregation.rule", "fedavg")
    if rule != "fedavg":
        raise ConfigError("federation.rule", f"masked rounds aggregate with fedavg only, got {rule!r}")
    if complete:
        privacy = {**default_masked(len(entries)), **given}
    elif all(k in given for k, _ in _MASKED_INTEGERS) and "clip" in given:
        privacy = dict(given)
    else:
        return
    try:
        parse_privacy(privacy)
    except ConfigError as err:
        raise ConfigError(err.key.replace("manifest.privacy", "federation.privacy", 1), err.problem) from None
    quorum = rules.get("rounds.min_updates")
    if quorum is not None and quorum > privacy["min_survivors"]:
        raise ConfigError(
            "federation.min_updates",
            f"{quorum} is above federation.privacy.min_survivors = {privacy['min_survivors']} (a masked round "
            "finalizes with as few survivors as that)",
        )
    if len(entries) > privacy["max_participants"]:
        raise ConfigError(
            "federation.privacy.max_participants",
            f"{privacy['max_participants']} is fewer than the {len(entries)} participants listed",
        )
    for i, entry in enumerate(entries):
        if entry.max_samples > privacy["max_samples"]:
            raise ConfigError(
                f"participants[{i}].max_samples",
                f"{entry.max_samples} is above federation.privacy.max_samples = {privacy['max_samples']}",
            )


def load_node_config(path: Path, *, role: str) -> NodeConfig:
    """Read and validate a node's TOML config.

    Parameters
    ----------
    path:
        The config file.
    role:
        ``coordinator`` or ``participant``: which tables are required.

    Raises
    ------
    ConfigError
        Naming the dotted key and the problem (or the file, if it cannot be read or parsed).
    """
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(str(path), f"cannot read: {err.strerror or err}") from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(str(path), f"not valid TOML: {err}") from err
    base = path.resolve().parent

    def resolve(value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else base / p

    top = _Table(
        raw, "", ("chain", "ledger", "store", "key", "federation", "task", "participant", "participants", "log")
    )

    chain_t = top.table("chain", ("rpc", "dev", "retries", "backoff", "timeout", "outage_seconds"), required=True)
    rpc = chain_t.text("rpc", required=True)
    assert rpc is not None
    if not rpc.startswith(("http://", "https://")):
        raise ConfigError("chain.rpc", f"must be an http:// or https:// JSON-RPC URL, got {rpc!r}")
    chain = ChainConfig(
        rpc=rpc,
        dev=chain_t.flag("dev"),
        retries=chain_t.integer("retries", default=6) or 6,
        backoff=chain_t.number("backoff", default=0.25) or 0.25,
        timeout=chain_t.number("timeout", default=30.0) or 30.0,
        outage_seconds=chain_t.number("outage_seconds", default=600.0) or 600.0,
    )

    ledger_t = top.table("ledger", ("address", "address_file"), required=True)
    address = ledger_t.text("address")
    address_file = ledger_t.text("address_file")
    if address is not None:
        _address(address, "ledger.address")
    if (address is None) == (address_file is None):
        raise ConfigError(
            "ledger", "give exactly one of address (a deployed ledger) or address_file (written by the coordinator)"
        )
    ledger = LedgerConfig(address=address, address_file=resolve(address_file) if address_file else None)

    store_t = top.table("store", ("location",), required=True)
    location = store_t.text("location", required=True)
    assert location is not None
    store = location if location.startswith(_REMOTE_PREFIXES) else str(resolve(location))

    key_t = top.table("key", ("keystore",), required=True)
    keystore = key_t.text("keystore", required=True)
    assert keystore is not None

    fed_t = top.table(
        "federation",
        (
            "rounds",
            "poll_seconds",
            "min_updates",
            "round_seconds",
            "server_lr",
            "rule",
            "seed",
            "max_blob_size",
            "max_update_norm",
            "train",
            "privacy",
        ),
        required=True,
    )
    rules: dict[str, Any] = {}
    for key, name, kind in (
        ("min_updates", "rounds.min_updates", "int"),
        ("round_seconds", "rounds.round_seconds", "int"),
        ("server_lr", "aggregation.server_lr", "number"),
        ("rule", "aggregation.rule", "text"),
        ("seed", "seed", "int0"),
        ("max_blob_size", "max_blob_size", "int"),
        ("max_update_norm", "max_update_norm", "number"),
    ):
        if key in fed_t.data:
            value = (
                fed_t.integer(key, minimum=0 if kind == "int0" else 1)
                if kind.startswith("int")
                else fed_t.number(key)
                if kind == "number"
                else fed_t.text(key)
            )
            rules[name] = value
    train_t = fed_t.table("train", tuple(fed_t.data.get("train", {}) or ()))
    for key, value in train_t.data.items():
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(train_t.key(key), f"must be a number or a string, got {value!r}")
        rules[f"train.{key}"] = value
    rules.update(_privacy_rules(fed_t))
    federation = FederationConfig(
        rounds=fed_t.integer("rounds", required=True),  # type: ignore[arg-type]
        poll_seconds=fed_t.number("poll_seconds", default=2.0),  # type: ignore[arg-type]
        rules=rules,
    )
    task_t = top.table("task", ("app", "settings"))
    settings = task_t.data.get("settings", {})
    if not isinstance(settings, dict):
        raise ConfigError("task.settings", "must be a table")
    task = TaskConfig(app=task_t.text("app", default="icd") or "icd", settings=dict(settings))

    participant: ParticipantDataConfig | None = None
    if role == "participant":
        part_t = top.table("participant", ("name", "data"), required=True)
        data = part_t.text("data", required=True)
        assert data is not None
        participant = ParticipantDataConfig(
            data=resolve(data),
            name=part_t.text("name", default=Path(data).stem) or Path(data).stem,
        )
    elif "participant" in raw:
        raise ConfigError("participant", "only a participant's config has a [participant] table")

    entries: list[ParticipantEntry] = []
    listed = raw.get("participants", [])
    if role != "coordinator" and listed:
        raise ConfigError("participants", "only the coordinator's config lists [[participants]]")
    if not isinstance(listed, list):
        raise ConfigError("participants", "must be an array of tables ([[participants]])")
    seen: set[str] = set()
    for i, entry in enumerate(listed):
        if not isinstance(entry, dict):
            raise ConfigError(f"participants[{i}]", "must be a table")
        t = _Table(entry, f"participants[{i}]", ("address", "max_samples", "name"))
        addr = _address(t.text("address", required=True) or "", t.key("address"))
        if addr.lower() in seen:
            raise ConfigError(t.key("address"), f"{addr} is listed twice")
        seen.add(addr.lower())
        entries.append(
            ParticipantEntry(
                address=addr,
                max_samples=t.integer("max_samples", required=True) or 0,
                name=t.text("name", default=addr[:10]) or addr[:10],
            )
        )
    quorum = rules.get("rounds.min_updates")
    if role == "coordinator" and entries and quorum is not None and quorum > len(entries):
        raise ConfigError("federation.min_updates", f"{quorum} is more than the {len(entries)} participants listed")
    if federation.privacy is not None and federation.privacy["mode"] == "masked":
        _check_masked(federation, entries, complete=role == "coordinator")

    log_t = top.table("log", ("format",))
    fmt = log_t.text("format", default="text")
    if fmt not in ("text", "json"):
        raise ConfigError("log.format", f"must be 'text' or 'json', got {fmt!r}")

    return NodeConfig(
        path=path,
        chain=chain,
        ledger=ledger,
        store=store,
        keystore=resolve(keystore),
        federation=federation,
        task=task,
        participant=participant,
        participants=tuple(entries),
        log_json=fmt == "json",
    )


__all__ = [
    "KEY_ENV",
    "KUBO_ENV",
    "PASSWORD_ENV",
    "WORKDIR_FILE",
    "ChainConfig",
    "FederationConfig",
    "LedgerConfig",
    "NodeConfig",
    "ParticipantDataConfig",
    "ParticipantEntry",
    "TaskConfig",
    "Workdir",
    "check_address",
    "keystore_password",
    "kubo_api",
    "load_node_config",
    "load_signer",
]
