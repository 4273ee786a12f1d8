"""The README's first command: `fedchain demo` on the embedded defaults, and the digest the README states."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from fedchain.cli import main

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_default_demo_ends_with_the_final_aggregate_the_readme_states(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    # one line per vector width torch trains with (its float sums follow it): this machine's must match
    stated = {
        m.group(1): (m.group(2), m.group(3))
        for m in re.finditer(
            r"^ +(\w+) \(.*\): +final aggregate \(round 4\): (0x[0-9a-f]{64}) at (Qm\w+)$",
            README.read_text(encoding="utf-8"),
            re.MULTILINE,
        )
    }
    assert {"AVX2", "AVX512"} <= set(stated), "the README states the demo's final aggregate for AVX2 and AVX-512"
    capability = torch.backends.cpu.get_cpu_capability()
    assert capability in stated, f"the README states no final aggregate for torch's CPU capability {capability}"
    digest, cid = stated[capability]
    assert main(["demo", "--workdir", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert f"final aggregate (round 4): {digest} at {cid}" in out
    assert "audit PASSED" in out
    assert out.startswith("ledger ")  # no blank first line
