"""A service's Redis client waits through an outage, and stops waiting when asked to stop."""

from __future__ import annotations

import pytest
import redis

from services.core.embedded import free_port
from services.core.exceptions import StackError
from services.core.settings import Settings
from services.core.state import connect_redis


def _nobody_listens() -> Settings:
    return Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0")


def test_a_service_client_keeps_trying_until_the_stop_signal_then_says_nothing_was_lost() -> None:
    asked = []

    def should_stop() -> bool:
        asked.append(True)
        return len(asked) >= 3

    client = connect_redis(_nobody_listens(), "ingest", should_stop)
    with pytest.raises(StackError, match=r"stopped while Redis was unreachable.*nothing was lost"):
        client.get("k")
    assert len(asked) == 3  # it tried again twice before the stop came


def test_a_command_line_client_fails_fast_with_the_connection_error() -> None:
    with pytest.raises(redis.ConnectionError):
        connect_redis(_nobody_listens()).get("k")
