"""One bootstrap for every service process: settings, logs, metrics, Redis, topics, stop signal.

Nothing connects at import time; a service's ``run()`` calls ``bootstrap()`` once and passes the
``Runtime`` down to its handlers.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import get_args
from urllib.parse import urlsplit, urlunsplit

import redis
from confluent_kafka import TopicPartition

from schemas.events import RejectReason
from services.core import metrics
from services.core.exceptions import EddyError, StackError
from services.core.logging import configure_logging
from services.core.metrics import serve_metrics
from services.core.processor import AfterBatch, StreamProcessor
from services.core.settings import Settings
from services.core.state import connect_redis
from services.core.stream import BatchHandler, Effects, JointHandler, StopSignal
from services.core.topics import Topics

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """The connections and settings a service's handlers need."""

    service: str
    settings: Settings
    topics: Topics
    redis: redis.Redis
    stop: StopSignal
    metrics_port: int


def redacted(url: str) -> str:
    """``url`` without its password, fit for a log or an error message."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host  # an IPv6 address keeps its brackets
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def main(run: Callable[[], None]) -> None:
    """A service's ``python -m`` entry point: Eddy's own errors end it with one line, exit 1.

    A bad setting, an unreachable Redis, a model spec that does not build: the operator reads
    what to fix, not a traceback.
    """
    try:
        run()
    except EddyError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)


def bootstrap(
    service: str, settings: Settings | None = None, install_signals: bool = True
) -> Runtime:
    """Read settings, configure logs and metrics, connect to Redis, and catch stop signals."""
    settings = settings or Settings()
    settings.require_endpoints()
    configure_logging(settings.log_level)
    port = serve_metrics(settings.metrics_port, settings.metrics_host)
    for reason in get_args(RejectReason):  # every reason has a series from the start
        metrics.REJECTED.labels(service, reason)
    stop = StopSignal()
    if install_signals:
        stop.install()
    try:  # a wrong address is an error to fix now; an outage later is waited out
        with connect_redis(settings) as first:
            first.ping()
    except (redis.ConnectionError, redis.TimeoutError) as error:
        url = redacted(settings.redis_url or "")
        raise StackError(f"cannot reach Redis at {url}: {error}") from None
    client = connect_redis(settings, service, stop.is_set)
    log.info("starting", extra={"service": service, "metrics_port": port})
    return Runtime(service, settings, Topics(settings.topic_prefix), client, stop, port)


def run_stream_service(
    runtime: Runtime,
    handlers: dict[str, BatchHandler],
    transactional_id: str | None = None,
    tick: Callable[[], Effects] | None = None,
    tick_interval_s: float = 1.0,
    on_assign: Callable[[list[TopicPartition]], list[TopicPartition]] | None = None,
    after_batch: AfterBatch | None = None,
    joint: JointHandler | None = None,
) -> None:
    """Run the shared Kafka loop with this service's handlers until stopped.

    With ``joint``, each batch goes to it whole instead of to ``handlers`` topic by topic.
    """
    processor = StreamProcessor(
        runtime.settings,
        runtime.service,
        runtime.topics.group(runtime.service),
        handlers,
        transactional_id=transactional_id,
        stop=runtime.stop,
        joint=joint,
    )
    processor.run(
        tick=tick, tick_interval_s=tick_interval_s, on_assign=on_assign, after_batch=after_batch
    )
