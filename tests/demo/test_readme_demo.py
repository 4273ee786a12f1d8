"""The README's first command: `fedchain demo` on the embedded defaults, and the digest the README states."""

from __future__ import annotations

import re
from pathlib import Path

from fedchain.cli import main
from tests.support.machine import machine_types, pinned_for_this_machine

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_default_demo_ends_with_the_final_aggregate_the_readme_states(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    # one line per machine type (torch's float sums follow the vector width it picks for the CPU: machine_types)
    stated = {
        m.group(1): (m.group(2), m.group(3))
        for m in re.finditer(
            r"^ +(\w+(?: \w+)?) \(.*\): +final aggregate \(round 4\): (0x[0-9a-f]{64}) at (Qm\w+)$",
            README.read_text(encoding="utf-8"),
            re.MULTILINE,
        )
    }
    assert {"GenuineIntel", "AuthenticAMD AVX2", "AuthenticAMD AVX512"} <= set(stated), (
        "the README states the demo's final aggregate for every machine type measured"
    )
    pinned = pinned_for_this_machine(stated)
    assert pinned is not None, f"the README states no final aggregate for this machine type (any of {machine_types()})"
    digest, cid = pinned
    assert main(["demo", "--workdir", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert f"final aggregate (round 4): {digest} at {cid}" in out
    assert "audit PASSED" in out
    assert out.startswith("ledger ")  # no blank first line
