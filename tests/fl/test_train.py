"""Local training: the delta it returns, reproducibility, and that it learns."""

from __future__ import annotations

import pytest
import torch

from fedchain.errors import DataError
from fedchain.fl import (
    Dataset,
    FederatedSplit,
    ModelSpec,
    TrainConfig,
    evaluate,
    init_params,
    majority_accuracy,
    torch_threads,
    train_local,
)

SPEC = ModelSpec(num_buckets=2048, dim=16)


def test_the_update_is_trained_minus_base_and_the_base_is_untouched(small_split: FederatedSplit) -> None:
    shard = small_split.shards[1]
    base = init_params(SPEC, 0)
    before = {n: t.clone() for n, t in base.items()}
    update = train_local(base, shard, TrainConfig(), spec=SPEC, seed=1)
    assert all(torch.equal(base[n], before[n]) for n in base)
    assert update.num_samples == len(shard)
    assert list(update.delta) == sorted(base)
    assert all(update.delta[n].dtype == torch.float32 and update.delta[n].shape == base[n].shape for n in base)
    assert update.metrics.steps == -(-len(shard) // 32)
    assert float(update.delta["fc.weight"].abs().sum()) > 0


def test_training_is_reproducible_given_the_seed(small_split: FederatedSplit) -> None:
    shard = small_split.shards[2]
    base = init_params(SPEC, 0)
    a = train_local(base, shard, TrainConfig(), spec=SPEC, seed=5).delta
    b = train_local(base, shard, TrainConfig(), spec=SPEC, seed=5).delta
    c = train_local(base, shard, TrainConfig(), spec=SPEC, seed=6).delta
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert not torch.equal(a["fc.weight"], c["fc.weight"])


def test_training_learns_far_above_the_majority_baseline(small_split: FederatedSplit) -> None:
    pooled = small_split.pooled()
    base = init_params(SPEC, 0)
    update = train_local(base, pooled, TrainConfig(epochs=3), spec=SPEC, seed=0)
    trained = {n: base[n] + update.delta[n] for n in base}
    majority = majority_accuracy(pooled, small_split.test)
    assert evaluate(trained, small_split.test, spec=SPEC) > majority + 0.3
    assert evaluate(base, small_split.test, spec=SPEC) < majority + 0.1


def test_empty_or_mismatched_data_is_a_data_error() -> None:
    base = init_params(SPEC, 0)
    empty = Dataset(name="empty", texts=(), labels=(), label_names=tuple(str(i) for i in range(22)))
    with pytest.raises(DataError, match="no training records"):
        train_local(base, empty, TrainConfig(), spec=SPEC, seed=0)
    with pytest.raises(DataError, match="nothing to evaluate"):
        evaluate(base, empty, spec=SPEC)
    three = Dataset(name="three", texts=("a",), labels=(0,), label_names=("x", "y", "z"))
    with pytest.raises(DataError, match="3 classes"):
        train_local(base, three, TrainConfig(), spec=SPEC, seed=0)


def test_train_config_is_validated() -> None:
    for bad in ({"epochs": 0}, {"lr": float("inf")}, {"lr": -1.0}, {"batch_size": 0}):
        with pytest.raises(ValueError):
            TrainConfig(**bad)  # type: ignore[arg-type]


def test_torch_threads_restores_the_previous_count() -> None:
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
