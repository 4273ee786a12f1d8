"""Naming a task: shipped names, package.module:attribute, and the ConfigError of every failure."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from fedchain.errors import ConfigError
from fedchain.tasks import load_task
from fedchain.tasks.digits import DigitsTask
from fedchain.tasks.icd import IcdTask

MODULE = """
from fedchain.tasks.digits import DigitsTask

NOT_A_TASK = 3

class Plain:
    pass

def factory(*, lr: float = 0.1):
    return DigitsTask(lr=lr)

def not_a_task_factory():
    return object()
"""


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "user_tasks_mod.py").write_text(MODULE, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    return "user_tasks_mod"


def test_shipped_names_load_their_tasks_with_settings() -> None:
    assert type(load_task("icd")) is IcdTask
    digits = load_task("digits", {"lr": 0.05, "epochs": 2})
    assert type(digits) is DigitsTask and digits.train_config()["lr"] == 0.05 and digits.train_config()["epochs"] == 2
    assert type(load_task("fedchain.tasks.digits:DigitsTask")) is DigitsTask


def test_a_factory_is_called_with_the_settings(user_module: str) -> None:
    task = load_task(f"{user_module}:factory", {"lr": 0.5})
    assert isinstance(task, DigitsTask) and task.train_config()["lr"] == 0.5


@pytest.mark.parametrize(
    ("app", "problem"),
    [
        ("nope", "neither a shipped task"),
        ("no_such_module_xyz:Task", "no module named 'no_such_module_xyz'"),
        ("fedchain.tasks.digits:Missing", "has no attribute 'Missing'"),
        ("{mod}:NOT_A_TASK", "is a int, not a Task subclass or a factory"),
        ("{mod}:Plain", "not a subclass of fedchain.tasks.api.Task"),
        ("{mod}:not_a_task_factory", "returned a object, not a fedchain.tasks.api.Task"),
        ("", "must be a non-empty string"),
    ],
)
def test_a_bad_app_is_a_config_error_naming_task_app(user_module: str, app: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_task(app.format(mod=user_module))
    assert info.value.key == "task.app"
    assert problem in info.value.problem


@pytest.mark.parametrize(
    ("app", "settings", "key", "problem"),
    [
        ("icd", {"buckets": 3}, "task.settings.buckets", "not a setting of task 'icd' (accepted: num_buckets, dim"),
        ("icd", {"epochs": 0}, "task.settings.epochs", "must be a positive integer, got 0"),
        ("icd", {"lr": "fast"}, "task.settings.lr", "must be a positive finite number"),
        ("digits", {"num_participants": 11}, "task.settings.num_participants", "3 to 10 participants, not 11"),
        ("digits", {"dp_delta": 1.5}, "task.settings.dp_delta", "strictly between 0 and 1"),
        ("digits", {"data": ""}, "task.settings.data", "non-empty path"),
    ],
)
def test_a_bad_setting_is_a_config_error_naming_the_key(app: str, settings: dict, key: str, problem: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ConfigError) as info:
        load_task(app, settings)
    assert info.value.key == key
    assert problem in info.value.problem


def test_a_factory_that_refuses_a_value_is_a_config_error(user_module: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_task(f"{user_module}:factory", {"lr": -1.0})
    assert info.value.key == "task.settings.lr"


@pytest.mark.skipif(
    "torch"
    in subprocess.run(
        [sys.executable, "-c", "import sys, fedchain.fl.schema; print(*sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split(),
    reason="fedchain.fl's package init imports torch (until fedchain.fl is numpy-only)",
)
def test_importing_fedchain_tasks_imports_no_torch() -> None:
    code = (
        "import sys, fedchain.tasks, fedchain.tasks._starter, fedchain.tasks._baselines; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_lm_is_a_shipped_name_loaded_lazily() -> None:
    if importlib.util.find_spec("fedchain.tasks.lm") is None:
        with pytest.raises(ConfigError, match=r"task\.app: no module named 'fedchain\.tasks\.lm'"):
            load_task("lm")
    else:
        assert type(load_task("lm")).__name__ == "LmTask"
