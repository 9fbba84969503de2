"""The bench gives each trial embedded servers of its own, except where endpoints are configured."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from bench.harness import Context
from services.core.embedded import EmbeddedStack
from tests.integration.support import pid_alive


def test_each_trial_gets_fresh_servers_that_stop_after_it(tmp_path: Path) -> None:
    ctx = Context("", "", tmp_path)
    seen: list[tuple[str, str, dict[str, int]]] = []

    for trial in ("first", "second"):
        with ctx.own_servers():
            seen.append((ctx.kafka_bootstrap, ctx.redis_url, dict(ctx.server_pids)))
            settings = ctx.settings()  # creates its topics on the trial's broker
            assert settings.kafka_bootstrap == ctx.kafka_bootstrap
            client = redis.Redis.from_url(ctx.redis_url)
            # nothing the first trial wrote is there for the second
            assert client.get("trial") is None
            client.set("trial", trial)

    (first_kafka, first_redis, first_pids), (second_kafka, second_redis, _) = seen
    assert first_kafka != second_kafka and first_redis != second_redis
    assert set(first_pids) == {"broker", "redis"}
    assert not any(pid_alive(pid) for _, _, pids in seen for pid in pids.values())
    # between trials there are no servers to measure on
    assert (ctx.kafka_bootstrap, ctx.redis_url, ctx.server_pids) == ("", "", {})
    with pytest.raises(RuntimeError, match="own_servers"):
        ctx.settings()


def test_configured_endpoints_are_kept_for_every_trial(
    stack: EmbeddedStack, tmp_path: Path
) -> None:
    ctx = Context(stack.kafka_bootstrap, stack.redis_url, tmp_path)

    with ctx.own_servers():
        assert (ctx.kafka_bootstrap, ctx.redis_url) == (stack.kafka_bootstrap, stack.redis_url)
        assert ctx.server_pids == {}


def test_only_the_missing_endpoint_is_embedded(stack: EmbeddedStack, tmp_path: Path) -> None:
    ctx = Context(stack.kafka_bootstrap, "", tmp_path)

    with ctx.own_servers():
        assert ctx.kafka_bootstrap == stack.kafka_bootstrap
        assert ctx.redis_url not in ("", stack.redis_url)
        assert list(ctx.server_pids) == ["redis"]
