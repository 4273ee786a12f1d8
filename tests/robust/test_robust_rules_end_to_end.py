"""Robust rules end to end: the demo with each rule, its audit, and coordinators that apply another rule.

The digits task with three (or five) participants, one local epoch and two rounds keeps each
federation to a few seconds; the protocol exercised is the demo's.
"""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from typing import Any

import pytest

from fedchain.audit import AuditReport, audit_ledger
from fedchain.chain import EmbeddedChain
from fedchain.cli import main
from fedchain.fl.robust import rule_from_config
from fedchain.hashing import sha256
from fedchain.orchestrator.federation import Federation, make_manifest
from fedchain.protocol import Rules, load_model, strategy_for
from fedchain.protocol.blobs import aggregate_blob, read_update
from fedchain.storage import open_store
from fedchain.tasks.digits import DigitsTask

pytestmark = pytest.mark.slow

#: Each rule with the demo flags that set its parameters, and its canonical name in the verdicts.
DEMO_RULES: dict[str, tuple[list[str], str]] = {
    "median": (["--aggregation", "median"], "median:server_lr=1.0"),
    "trimmed-mean": (["--aggregation", "trimmed-mean", "--trim", "0.34"], "trimmed-mean:server_lr=1.0,trim=0.34"),
    "krum": (["--aggregation", "krum", "--byzantine", "1"], "krum:f=1,server_lr=1.0"),
    "multi-krum": (
        ["--aggregation", "multi-krum", "--byzantine", "1", "--select", "2", "--clip", "50"],
        "multi-krum:clip=50.0,f=1,m=2,server_lr=1.0",
    ),
}


