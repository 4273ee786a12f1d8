"""The digits task: its schema, the Dirichlet split, npz shards, seeded training, and the federation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedchain.errors import ConfigError, DataError
from fedchain.tasks import load_task
from fedchain.tasks._baselines import centralized, plain_fedavg
from fedchain.tasks.digits import DigitsData, DigitsTask, export_shard, load_shard

TASK = DigitsTask()


def test_the_schema_is_the_six_parameters_of_the_cnn() -> None:
    assert TASK.schema().shapes == {
        "conv1.bias": (8,),
        "conv1.weight": (8, 1, 3, 3),
        "conv2.bias": (16,),
        "conv2.weight": (16, 8, 3, 3),
        "fc.bias": (10,),
        "fc.weight": (10, 256),
    }
    init = TASK.init(0)
    assert all(init[n].dtype == np.float32 and init[n].shape == s for n, s in TASK.schema().shapes.items())
    assert all(np.array_equal(init[n], TASK.init(0)[n]) for n in init)
    assert not np.array_equal(init["fc.weight"], TASK.init(1)["fc.weight"])


@pytest.mark.parametrize("k", [3, 10])
def test_the_demo_split_is_disjoint_skewed_and_deterministic(k: int) -> None:
    demo = TASK.demo(k, 0)
    assert [p.name for p in demo.participants] == [f"participant-{i}" for i in range(k)]
    sizes = [len(p.data) for p in demo.participants]
    assert sum(sizes) + len(demo.test) == 1797 and min(sizes) >= 10
    assert len(demo.test) == 359 and min(demo.test.label_counts()) >= 35  # stratified 20%
    from collections import Counter

    from fedchain.tasks.digits import load_digits_data

    every = load_digits_data()
    parts = [*(p.data for p in demo.participants), demo.test]
    assert Counter(r.tobytes() + bytes([y]) for d in parts for r, y in zip(d.x, d.y, strict=True)) == Counter(
        r.tobytes() + bytes([y]) for r, y in zip(every.x, every.y, strict=True)
    )
    # non-IID: some participant's largest class is well over the 10% of an even split
    assert max(max(p.data.label_counts()) / len(p.data) for p in demo.participants) > 0.3
    again = TASK.demo(k, 0)
    assert all(np.array_equal(a.data.y, b.data.y) for a, b in zip(demo.participants, again.participants, strict=True))
    other = TASK.demo(k, 1)
    assert any(len(a.data) != len(b.data) for a, b in zip(demo.participants, other.participants, strict=True))


def test_the_demo_has_three_to_ten_participants() -> None:
    for k in (2, 11):
        with pytest.raises(ConfigError, match=rf"^demo\.participants: .*3 to 10 participants, not {k}"):
            TASK.demo(k, 0)


def test_a_shard_round_trips_through_npz_and_bad_files_are_data_errors(tmp_path: Path) -> None:
    shard = TASK.demo(3, 0).participants[0].data
    export_shard(shard, tmp_path / "p0.npz")
    back = load_task("digits", {"data": str(tmp_path / "p0.npz")}).load_data(str(tmp_path / "p0.npz"))
    assert back.name == "p0" and np.array_equal(back.x, shard.x) and np.array_equal(back.y, shard.y)
    np.savez(tmp_path / "extra.npz", x=shard.x, y=shard.y, z=shard.y)
    with pytest.raises(DataError, match="exactly arrays 'x' and 'y', found"):
        load_shard(tmp_path / "extra.npz")
    np.savez(tmp_path / "float.npz", x=shard.x, y=shard.y.astype(np.float32))
    with pytest.raises(DataError, match="y must be int64"):
        load_shard(tmp_path / "float.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="cannot read as an .npz shard"):
        load_shard(tmp_path / "junk.npz")
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 8, 8), np.float32), y=np.zeros(0, np.int64))
    with pytest.raises(DataError, match="holds no records"):
        load_shard(tmp_path / "empty.npz")


def test_training_is_seeded_and_learns() -> None:
    demo = TASK.demo(3, 0)
    data = demo.participants[0].data
    a = TASK.train(TASK.init(0), data, {}, seed=3)
    b = TASK.train(TASK.init(0), data, {}, seed=3)
    c = TASK.train(TASK.init(0), data, {}, seed=4)
    assert all(np.array_equal(a.arrays[n], b.arrays[n]) for n in a.arrays) and a.metrics == b.metrics
    assert not np.array_equal(a.arrays["fc.weight"], c.arrays["fc.weight"])
    assert a.num_samples == len(data) and set(a.metrics) == {"loss", "accuracy"}
    central = centralized(TASK, demo, 5, 0)
    assert central.accuracy > 0.85


def test_federated_training_improves_over_rounds() -> None:
    demo = TASK.demo(3, 0)
    run = plain_fedavg(TASK, demo, 3, 0)
    assert run.accuracies[-1] > run.accuracies[0] and run.accuracies[-1] > 0.3
    assert DigitsData("x", np.zeros((1, 8, 8), np.float32), np.zeros(1, np.int64)).label_counts()[0] == 1
