"""The icd task's local training: trained arrays, reproducibility, that it learns, and its errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedchain.errors import CodecError, ConfigError, DataError
from fedchain.tasks._torch import torch_threads
from fedchain.tasks.icd import Dataset, FederatedSplit, IcdTask, majority_accuracy
from fedchain.tasks.icd.train import TrainConfig

TASK = IcdTask(num_buckets=2048, dim=16)


def test_training_returns_every_trained_tensor_and_leaves_the_base_untouched(small_split: FederatedSplit) -> None:
    shard = small_split.shards[1]
    base = TASK.init(0)
    before = {n: a.copy() for n, a in base.items()}
    result = TASK.train(base, shard, {}, seed=1)
    assert all(np.array_equal(base[n], before[n]) for n in base)
    assert result.num_samples == len(shard)
    assert list(result.arrays) == sorted(base) == list(TASK.schema().names)
    assert all(result.arrays[n].dtype == np.float32 and result.arrays[n].shape == base[n].shape for n in base)
    assert float(np.abs(result.arrays["fc.weight"] - base["fc.weight"]).sum()) > 0
    assert set(result.metrics) == {"loss", "accuracy"}
    assert 0 < result.metrics["loss"] < 4 and 0 < result.metrics["accuracy"] <= 1


def test_training_is_reproducible_given_the_seed(small_split: FederatedSplit) -> None:
    shard = small_split.shards[2]
    base = TASK.init(0)
    a = TASK.train(base, shard, {}, seed=5)
    b = TASK.train(base, shard, {}, seed=5)
    c = TASK.train(base, shard, {}, seed=6)
    assert all(np.array_equal(a.arrays[n], b.arrays[n]) for n in a.arrays)
    assert a.metrics == b.metrics
    assert not np.array_equal(a.arrays["fc.weight"], c.arrays["fc.weight"])


def test_training_learns_far_above_the_majority_baseline(small_split: FederatedSplit) -> None:
    pooled = TASK.pool(small_split.shards)
    base = TASK.init(0)
    trained = TASK.train(base, pooled, {"epochs": 3}, seed=0).arrays
    majority = majority_accuracy(pooled, small_split.test)
    assert TASK.evaluate(trained, small_split.test)["accuracy"] > majority + 0.3
    assert TASK.evaluate(base, small_split.test)["accuracy"] < majority + 0.1


def test_empty_or_mismatched_data_is_a_data_error() -> None:
    base = TASK.init(0)
    empty = Dataset(name="empty", texts=(), labels=(), label_names=tuple(str(i) for i in range(22)))
    with pytest.raises(DataError, match="no training records"):
        TASK.train(base, empty, {}, seed=0)
    with pytest.raises(DataError, match="nothing to evaluate"):
        TASK.evaluate(base, empty)
    three = Dataset(name="three", texts=("a",), labels=(0,), label_names=("x", "y", "z"))
    with pytest.raises(DataError, match="3 classes"):
        TASK.train(base, three, {}, seed=0)


def test_arrays_of_another_shape_or_dtype_are_refused(small_split: FederatedSplit) -> None:
    base = TASK.init(0)
    with pytest.raises(CodecError, match="'fc.bias' has shape"):
        TASK.train({**base, "fc.bias": np.zeros(4, np.float32)}, small_split.shards[0], {}, seed=0)
    with pytest.raises(CodecError, match="float32"):
        TASK.evaluate({**base, "fc.bias": np.zeros(22, np.float64)}, small_split.test)
    with pytest.raises(CodecError, match="'fc.weight' is missing"):
        TASK.evaluate({n: a for n, a in base.items() if n != "fc.weight"}, small_split.test)


def test_a_round_config_key_the_task_does_not_know_or_a_bad_value_is_a_config_error(
    small_split: FederatedSplit,
) -> None:
    with pytest.raises(ConfigError, match=r"^config\.momentum: not a training setting"):
        TASK.train(TASK.init(0), small_split.shards[0], {"momentum": 0.9}, seed=0)
    with pytest.raises(ConfigError, match=r"^config\.epochs: must be a positive integer"):
        TASK.train(TASK.init(0), small_split.shards[0], {"epochs": 0}, seed=0)


def test_train_config_is_validated() -> None:
    for bad in ({"epochs": 0}, {"lr": float("inf")}, {"lr": -1.0}, {"batch_size": 0}):
        with pytest.raises(ValueError):
            TrainConfig(**bad)  # type: ignore[arg-type]


def test_torch_threads_restores_the_previous_count() -> None:
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