def run_cli(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with redirect_stdout(out):
        code = main(argv)
    return code, out.getvalue()


def demo(workdir: Path, flags: list[str]) -> int:
    code, _ = run_cli(
        ["demo", "--task", "digits", "--set", "epochs=1", "--rounds", "2", "--workdir", str(workdir), *flags]
    )
    return code


def audit_json(workdir: Path) -> dict[str, Any]:
    code, text = run_cli(["audit", "--workdir", str(workdir), "--json"])
    assert code == 0, text
    return dict(json.loads(text))


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One two-round demo per rule (shared by the tests that read them)."""
    runs: dict[str, Path] = {}
    for rule, (flags, _) in DEMO_RULES.items():
        workdir = tmp_path_factory.mktemp(rule)
        assert demo(workdir, flags) == 0, rule
        runs[rule] = workdir
    return runs


@pytest.mark.parametrize("rule", sorted(DEMO_RULES))
def test_the_demo_with_each_rule_passes_its_audit_from_a_fresh_reader(demo_runs: dict[str, Path], rule: str) -> None:
    report = audit_json(demo_runs[rule])

    assert report["ok"] is True
    assert report["rounds_finalized"] == 2
    assert report["manifest"]["aggregation"]["rule"] == rule


@pytest.mark.parametrize("rule", sorted(DEMO_RULES))
def test_the_audit_names_the_rule_and_its_parameters_in_every_round(demo_runs: dict[str, Path], rule: str) -> None:
    report = audit_json(demo_runs[rule])

    assert [r["rule"] for r in report["rounds"]] == [DEMO_RULES[rule][1]] * 2


@pytest.mark.parametrize(("rule", "kept"), [("krum", 1), ("multi-krum", 2)])
def test_krum_reports_the_updates_it_left_out_as_discarded_not_excluded(
    demo_runs: dict[str, Path], rule: str, kept: int
) -> None:
    report = audit_json(demo_runs[rule])

    for r in report["rounds"]:
        statuses = sorted(u["status"] for u in r["updates"])
        assert statuses == sorted(["included"] * kept + ["discarded"] * (3 - kept))
        assert r["discarded"] == 3 - kept
        assert r["valid"] == 3
        assert r["included"] == 3  # the ledger's inclusion list holds every valid update
        assert r["failures"] == []


def test_the_coordinators_own_verdict_marks_what_krum_discarded_like_the_audit(tmp_path: Path) -> None:
    with federation(tmp_path, {"rule": "krum", "server_lr": 1.0, "f": 1}) as fed:
        fed.run(1)
        coordinator_view = {o.record.participant: o.status.value for o in fed_reports(fed)[0].outcomes}
        audited = {o.record.participant: o.status.value for o in audit_ledger(fed.ledger, fed.store).rounds[0].outcomes}

    assert sorted(coordinator_view.values()) == ["discarded", "discarded", "included"]
    assert coordinator_view == audited


def test_two_runs_of_the_same_seed_record_the_same_aggregate_digests(
    tmp_path: Path, demo_runs: dict[str, Path]
) -> None:
    again = tmp_path / "again"
    assert demo(again, DEMO_RULES["multi-krum"][0]) == 0

    first = [r["aggregate"]["hash"] for r in audit_json(demo_runs["multi-krum"])["rounds"]]
    second = [r["aggregate"]["hash"] for r in audit_json(again)["rounds"]]
    assert first == second
    assert len(set(first)) == 2


# --------------------------------------------------------------------------- a coordinator applying another rule


def fed_reports(fed: Federation) -> list[Any]:
    """The coordinator's own round verdicts (``Federation.run`` returns summaries only)."""
    return fed.coordinator_reports  # type: ignore[attr-defined, no-any-return]


@contextmanager
def federation(tmp_path: Path, aggregation: dict[str, Any], participants: int = 3) -> Iterator[Federation]:
    """A digits federation on the in-process chain and the embedded store, keeping its coordinator's reports."""
    task = DigitsTask(epochs=1)
    data = task.demo(participants, 0)
    manifest = make_manifest(task, seed=0, min_updates=participants, aggregation=aggregation)
    chain = EmbeddedChain()
    store = open_store(str(tmp_path / "store"))
    try:
        fed = Federation.create(chain, store, task, data.participants, manifest)
        reports: list[Any] = []
        finish = fed.coordinator.finish

        def keep(round_id: int) -> Any:
            report = finish(round_id)
            reports.append(report.verdict)
            return report

        fed.coordinator.finish = keep  # type: ignore[method-assign]
        fed.coordinator_reports = reports  # type: ignore[attr-defined]
        yield fed
    finally:
        chain.close()


def submit_round(fed: Federation, round_id: int) -> None:
    """Open round ``round_id``, have every participant train and submit, and close it."""
    assert fed.coordinator.open_round() == round_id
    for p in fed.participants:
        assert p.participate(round_id) is not None
    fed.coordinator.close(round_id)


def failed_rounds(report: AuditReport) -> list[tuple[int, str]]:
    return [(e.round_id, e.what) for e in report.all_failures]


def test_a_coordinator_that_aggregates_with_fedavg_on_a_median_manifest_fails_the_audit_at_that_round(
    tmp_path: Path,
) -> None:
    with federation(tmp_path, {"rule": "median", "server_lr": 1.0}) as fed:
        fed.run(1)
        submit_round(fed, 1)
        honest = fed.coordinator.rules
        fed.coordinator.rules = dataclasses.replace(honest, strategy=strategy_for({"rule": "fedavg", "server_lr": 1.0}))
        fed.coordinator.finish(1)
        report = audit_ledger(fed.ledger, fed.store)

    assert [v.ok for v in report.rounds] == [True, False]
    assert failed_rounds(report) == [(1, "aggregate (recomputed)")]
    assert "round 1" in str(report.all_failures[0])


def test_a_coordinator_that_trims_more_than_the_manifest_says_fails_the_audit_at_that_round(tmp_path: Path) -> None:
    # five updates: trim 0.1 cuts floor(0.5) = 0 at each end, trim 0.2 cuts floor(1.0) = 1
    with federation(tmp_path, {"rule": "trimmed-mean", "server_lr": 1.0, "trim": 0.1}, participants=5) as fed:
        fed.run(1)
        submit_round(fed, 1)
        c = fed.coordinator
        history = fed.ledger.round_history(1)
        base = _load_base(fed, history)
        updates = [(u.participant, u.num_samples, _delta(fed, u, history)) for u in history.updates]
        wrong = rule_from_config("trimmed-mean", {"server_lr": 1.0, "trim": 0.2}).aggregate(base, updates).params
        right = c.rules.strategy.aggregate(base, iter(updates), total_samples=sum(n for _, n, _ in updates))
        assert any((wrong[k] != right[k]).any() for k in right)  # the two parameters do differ here
        total = sum(u.num_samples for u in history.updates)
        # the blob's header names the manifest's rule: only the values betray the other parameter
        blob = aggregate_blob(wrong, c.rules, round_id=1, base_hash=history.opened.base_hash, num_samples=total)
        cid = fed.store.put(blob)
        fed.ledger.finalize_round(c.signer, 1, sha256(blob), cid, [u.participant for u in history.updates])
        report = audit_ledger(fed.ledger, fed.store)

    assert [v.ok for v in report.rounds] == [True, False]
    assert failed_rounds(report) == [(1, "aggregate (recomputed)")]


def _load_base(fed: Federation, history: Any) -> dict[str, Any]:
    return load_model(
        fed.store, fed.rules, history.opened.base_cid, history.opened.base_hash, round_id=1, what="base model"
    )


def _delta(fed: Federation, record: Any, history: Any) -> dict[str, Any]:
    blob = fed.store.get_verified(record.cid, record.update_hash, max_size=fed.rules.max_blob_size)
    return dict(read_update(blob, fed.rules, record, base_hash=history.opened.base_hash).delta)


def test_the_rules_object_of_a_robust_manifest_is_the_manifests_rule(tmp_path: Path) -> None:
    with federation(tmp_path, {"rule": "trimmed-mean", "server_lr": 1.0, "trim": 0.1}) as fed:
        assert isinstance(fed.rules, Rules)
        assert fed.rules.strategy.name == "trimmed-mean:server_lr=1.0,trim=0.1"
