"""Configuration: the one module that reads environment variables and settings files.

* Keys: from an encrypted keystore file (password from ``FEDCHAIN_KEY_PASSWORD`` or a prompt)
  or from ``FEDCHAIN_PRIVATE_KEY``; never from a command-line argument, never logged.
* A working directory's ``federation.json``: where a federation's chain, ledger and store
  are, and the settings every actor agreed on, so that ``fedchain audit --workdir`` can
  find everything.
"""

from __future__ import annotations

import getpass
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fedchain.chain import Signer
from fedchain.errors import ConfigError

KEY_ENV = "FEDCHAIN_PRIVATE_KEY"
PASSWORD_ENV = "FEDCHAIN_KEY_PASSWORD"
KUBO_ENV = "FEDCHAIN_KUBO_API"
WORKDIR_FILE = "federation.json"
_WORKDIR_FORMAT = 1


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
        Participant names by address (informational: the chain is the source of truth).
    settings:
        The federation's settings (model spec, training, strategy), as JSON.
    """

    rpc: str
    ledger: str
    store: str
    participants: dict[str, str]
    settings: dict[str, Any]

    def save(self, directory: Path) -> Path:
        """Write ``federation.json`` atomically."""
        path = directory / WORKDIR_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"format": _WORKDIR_FORMAT, **asdict(self)}, indent=2, sort_keys=True) + "\n", encoding="utf-8")
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
            raise ConfigError(str(path), "not found: is this a fedchain working directory (made by `fedchain demo`)?") from err
        except (OSError, json.JSONDecodeError) as err:
            raise ConfigError(str(path), f"unreadable: {err}") from err
        if not isinstance(data, dict) or data.get("format") != _WORKDIR_FORMAT:
            raise ConfigError(f"{path}: format", f"expected {_WORKDIR_FORMAT}")
        fields = ("rpc", "ledger", "store", "participants", "settings")
        for key in fields:
            if key not in data:
                raise ConfigError(f"{path}: {key}", "missing")
        return cls(**{k: data[k] for k in fields})

    def store_location(self, directory: Path) -> str:
        """The store location, resolved against ``directory`` when it is a relative path."""
        if self.store.startswith(("http://", "https://", "/ip4/", "/ip6/", "/dns")):
            return self.store
        return str((directory / self.store).resolve())


__all__ = ["KEY_ENV", "KUBO_ENV", "PASSWORD_ENV", "WORKDIR_FILE", "Workdir", "keystore_password", "kubo_api", "load_signer"]
