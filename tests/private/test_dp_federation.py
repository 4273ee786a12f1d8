"""DP-SGD in a running federation: recorded spends, the audit's composition, and the refusal to train past the budget."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedchain.chain import EmbeddedChain
from fedchain.fl.dp import compose, epsilon_dp_sgd
from fedchain.orchestrator._dp import DpBudgetExceededError
from fedchain.storage import LocalBlockStore
from tests.support.federation import audit, make, small_demo, small_manifest, small_task

DELTA = 1e-5


def dp_federation(tmp_path: Path, budget: float):  # type: ignore[no-untyped-def]
    train = {**small_task().train_config(), "dp_noise_multiplier": 1.0}
    manifest = small_manifest(train=train, privacy={"mode": "none", "dp": {"epsilon_budget": budget, "delta": DELTA}})
    return make(EmbeddedChain(), LocalBlockStore(tmp_path / "store"), small_demo(), manifest)


def test_the_audit_reports_each_participants_composed_epsilon_per_round(tmp_path: Path) -> None:
    fed = dp_federation(tmp_path, 1000.0)
    fed.run(2)
    report = audit(fed)
    assert report.ok, report.all_failures
    privacy = report.to_json()["privacy"]
    assert privacy["delta"] == DELTA and privacy["epsilon_budget"] == 1000.0
    assert set(privacy["per_participant"]) == {p.address for p in fed.participants}
    for v in report.rounds:
        for o in v.outcomes:
            m = o.metrics
            assert m["dp_epsilon"] == epsilon_dp_sgd(
                m["dp_noise_multiplier"], m["dp_sample_rate"], int(m["dp_steps"]), DELTA
            )
    for p in fed.participants:
        entry = privacy["per_participant"][p.address]
        assert [r["round"] for r in entry["rounds"]] == [0, 1]
        spends = [p.dp_spends[0], p.dp_spends[1]]
        assert entry["epsilon"] == compose(spends, DELTA)


def test_a_participant_refuses_to_train_the_round_that_would_pass_the_budget(tmp_path: Path) -> None:
    probe = dp_federation(tmp_path / "probe", 1000.0)
    probe.run(1)
    one = max(epsilon_dp_sgd(*s, DELTA) for p in probe.participants for s in p.dp_spends.values())
    fed = dp_federation(tmp_path / "run", one * 1.01)
    with pytest.raises(DpBudgetExceededError, match=r"round 1, participant 0x[0-9a-fA-F]{40}: refusing to train"):
        fed.run(2)
