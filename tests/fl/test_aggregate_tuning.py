"""The aggregation's chunk size comes from the machine's L2, within fixed bounds."""

from __future__ import annotations

import pytest

from fedchain.fl import _aggregate


@pytest.mark.parametrize(
    ("l2", "chunk"),
    [
        (2 << 20, 1 << 15),
        (1 << 20, 1 << 14),
        (1280 << 10, 1 << 14),
        (512 << 10, 1 << 13),
        (0, 1 << 12),
        (1 << 30, 1 << 18),
    ],
)
def test_the_chunk_is_the_largest_power_of_two_whose_float64_pair_fits_in_a_quarter_of_the_l2(
    l2: int, chunk: int
) -> None:
    assert _aggregate._chunk_for(l2) == chunk


@pytest.mark.parametrize(("text", "count"), [("0", 1), ("0-1", 2), ("0-3,8", 5), ("0,2,4-5", 4)])
def test_a_sysfs_cpu_list_is_counted(text: str, count: int) -> None:
    assert _aggregate._count_cpus(text) == count


def test_this_machines_chunk_is_derived_from_its_l2() -> None:
    assert _aggregate._CHUNK == _aggregate._STREAM_CHUNK == _aggregate._chunk_for(_aggregate._l2_per_core())


@pytest.mark.parametrize(
    ("loadavg", "others"),
    [
        ("0.52 0.58 0.59 3/1005 4321\n", 2),
        ("0.00 0.01 0.05 1/80 7\n", 0),
        ("9.1 8.0 7.2 12/155 99", 11),
        ("", 0),
        ("a b", 0),
    ],
)
def test_the_other_runnable_tasks_are_read_from_loadavg_without_the_caller(loadavg: str, others: int) -> None:
    assert _aggregate._others_running(loadavg) == others


@pytest.mark.parametrize(
    ("cpus", "online", "others", "threads"),
    [(2, 2, 0, 2), (2, 2, 1, 1), (2, 2, 7, 1), (1, 1, 0, 1), (8, 8, 0, 4), (8, 8, 5, 3), (4, 64, 30, 2), (4, 64, 0, 4)],
)
def test_the_default_threads_are_the_usable_cpus_other_runnable_tasks_leave_free(
    cpus: int, online: int, others: int, threads: int
) -> None:
    assert _aggregate._free_cpus(cpus, online, others) == threads
