"""The bench gives each trial servers of its own on the embedded stack, and only there."""

from __future__ import annotations

import os
from pathlib import Path

import redis

from bench.harness import Context
from services.core.embedded import EmbeddedStack


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_trial_gets_fresh_servers_that_stop_after_it(
    stack: EmbeddedStack, tmp_path: Path
) -> None:
    ctx = Context(stack.kafka_bootstrap, stack.redis_url, tmp_path, embedded=True)
    ctx.server_pids = {"broker": stack.pids[0], "redis": stack.pids[1]}

    with ctx.own_servers():
        inside = (ctx.kafka_bootstrap, ctx.redis_url, dict(ctx.server_pids))
        settings = ctx.settings()  # creates its topics on the trial's broker
        redis.Redis.from_url(ctx.redis_url).set("trial", "1")
        assert settings.kafka_bootstrap == inside[0]

    assert inside[0] != stack.kafka_bootstrap
    assert inside[1] != stack.redis_url
    assert set(inside[2].values()).isdisjoint(stack.pids)
    # afterwards: the outer servers again, the trial's gone, and nothing it wrote leaked out
    assert (ctx.kafka_bootstrap, ctx.redis_url) == (stack.kafka_bootstrap, stack.redis_url)
    assert ctx.server_pids == {"broker": stack.pids[0], "redis": stack.pids[1]}
    assert not any(_alive(pid) for pid in inside[2].values())
    assert redis.Redis.from_url(stack.redis_url).get("trial") is None


def test_configured_endpoints_are_kept_for_every_trial(
    stack: EmbeddedStack, tmp_path: Path
) -> None:
    ctx = Context(stack.kafka_bootstrap, stack.redis_url, tmp_path, embedded=False)

    with ctx.own_servers():
        assert (ctx.kafka_bootstrap, ctx.redis_url) == (stack.kafka_bootstrap, stack.redis_url)
