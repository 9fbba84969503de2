"""Versions may take a share of training's time: on schedule while slow, limited when fast."""

from __future__ import annotations

from services.training.budget import TimeBudget


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_work_within_the_share_is_never_held_back() -> None:
    clock = Clock()
    budget = TimeBudget(share=0.1, burst_s=0.5, clock=clock, work_clock=clock)
    for _ in range(100):  # a 9 ms version every 0.125 s: 7% of the time
        clock.now += 0.125
        assert budget.allows()
        with budget.spending():
            clock.now += 0.009


def test_work_beyond_the_share_waits_until_it_is_earned_back() -> None:
    clock = Clock()
    budget = TimeBudget(share=0.1, burst_s=0.5, clock=clock, work_clock=clock)
    versions = 0
    for _ in range(10_000):  # asked for every millisecond for 10 s
        clock.now += 0.001
        if budget.allows():
            with budget.spending():
                clock.now += 0.009
            versions += 1
    elapsed = clock.now - 100.0
    spent = versions * 0.009
    assert spent <= 0.1 * elapsed + 0.5 + 0.009, "no more than the share and the saved burst"
    assert spent >= 0.1 * elapsed - 0.05, "and the share is used"


def test_a_quiet_spell_saves_at_most_the_burst() -> None:
    clock = Clock()
    budget = TimeBudget(share=0.1, burst_s=0.5, clock=clock, work_clock=clock)
    clock.now += 3600
    assert budget.left() == 0.5
    budget.spend(2.0)
    assert not budget.allows()
    clock.now += 16.0  # 1.5 s overdrawn, earned back at 0.1 s a second
    assert budget.allows()


def test_waiting_inside_the_work_costs_nothing() -> None:
    clock, cpu = Clock(), Clock()
    budget = TimeBudget(share=0.1, burst_s=0.5, clock=clock, work_clock=cpu)
    for _ in range(1000):  # each version: 1 ms of work, 50 ms waiting for an acknowledgement
        assert budget.allows()
        with budget.spending():
            cpu.now += 0.001
            clock.now += 0.051
