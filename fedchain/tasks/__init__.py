"""Tasks: the model-specific code of a federation (init, train, evaluate, data loading).

The only fedchain package whose modules import torch; see :mod:`fedchain.tasks.api`.
Importing this package imports no torch: :func:`load_task` imports a task's module when
it is asked for it.

Shipped tasks (``[task] app = ...`` or ``fedchain demo --task ...``):

- ``icd``: :class:`fedchain.tasks.icd.IcdTask`, the ICD-10-CM chapter classifier;
- ``digits``: :class:`fedchain.tasks.digits.DigitsTask`, a small CNN on scikit-learn's digits;
- ``lm``: :class:`fedchain.tasks.lm.LmTask`, a LoRA-adapted language model.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fedchain.errors import ConfigError
from fedchain.tasks._seeds import derive_seed, participant_seed
from fedchain.tasks.api import Config, DemoData, DemoParticipant, Task, TrainResult

logger = logging.getLogger(__name__)

#: Short names of the shipped tasks and the ``package.module:attribute`` each stands for.
SHIPPED: dict[str, str] = {
    "icd": "fedchain.tasks.icd:IcdTask",
    "digits": "fedchain.tasks.digits:DigitsTask",
    "lm": "fedchain.tasks.lm:LmTask",
}


def _missing(err: ModuleNotFoundError, module_name: str) -> bool:
    """``err`` says that ``module_name`` itself (or a package above it) is missing, not one it imports."""
    return err.name is not None and module_name.startswith(err.name) and module_name[len(err.name) :][:1] in ("", ".")


def _import(module_name: str, search: Sequence[str | os.PathLike[str]]) -> Any:
    """Import ``module_name``; if it is not importable, append the ``search`` directories to ``sys.path`` and retry."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        extra = [str(Path(d).resolve()) for d in search]
        extra = [d for i, d in enumerate(extra) if d not in sys.path and d not in extra[:i]]
        if not _missing(err, module_name) or not extra:
            raise
    sys.path.extend(extra)  # appended: never shadows an importable module
    importlib.invalidate_caches()
    logger.info("task module %s not importable; added %s to the Python path", module_name, ", ".join(extra))
    return importlib.import_module(module_name)


def _resolve(app: str, search: Sequence[str | os.PathLike[str]] = ()) -> Any:
    target = SHIPPED.get(app, app)
    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigError(
            "task.app", f"{app!r} is neither a shipped task ({', '.join(SHIPPED)}) nor 'package.module:attribute'"
        )
    try:
        module = _import(module_name, search)
    except ModuleNotFoundError as err:
        if _missing(err, module_name):
            raise ConfigError("task.app", f"no module named {module_name!r} (is its directory on the path?)") from err
        raise ConfigError("task.app", f"importing {module_name!r} failed: {err}") from err
    except ImportError as err:
        raise ConfigError("task.app", f"importing {module_name!r} failed: {err}") from err
    obj: Any = module
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as err:
            raise ConfigError("task.app", f"module {module_name!r} has no attribute {attribute!r}") from err
    if not callable(obj):
        raise ConfigError("task.app", f"{target!r} is a {type(obj).__name__}, not a Task subclass or a factory")
    if isinstance(obj, type) and not issubclass(obj, Task):
        raise ConfigError("task.app", f"{target!r} is a class but not a subclass of fedchain.tasks.api.Task")
    return obj


def _check_keys(app: str, factory: Any, settings: Mapping[str, Any]) -> None:
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # a builtin without a signature: let the call decide
        return
    params = signature.parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return
    accepted = [
        p.name for p in params if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    for key in settings:
        if key not in accepted:
            raise ConfigError(
                f"task.settings.{key}",
                f"not a setting of task {app!r} (accepted: {', '.join(accepted) if accepted else 'none'})",
            )


def load_task(
    app: str, settings: Mapping[str, Any] | None = None, *, search: Sequence[str | os.PathLike[str]] = ()
) -> Task:
    """The task named ``app``, built with ``settings`` (a node TOML's ``[task.settings]``).

    Parameters
    ----------
    app:
        A shipped task's name (``icd``, ``digits``, ``lm``) or ``package.module:attribute``,
        where ``attribute`` is a :class:`Task` subclass or a factory returning a task; it is
        called with ``settings`` as keyword arguments.
    settings:
        The task's settings; none by default.
    search:
        Directories to append to ``sys.path`` if ``app``'s module is not importable as it is
        (the command line passes the current directory, where ``fedchain new`` writes a package).

    Returns
    -------
    Task

    Raises
    ------
    ConfigError
        ``task.app`` if the module or attribute cannot be found or is not a task;
        ``task.settings.<key>`` if the task does not accept a key or refuses its value.
    """
    if not isinstance(app, str) or not app:
        raise ConfigError("task.app", f"must be a non-empty string, got {app!r}")
    settings = dict(settings or {})
    for key in settings:
        if not isinstance(key, str) or not key.isidentifier():
            raise ConfigError(f"task.settings.{key}", "a setting's name must be a Python identifier")
    factory = _resolve(app, search)
    _check_keys(app, factory, settings)
    try:
        task = factory(**settings)
    except ConfigError as err:
        if err.key.startswith("task."):
            raise
        raise ConfigError(f"task.settings.{err.key}", err.problem) from err
    except (TypeError, ValueError) as err:
        raise ConfigError("task.settings", f"task {app!r} refused its settings: {err}") from err
    if not isinstance(task, Task):
        raise ConfigError("task.app", f"{app!r} returned a {type(task).__name__}, not a fedchain.tasks.api.Task")
    logger.debug("loaded task %s (%s %s) with settings %s", app, task.name, task.version, sorted(settings))
    return task


__all__ = [
    "SHIPPED",
    "Config",
    "DemoData",
    "DemoParticipant",
    "Task",
    "TrainResult",
    "derive_seed",
    "load_task",
    "participant_seed",
]
