"""The robust rules: exact small cases, bit-exactness (threads, processes, input order), agreement with Flower."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from fedchain.errors import AggregationError, ConfigError
from fedchain.fl._robust_exec import exact_gram, make_plan
from fedchain.fl.robust import (
    RULES,
    RobustResult,
    RobustUpdate,
    clip_updates,
    coordinate_median,
    krum,
    multi_krum,
    rule_from_config,
    rule_from_name,
    trimmed_mean,
)

ROOT = Path(__file__).resolve().parents[2]


def addr(i: int) -> str:
    return f"0x{i:040x}"


def scalar_updates(values: Sequence[float], counts: Sequence[int] | None = None) -> list[RobustUpdate]:
    counts = counts or [1] * len(values)
    return [(addr(i), n, {"w": np.array([v], dtype=np.float32)}) for i, (v, n) in enumerate(zip(values, counts))]


ZERO = {"w": np.zeros(1, dtype=np.float32)}


def random_round(k: int, p: int, seed: int) -> tuple[dict[str, np.ndarray], list[RobustUpdate]]:
    rng = np.random.default_rng(seed)
    base = {"b": rng.standard_normal(7, dtype=np.float32), "w": rng.standard_normal((p, 3), dtype=np.float32)}
    updates: list[RobustUpdate] = []
    for i in range(k):
        scale = np.float32(0.01 * (1 + 0.3 * i))
        delta = {name: rng.standard_normal(a.shape, dtype=np.float32) * scale for name, a in base.items()}
        updates.append((f"0x{rng.integers(1 << 62):040X}", int(rng.integers(1, 500)), delta))
    return base, updates


def digest(result: RobustResult) -> str:
    h = hashlib.sha256()
    for name in sorted(result.params):
        h.update(name.encode())
        h.update(result.params[name].tobytes())
    h.update(json.dumps([result.selected, result.discarded, result.clipped]).encode())
    return h.hexdigest()


RULE_CONFIGS: list[tuple[str, Mapping[str, object]]] = [
    ("median", {}),
    ("median", {"server_lr": 0.7}),
    ("trimmed-mean", {"trim": 0.25}),
    ("krum", {"f": 1}),
    ("multi-krum", {"f": 1, "m": 3, "clip": 0.5}),
    ("fedavg", {"clip": 0.5}),
]


# --------------------------------------------------------------------------- exact small cases


def test_the_median_of_an_odd_count_is_the_middle_value() -> None:
    result = coordinate_median(ZERO, scalar_updates([5.0, -1.0, 2.0]))
    assert result.params["w"].tolist() == [2.0]
    assert result.discarded == () and len(result.selected) == 3


def test_the_median_of_an_even_count_is_the_float64_mean_of_the_middle_two_rounded_once() -> None:
    a, b = np.float32(1.0), np.float32(1.0 + 2.0**-23)  # their mean needs a 25th bit
    result = coordinate_median(ZERO, scalar_updates([float(b), 9.0, float(a), -9.0]))
    expected = np.float32((np.float64(a) + np.float64(b)) * 0.5)  # ties to even: 1.0
    assert result.params["w"].tobytes() == np.array([expected], dtype=np.float32).tobytes()
    assert result.params["w"].tolist() == [1.0]


def test_the_median_is_added_to_the_base_with_the_server_learning_rate() -> None:
    base = {"w": np.array([10.0], dtype=np.float32)}
    result = coordinate_median(base, scalar_updates([1.0, 2.0, 4.0]), server_lr=0.5)
    assert result.params["w"].tolist() == [11.0]


def test_the_trimmed_mean_cuts_floor_trim_times_k_at_each_end() -> None:
    # K=5, trim=0.25: floor(1.25) = 1 value cut at each end; mean of 1, 2, 4
    result = trimmed_mean(ZERO, scalar_updates([100.0, 1.0, 2.0, 4.0, -100.0]), trim=0.25)
    assert result.params["w"].tolist() == [np.float32(7.0 / 3.0)]


def test_a_trim_fraction_of_a_half_is_refused() -> None:
    with pytest.raises(AggregationError, match="trim fraction"):
        trimmed_mean(ZERO, scalar_updates([1.0, 2.0]), trim=0.5)


def test_krum_selects_an_update_of_the_honest_cluster_and_discards_the_outlier() -> None:
    updates = scalar_updates([1.0, 1.1, 0.9, 1.05, 50.0])
    result = krum(ZERO, updates, f=1)
    # K - f - 2 = 2 closest: 1.05 is 0.05 from both 1.0 and 1.1 (score 0.005), 1.0 scores 0.0125
    assert result.selected == (addr(3),)
    assert addr(4) in result.discarded and len(result.discarded) == 4
    assert result.params["w"].tolist() == [np.float32(1.05)]
    scores = dict(result.scores)
    assert max(scores, key=scores.__getitem__) == addr(4)


def test_krum_breaks_a_tie_of_scores_by_the_lower_participant() -> None:
    updates = [("0xBB", 1, {"w": np.array([1.0], np.float32)}), ("0xaa", 1, {"w": np.array([-1.0], np.float32)})]
    assert krum(ZERO, updates, f=0).selected == ("0xaa",)


def test_multi_krum_averages_the_selected_with_fedavg_weights() -> None:
    updates = scalar_updates([1.0, 2.0, 1.5, 80.0, -90.0], counts=[1, 3, 2, 5, 5])
    result = multi_krum(ZERO, updates, f=2, m=3)
    assert result.selected == (addr(0), addr(1), addr(2))
    assert result.discarded == (addr(3), addr(4))
    acc = np.float64(0.0)
    for value, n in ((1.0, 1), (2.0, 3), (1.5, 2)):  # FedAvg's arithmetic, n over the selected
        acc += np.float64(value) * np.float64(n / 6)
    assert result.params["w"].tobytes() == np.array([acc], dtype=np.float32).tobytes()


def test_the_exact_gram_matrix_equals_the_rational_dot_products() -> None:
    rng = np.random.default_rng(3)
    scales = [1e-30, 1.0, 1e20]  # a range of about 170 bits: 9 slices
    flats = [[(rng.standard_normal(300) * s).astype(np.float32)] for s in scales]
    flats[0][0][:5] = np.float32(1e-45)  # subnormals
    gram, exponent = exact_gram(flats, make_plan([300], 1))
    for i in range(3):
        for j in range(3):
            exact = sum(Fraction(float(x)) * Fraction(float(y)) for x, y in zip(flats[i][0], flats[j][0]))
            assert Fraction(int(gram[i, j])) * Fraction(2) ** exponent == exact


def test_clipping_scales_only_the_updates_above_the_norm() -> None:
    updates = [
        (addr(0), 1, {"w": np.array([3.0, 4.0], np.float32)}),
        (addr(1), 1, {"w": np.array([0.3, 0.4], np.float32)}),
    ]
    clipped, who = clip_updates(updates, 1.0)
    assert who == (addr(0),)
    assert clipped[0][2]["w"].tobytes() == np.array([0.6, 0.8], dtype=np.float32).tobytes()
    assert clipped[1][2]["w"] is updates[1][2]["w"]


def test_clipping_is_reported_by_the_rule() -> None:
    result = rule_from_config("median", {"clip": 1.0}).aggregate(ZERO, scalar_updates([3.0, 0.5, 0.2]))
    assert result.clipped == (addr(0),)
    assert result.params["w"].tolist() == [0.5]


def test_an_update_with_a_wrong_shape_is_refused_naming_the_participant() -> None:
    updates = [*scalar_updates([1.0]), (addr(9), 1, {"w": np.zeros(2, np.float32)})]
    with pytest.raises(AggregationError, match=addr(9)):
        coordinate_median(ZERO, updates)


def test_a_participant_twice_is_refused() -> None:
    updates = [*scalar_updates([1.0]), ("0X" + addr(0)[2:].upper(), 1, {"w": np.zeros(1, np.float32)})]
    with pytest.raises(AggregationError, match="appears twice"):
        krum(ZERO, updates, f=0)


# --------------------------------------------------------------------------- registry


def test_every_rule_has_a_canonical_name_that_parses_back() -> None:
    allowed = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:=,+-")
    for name, params in RULE_CONFIGS:
        rule = rule_from_config(name, params)
        assert set(rule.name) <= allowed and len(rule.name) <= 200
        assert rule_from_name(rule.name) == rule
        assert json.loads(json.dumps(rule.to_json())) == rule.to_json()
    assert {name for name, _ in RULE_CONFIGS} == RULES
    assert rule_from_config("fedavg", {}).name == "fedavg:server_lr=1.0"  # FedAvg.name
    assert (
        rule_from_config("multi-krum", {"f": 1, "m": 3, "clip": 0.5}).name
        == "multi-krum:clip=0.5,f=1,m=3,server_lr=1.0"
    )


def test_an_unknown_rule_or_parameter_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError, match="aggregation.rule"):
        rule_from_config("bulyan", {})
    with pytest.raises(ConfigError, match="aggregation.trim"):
        rule_from_config("median", {"trim": 0.1})
    with pytest.raises(ConfigError, match="aggregation.f"):
        rule_from_config("krum", {})
    with pytest.raises(ConfigError, match="aggregation.m"):
        rule_from_config("multi-krum", {"f": 1, "m": 0})


# --------------------------------------------------------------------------- bit-exactness


@pytest.mark.parametrize(("name", "params"), RULE_CONFIGS)
def test_every_thread_count_gives_the_same_bytes(name: str, params: Mapping[str, object]) -> None:
    base, updates = random_round(7, 70_000, seed=1)  # 210,007 elements: up to 3 threads get a share
    rule = rule_from_config(name, params)
    digests = {digest(replace(rule, threads=t).aggregate(base, updates)) for t in (1, 2, 3, 4)}
    assert len(digests) == 1


@pytest.mark.parametrize(("name", "params"), RULE_CONFIGS)
def test_the_order_of_the_updates_does_not_matter(name: str, params: Mapping[str, object]) -> None:
    base, updates = random_round(6, 500, seed=2)
    rule = rule_from_config(name, params)
    assert digest(rule.aggregate(base, updates)) == digest(rule.aggregate(base, updates[::-1]))


def test_a_fresh_process_computes_the_same_bytes() -> None:
    script = """
