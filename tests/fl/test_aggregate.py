"""FedAvg: the exact formula, ordering, streaming memory, and refusal of inconsistent input."""

from __future__ import annotations

import gc
import tracemalloc
import weakref
from collections.abc import Iterator

import numpy as np
import pytest

from fedchain.errors import AggregationError
from fedchain.fl import FedAvg, Strategy, UpdateItem, fedavg_stream

A = "0x00000000000000000000000000000000000000aa"
B = "0x00000000000000000000000000000000000000Bb"
C = "0x00000000000000000000000000000000000000cc"


def _tensors(seed: int, scale: float = 1.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "w": (rng.standard_normal((4, 3)) * scale).astype(np.float32),
        "b": (rng.standard_normal(5) * scale).astype(np.float32),
    }


def _f32(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)


def _reference(base: dict[str, np.ndarray], updates: list[UpdateItem], total: int, eta: float) -> dict[str, np.ndarray]:
    """The documented arithmetic, one Python float (IEEE binary64) at a time."""
    out = {}
    for name, theta in base.items():
        flat = []
        for i, t in enumerate(theta.reshape(-1).tolist()):
            acc = float(t)
            for _, n_k, delta in sorted(updates, key=lambda u: u[0].lower()):
                c_k = (eta * float(n_k)) / float(total)
                acc = acc + float(delta[name].reshape(-1)[i]) * c_k
            flat.append(acc)
        out[name] = np.array(flat, dtype=np.float64).astype(np.float32).reshape(theta.shape)
    return out


@pytest.mark.parametrize("eta", [1.0, 0.5, 1.7])
def test_the_aggregate_is_exactly_the_documented_formula(eta: float) -> None:
    base = _tensors(0)
    updates: list[UpdateItem] = [(A, 100, _tensors(1, 0.1)), (B, 250, _tensors(2, 0.1)), (C, 7, _tensors(3, 0.1))]
    got = fedavg_stream(base, updates, total_samples=357, server_lr=eta)
    want = _reference(base, updates, 357, eta)
    for name in base:
        assert type(got[name]) is np.ndarray and got[name].dtype == np.float32 and got[name].flags.c_contiguous
        assert got[name].tobytes() == want[name].tobytes()


def test_it_is_the_weighted_mean_of_the_deltas() -> None:
    base = {"x": _f32(1.0, 2.0)}
    updates: list[UpdateItem] = [(A, 1, {"x": _f32(4.0, 0.0)}), (B, 3, {"x": _f32(0.0, 8.0)})]
    assert fedavg_stream(base, updates, total_samples=4)["x"].tolist() == [2.0, 8.0]
    assert fedavg_stream(base, updates, total_samples=4, server_lr=0.5)["x"].tolist() == [1.5, 5.0]


def test_with_no_updates_the_aggregate_is_the_base() -> None:
    base = _tensors(0)
    base["b"][0] = -0.0
    got = fedavg_stream(base, [], total_samples=0)
    assert all(got[n].tobytes() == base[n].tobytes() for n in base)
    assert got["b"] is not base["b"] and not np.shares_memory(got["b"], base["b"])


def test_a_list_is_aggregated_in_participant_order_whatever_its_order() -> None:
    base = _tensors(0)
    updates: list[UpdateItem] = [(A, 10, _tensors(1)), (B, 20, _tensors(2)), (C, 30, _tensors(3))]
    want = fedavg_stream(base, updates, total_samples=60)
    for perm in ([2, 0, 1], [1, 2, 0], [2, 1, 0]):
        got = fedavg_stream(base, [updates[i] for i in perm], total_samples=60)
        assert all(got[n].tobytes() == want[n].tobytes() for n in base)


def test_a_stream_out_of_participant_order_is_refused() -> None:
    updates = iter([(B, 10, _tensors(2)), (A, 10, _tensors(1))])
    with pytest.raises(AggregationError, match="out of order"):
        fedavg_stream(_tensors(0), updates, total_samples=20)


def test_a_participant_appearing_twice_is_refused() -> None:
    with pytest.raises(AggregationError, match="appears twice"):
        fedavg_stream(
            _tensors(0), [(A, 10, _tensors(1)), (A.upper().replace("0X", "0x"), 10, _tensors(2))], total_samples=20
        )


@pytest.mark.parametrize(
    ("updates", "total", "problem"),
    [
        ([(A, 10, {"w": np.zeros((4, 3), np.float32)})], 10, "has tensors"),
        ([(A, 10, {"w": np.zeros((3, 4), np.float32), "b": np.zeros(5, np.float32)})], 10, "shape"),
        ([(A, 10, {"w": np.zeros((4, 3)), "b": np.zeros(5, np.float32)})], 10, "dtype float64"),
        ([(A, 10, {"w": [[0.0] * 3] * 4, "b": np.zeros(5, np.float32)})], 10, "expected a numpy float32 array"),
        ([(A, 0, _tensors(1))], 0, "positive int"),
        ([(A, 10, _tensors(1))], 11, "declare 10 samples"),
        ([(A, 10, _tensors(1))], 0, "total_samples is 0"),
        ([("", 10, _tensors(1))], 10, "non-empty"),
    ],
)
def test_inconsistent_updates_are_an_aggregation_error(updates: list[UpdateItem], total: int, problem: str) -> None:
    with pytest.raises(AggregationError, match=problem):
        fedavg_stream(_tensors(0), updates, total_samples=total)


def test_a_stream_is_consumed_one_update_at_a_time() -> None:
    alive: list[weakref.ref[np.ndarray]] = []
    produced = 0

    def stream() -> Iterator[UpdateItem]:
        nonlocal produced
        for i in range(20):
            # reference counting alone must free it: no gc.collect()
            assert sum(r() is not None for r in alive) == 0, "a previous update is still held"
            delta = _tensors(i)
            alive.append(weakref.ref(delta["w"]))
            produced += 1
            yield f"0x{i:040x}", 1, delta
            del delta

    fedavg_stream(_tensors(99), stream(), total_samples=20)
    assert produced == 20


def test_peak_memory_does_not_grow_with_the_number_of_participants() -> None:
    shape = (256, 1024)  # 1 MiB of float32

    def stream(n: int) -> Iterator[UpdateItem]:
        for i in range(n):
            yield f"0x{i:040x}", 1, {"w": np.full(shape, 0.001 * i, dtype=np.float32)}

    base = {"w": np.zeros(shape, dtype=np.float32)}

    def peak(n: int) -> int:
        gc.collect()
        tracemalloc.start()
        fedavg_stream(base, stream(n), total_samples=n)
        _, high = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return high

    few, many = peak(2), peak(24)
    assert many < few + (1 << 20)  # not one more MiB for 22 more participants
    # float64 accumulator (2 MiB), the threads' float64 chunks (at most 1 MiB), one delta (1 MiB);
    # at the end the result (1 MiB) beside the accumulator
    # + numpy's casting buffers: 8192 float64 per cast operand and thread, whatever the model's size
    assert many < (4 << 20) + (256 << 10)


def test_fedavg_is_a_strategy_that_trains_with_the_default_config() -> None:
    strategy = FedAvg(server_lr=0.5)
    assert isinstance(strategy, Strategy)
    assert strategy.name == "fedavg:server_lr=0.5"
    config = {"epochs": 2, "lr": 0.1}
    assert strategy.configure(3, config) is config
    base = {"x": _f32(1.0)}
    assert strategy.aggregate(base, [(A, 1, {"x": _f32(2.0)})], total_samples=1)["x"].tolist() == [2.0]
    with pytest.raises(ValueError, match="server_lr"):
        FedAvg(server_lr=float("nan"))
