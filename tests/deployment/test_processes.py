"""A three-hospital federation as four real processes over anvil, then a fresh-process audit."""

from __future__ import annotations

from typing import Any


def test_three_hospitals_in_separate_processes_finish_three_rounds_and_audit_clean(deployment: Any) -> None:
    d = deployment.configure()
    d.start()
    for node in d.nodes:
        assert node.wait_exit() == 0, node.text()[-3000:]
    d.assert_complete()
    log = d.coordinator.text()
    assert log.count("event=ledger_deployed ") == 1
    for r in range(3):
        assert log.count(f"event=round_opened round={r} ") == 1
        assert log.count(f"event=round_finalized round={r} ") == 1
    for p in d.participants:
        assert p.text().count("event=update_submitted") == 3
        assert "event=round_verified round=2 ok=True" in p.text()
        assert "event=federation_finished rounds=3" in p.text()
    audit = d.audit()
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert "audit PASSED: every ended round verifies" in audit.stdout
    assert "3 rounds ended (3 finalized)" in audit.stdout