import hashlib, json, sys
sys.path.insert(0, "tests/fl")
from test_robust import RULE_CONFIGS, digest, random_round
from fedchain.fl.robust import rule_from_config
base, updates = random_round(6, 3000, seed=4)
print(json.dumps([digest(rule_from_config(n, p).aggregate(base, updates)) for n, p in RULE_CONFIGS]))
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    base, updates = random_round(6, 3000, seed=4)
    here = [digest(rule_from_config(n, p).aggregate(base, updates)) for n, p in RULE_CONFIGS]
    assert json.loads(done.stdout) == here


# --------------------------------------------------------------------------- agreement with Flower


def _flower_results(updates: Sequence[RobustUpdate]) -> list[tuple[list[np.ndarray], int]]:
    return [([d["b"], d["w"]], n) for _, n, d in sorted(updates, key=lambda u: u[0].lower())]


def _zero_like(base: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name: np.zeros_like(a) for name, a in base.items()}


def test_the_rules_agree_with_flowers_on_the_same_inputs() -> None:
    legacy = pytest.importorskip("flwr.server.strategy.aggregate", reason="flwr is not importable")
    base, updates = random_round(9, 2000, seed=5)
    zero = _zero_like(base)
    results = _flower_results(updates)

    def close(ours: RobustResult, theirs: list[np.ndarray], rtol: float = 1e-6) -> None:
        np.testing.assert_allclose(ours.params["b"], theirs[0], rtol=rtol, atol=1e-7)
        np.testing.assert_allclose(ours.params["w"], theirs[1], rtol=rtol, atol=1e-7)

    close(coordinate_median(zero, updates), legacy.aggregate_median(results))
    close(trimmed_mean(zero, updates, trim=0.2), legacy.aggregate_trimmed_avg(results, 0.2))
    close(krum(zero, updates, f=2), legacy.aggregate_krum(results, 2, 0))
    close(multi_krum(zero, updates, f=2, m=4), legacy.aggregate_krum(results, 2, 4))


def test_krum_selects_what_flowers_serverapp_selects() -> None:
    multikrum = pytest.importorskip("flwr.serverapp.strategy.multikrum", reason="flwr is not importable")
    _, updates = random_round(9, 2000, seed=6)
    ordered = sorted(updates, key=lambda u: u[0].lower())

    class Record:  # what select_multikrum reads of a reply's content
        def __init__(self, participant: str, arrays: list[np.ndarray]) -> None:
            self.participant, self.arrays, self.array_records = participant, arrays, {"arrays": self}

        def to_numpy_ndarrays(self) -> list[np.ndarray]:
            return self.arrays

        def __getitem__(self, key: str) -> Record:
            return self

    records = [Record(p, [d["b"], d["w"]]) for p, _, d in ordered]
    chosen = multikrum.select_multikrum(records, num_malicious_nodes=2, num_nodes_to_select=4)
    zero = _zero_like(ordered[0][2])
    assert multi_krum(zero, updates, f=2, m=4).selected == tuple(sorted(r.participant for r in chosen))
