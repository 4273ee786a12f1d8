"""Every shipped task runs in the demo on the embedded defaults and ends with a passing audit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from fedchain.cli import main

#: The lm task's tiny configuration (a base pre-trained in seconds).
TINY_LM = [
    "n_layer=1",
    "n_head=1",
    "n_embd=16",
    "n_positions=32",
    "pretrain_steps=10",
    "demo_train_records=40",
    "demo_heldout_records=10",
]


def test_the_lm_demo_fine_tunes_lora_adapters_and_its_audit_passes_without_torch(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)  # the base's cache goes to the working directory
    args = ["demo", "--task", "lm", "--rounds", "2", "--workdir", str(tmp_path / "lm")]
    for setting in TINY_LM + [f"cache_dir={tmp_path / 'cache'}"]:
        args += ["--set", setting]
    assert main(args) == 0
    code = "import sys; sys.modules['torch'] = None\nfrom fedchain.cli import main\nsys.exit(main(['audit', '--workdir', sys.argv[1]]))"
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "lm")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ},
    )
    assert proc.returncode == 0, proc.stderr
    assert "audit PASSED" in proc.stdout and "task lm 1" in proc.stdout
