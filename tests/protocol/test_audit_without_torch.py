"""``fedchain audit`` of a finished federation runs in an interpreter where torch cannot be imported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from support.federation import run_small_demo

import fedchain

ROOT = Path(fedchain.__file__).resolve().parents[1]

BLOCKED = """
import sys
for name in ("torch", "torchvision", "opacus", "peft", "transformers"):
    sys.modules[name] = None  # any `import torch` now raises ImportError
from fedchain.cli import main
code = main(sys.argv[1:])
torch_free = {"fedchain.tasks.api", "fedchain.tasks._seeds"}  # what the orchestrator's `import fedchain.tasks.api` runs
loaded = sorted(m for m in sys.modules if m.startswith("fedchain.tasks.") and m not in torch_free)
print("task modules loaded:", loaded)
sys.exit(code)
"""


def test_the_audit_of_a_demo_workdir_passes_with_torch_unimportable(tmp_path: Path) -> None:
    result = run_small_demo(tmp_path / "demo", rounds=2)
    assert result.audit.ok
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for extra in ([], ["--json"], ["--check-cids", "--expect-rounds", "2"]):
        proc = subprocess.run(
            [sys.executable, "-c", BLOCKED, "audit", "--workdir", str(tmp_path / "demo"), *extra],
            capture_output=True,
            check=False,
            text=True,
            timeout=300,
            env=env,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "task modules loaded: []" in proc.stdout
    assert (
        "audit PASSED"
        in subprocess.run(
            [sys.executable, "-c", BLOCKED, "audit", "--workdir", str(tmp_path / "demo")],
            capture_output=True,
            check=False,
            text=True,
            timeout=300,
            env=env,
        ).stdout
    )


def test_the_blocking_really_blocks_torch() -> None:
    """The same interpreter set-up refuses a command that needs torch (so the audit's pass means something)."""
    proc = subprocess.run(
        [sys.executable, "-c", BLOCKED.replace("from fedchain.cli import main", "import torch  # noqa"), "--version"],
        capture_output=True,
        check=False,
        text=True,
        timeout=120,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert proc.returncode == 1 and "import of torch halted" in proc.stderr
