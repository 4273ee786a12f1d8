"""fedchain new's starter: the package it writes loads as a task and trains; nothing is overwritten."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tomllib

from fedchain.errors import ConfigError
from fedchain.tasks import load_task
from fedchain.tasks._starter import starter


def test_the_starter_package_loads_by_its_toml_and_trains_one_round(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written = starter(tmp_path, "clinic_model")
    root = tmp_path / "clinic_model"
    assert [p.relative_to(root).as_posix() for p in written] == [
        "__init__.py",
        "task.py",
        "tests/__init__.py",
        "tests/test_task.py",
        "fedchain.toml",
        "README.md",
    ]
    config = tomllib.loads((root / "fedchain.toml").read_text(encoding="utf-8"))
    assert config["task"]["app"] == "clinic_model.task:Task"
    monkeypatch.syspath_prepend(str(tmp_path))
    task = load_task(config["task"]["app"], config["task"]["settings"])
    demo = task.demo(3, 0)
    arrays = task.init(0)
    result = task.train(arrays, demo.participants[0].data, task.train_config(), seed=1)
    assert result.num_samples == len(demo.participants[0].data)
    assert any(not np.array_equal(result.arrays[n], arrays[n]) for n in arrays)
    compile((root / "tests" / "test_task.py").read_text(encoding="utf-8"), "test_task.py", "exec")


def test_the_starter_refuses_an_existing_directory_and_a_bad_name(tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    with pytest.raises(ConfigError, match=r"^directory: .*taken exists already"):
        starter(tmp_path, "taken")
    assert list((tmp_path / "taken").iterdir()) == []
    for bad in ("Bad", "class", "has-dash", "1st"):
        with pytest.raises(ConfigError, match=r"^name: "):
            starter(tmp_path, bad)
