"""Liveness and readiness: stuck or starved is not live; waiting for a server is live, not ready."""

from __future__ import annotations

from services.core.health import Health


def _health() -> tuple[Health, list[float]]:
    now = [0.0]
    health = Health(stall_s=60, clock=lambda: now[0], loop_beat=0.0, last_consumed=0.0)
    return health, now


def test_a_loop_that_comes_round_and_consumes_is_live_and_with_partitions_ready() -> None:
    health, now = _health()
    health.assigned, health.lag = 1, 500
    for second in range(0, 300, 10):
        now[0] = second
        health.beat(consumed=100)
    assert health.live()[0] and health.ready()[0]


def test_a_loop_that_stopped_coming_round_is_not_live() -> None:
    health, now = _health()
    now[0] = 61
    live, body = health.live()
    assert not live and "has not come round for 61 s" in body["reasons"][0]


def test_partitions_with_messages_waiting_and_nothing_consumed_is_not_live() -> None:
    health, now = _health()
    health.assigned, health.lag = 2, 40
    for second in range(0, 120, 5):
        now[0] = second
        health.beat(consumed=0)  # polls, gets nothing, although 40 messages wait
    live, body = health.live()
    assert not live and "40 messages wait" in body["reasons"][0]
    health.lag = 0  # nothing waits: an idle service is live
    assert health.live()[0]


def test_waiting_for_redis_is_live_but_not_ready() -> None:
    health, now = _health()
    health.assigned, health.lag = 1, 10
    health.waiting_for.add("redis")
    now[0] = 600  # blocked in a Redis call the whole time
    assert health.live()[0]
    ready, body = health.ready()
    assert not ready and body["reasons"] == ["waiting for redis"]


def test_a_failing_check_or_no_partition_is_not_ready_and_says_why() -> None:
    health, _now = _health()
    health.checks["model"] = lambda: "no model version loaded yet"
    ready, body = health.ready()
    assert not ready
    assert body["reasons"] == ["no partition assigned yet", "no model version loaded yet"]
