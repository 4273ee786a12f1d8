"""The numpy FedAvg of the plain federation: its fixed float64 arithmetic, in participant order."""

from __future__ import annotations

import numpy as np
import pytest

from fedchain.errors import AggregationError, ConfigError
from fedchain.tasks import load_task, participant_seed
from fedchain.tasks._baselines import fedavg, plain_fedavg


def test_fedavg_weights_each_delta_by_its_share_of_samples_in_float64() -> None:
    base = {"w": np.array([1.0, 2.0], np.float32)}
    updates = [("b", 3, {"w": np.array([1.0, 0.0], np.float32)}), ("a", 1, {"w": np.array([-4.0, 8.0], np.float32)})]
    out = fedavg(base, updates)
    assert out["w"].dtype == np.float32
    assert out["w"].tolist() == [1.0 + (-4.0 * 0.25 + 1.0 * 0.75), 2.0 + 8.0 * 0.25]


def test_fedavg_sums_in_lower_cased_participant_order_whatever_the_input_order() -> None:
    rng = np.random.default_rng(0)
    base = {"w": rng.standard_normal(1000).astype(np.float32)}
    updates = [
        (name, n, {"w": rng.standard_normal(1000).astype(np.float32)}) for name, n in (("B", 7), ("a", 3), ("c", 11))
    ]
    expected = base["w"].astype(np.float64)
    for _, n, delta in sorted(updates, key=lambda u: u[0].lower()):
        expected = expected + delta["w"].astype(np.float64) * np.float64(float(n) / 21)
    assert np.array_equal(fedavg(base, updates)["w"], expected.astype(np.float32))
    assert np.array_equal(fedavg(base, updates[::-1])["w"], fedavg(base, updates)["w"])


def test_fedavg_of_no_updates_is_the_base_and_a_participant_twice_is_refused() -> None:
    base = {"w": np.array([1.5], np.float32)}
    assert fedavg(base, [])["w"].tolist() == [1.5]
    with pytest.raises(AggregationError, match="appears twice"):
        fedavg(base, [("A", 1, base), ("a", 1, base)])


def test_plain_fedavg_aggregates_each_update_under_the_name_aggregate_as_gives() -> None:
    # benchmarks/lm_overhead.py passes the ledger addresses, so that FedAvg sums in the ledger's order
    task = load_task("digits")
    demo = task.demo(3, 0)
    names = [p.name for p in demo.participants]
    # the reverse of the names' own order
    renamed = {name: f"p{index}" for index, name in enumerate(sorted(names, key=str.lower, reverse=True))}
    base = task.init(0)
    updates = []
    for p in demo.participants:
        result = task.train(base, p.data, task.train_config(), seed=participant_seed(0, 0, p.name))
        delta = {n: result.arrays[n] - base[n] for n in sorted(base)}
        updates.append((renamed[p.name], result.num_samples, delta))
    expected = fedavg(base, updates)
    got = plain_fedavg(task, demo, 1, 0, aggregate_as=renamed).arrays
    assert sorted(got) == sorted(expected)
    assert all(np.array_equal(got[n], expected[n]) for n in got)
    # the names are the ones FedAvg sees: two updates under one name are refused, a participant without one too
    with pytest.raises(AggregationError, match="appears twice"):
        plain_fedavg(task, demo, 1, 0, aggregate_as={name: "same" for name in names})
    with pytest.raises(ConfigError, match="participant-0"):
        plain_fedavg(task, demo, 1, 0, aggregate_as={name: name for name in names[1:]})
