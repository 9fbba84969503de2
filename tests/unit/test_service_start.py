"""A service that cannot reach its Redis at start says so in one line, without its password."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from services.core.embedded import free_port
from services.core.runtime import redacted


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:s3cret@10.0.0.1:6380/1", "redis://:***@10.0.0.1:6380/1"),
        ("rediss://eddy:s3cret@cache.internal/0", "rediss://eddy:***@cache.internal/0"),
        ("redis://:s3cret@[::1]:6379/0", "redis://:***@[::1]:6379/0"),
        ("unix:///run/redis.sock?db=0", "unix:///run/redis.sock?db=0"),
    ],
)
def test_a_redis_url_is_shown_without_its_password(url: str, shown: str) -> None:
    assert redacted(url) == shown


def test_a_service_whose_redis_is_unreachable_stops_with_a_one_line_error() -> None:
    port = free_port()  # nothing listens there: the connection is refused
    env = {
        **os.environ,
        "EDDY_KAFKA_BOOTSTRAP": "127.0.0.1:1",
        "EDDY_REDIS_URL": f"redis://:s3cret@127.0.0.1:{port}/0",
        "EDDY_METRICS_PORT": "0",
    }
    command = "from eddy.cli import main; main()"
    result = subprocess.run(
        [sys.executable, "-c", command, "run", "ingest"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 1
    assert f"cannot reach Redis at redis://:***@127.0.0.1:{port}/0" in result.stderr
    assert "Traceback" not in result.stderr
    assert "s3cret" not in result.stderr + result.stdout
