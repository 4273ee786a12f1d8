"""The one backoff policy of every retry loop."""

from __future__ import annotations

from fedchain.chain import Backoff, Pacing


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_delays_start_at_the_poll_interval_double_and_stop_at_the_cap() -> None:
    schedule = Pacing(poll_seconds=0.5, backoff_max=3.0, outage_seconds=600).backoff(clock=FakeClock())
    assert [schedule.next_delay() for _ in range(6)] == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]


def test_a_zero_poll_interval_does_not_spin() -> None:
    schedule = Pacing(poll_seconds=0.0, backoff_max=1.0).backoff(clock=FakeClock())
    assert [schedule.next_delay() for _ in range(5)] == [0.1, 0.2, 0.4, 0.8, 1.0]


def test_the_schedule_gives_up_once_the_outage_budget_is_spent() -> None:
    clock = FakeClock()
    schedule = Backoff(Pacing(poll_seconds=1.0, backoff_max=8.0, outage_seconds=30.0), clock=clock)
    assert schedule.next_delay() == 1.0
    clock.now += 30.0
    assert schedule.next_delay() == 2.0  # exactly at the budget: one more try
    clock.now += 0.5
    assert schedule.elapsed == 30.5
    assert schedule.next_delay() is None
