"""DP-SGD opt-in: the recorded privacy keys are exactly what Opacus' accountant used, and reproducible."""

from __future__ import annotations

import pytest
from opacus.accountants import RDPAccountant

from fedchain.tasks import load_task
from fedchain.tasks.icd import Dataset, IcdTask, load_icd10

DP_KEYS = {"dp_noise_multiplier", "dp_sample_rate", "dp_steps", "dp_delta", "dp_epsilon"}


def test_digits_with_dp_records_noise_rate_steps_delta_and_the_rdp_epsilon() -> None:
    task = load_task("digits", {"dp_noise_multiplier": 1.1, "dp_max_grad_norm": 1.0, "epochs": 2})
    data = task.demo(3, 0).participants[1].data
    result = task.train(task.init(0), data, {}, seed=9)
    metrics = dict(result.metrics)
    assert set(metrics) == {"loss", "accuracy"} | DP_KEYS
    assert metrics["dp_noise_multiplier"] == 1.1
    assert metrics["dp_sample_rate"] == 1 / -(-len(data) // 32)  # Opacus: 1 / len(loader)
    assert metrics["dp_steps"] == 2 * -(-len(data) // 32)
    assert metrics["dp_delta"] == 1e-5
    accountant = RDPAccountant()
    accountant.history = [(1.1, metrics["dp_sample_rate"], int(metrics["dp_steps"]))]
    assert metrics["dp_epsilon"] == accountant.get_epsilon(delta=1e-5)
    assert 0 < metrics["dp_epsilon"] < 10
    again = task.train(task.init(0), data, {}, seed=9)
    assert dict(again.metrics) == metrics
    assert all((again.arrays[n] == result.arrays[n]).all() for n in result.arrays)
    other = task.train(task.init(0), data, {}, seed=10)
    assert not (other.arrays["fc.weight"] == result.arrays["fc.weight"]).all()


def test_more_noise_spends_less_epsilon_and_the_round_config_can_switch_dp_on() -> None:
    task = load_task("digits")
    data = task.demo(3, 0).participants[0].data
    plain = task.train(task.init(0), data, {}, seed=1)
    assert not set(plain.metrics) & DP_KEYS
    low = task.train(task.init(0), data, {"dp_noise_multiplier": 0.8}, seed=1).metrics["dp_epsilon"]
    high = task.train(task.init(0), data, {"dp_noise_multiplier": 2.0}, seed=1).metrics["dp_epsilon"]
    assert high < low


@pytest.fixture(scope="module")
def tiny_icd() -> Dataset:
    icd10 = load_icd10()
    keep = range(0, len(icd10), 300)
    return Dataset("tiny", tuple(icd10.texts[i] for i in keep), tuple(icd10.labels[i] for i in keep), icd10.label_names)


def test_icd_trains_with_dp_through_opacus_embedding_bag_grad_sampler(tiny_icd: Dataset) -> None:
    task = IcdTask(num_buckets=256, dp_noise_multiplier=1.0, lr=1.0)
    result = task.train(task.init(0), tiny_icd, {}, seed=2)
    assert set(result.metrics) == {"loss", "accuracy"} | DP_KEYS
    assert result.metrics["dp_steps"] == -(-len(tiny_icd) // 32)
    assert result.metrics["dp_epsilon"] > 0
    again = task.train(task.init(0), tiny_icd, {}, seed=2)
    assert all((again.arrays[n] == result.arrays[n]).all() for n in result.arrays)
