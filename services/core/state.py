"""Fast state in Redis: de-duplication by event_id, the online feature store, window histories.

Each batch costs one command per structure, not one per event: building and parsing a pipeline
of per-event commands cost ingest more CPU than validating the events. The multi-key commands
(MGET, MSET, a script over all the batch's keys) want one Redis, not Redis Cluster.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import pydantic_core
import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from services.core import metrics
from services.core.aggregates import History, Windows
from services.core.exceptions import ConfigurationError, StackError
from services.core.health import HEALTH
from services.core.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")


#: The longest pause between two tries of a Redis call while Redis is away.
RETRY_CAP_S = 2.0
#: While Redis stays away, a warning every this many failed tries (about a minute at the cap).
WARN_EVERY = 30


@dataclass
class _Outage:
    """Since when the client has found Redis away (None: it answers)."""

    since: float | None = None


class PatientRetry(Retry):
    """Tries a Redis call again, with growing pauses, until Redis answers or the service stops.

    A service must ride out a Redis restart, not exit on it: every command, pipeline and script
    of the client waits here (``eddy_dependency_up`` 0, a warning now and then) and goes on
    when Redis is back. ``should_stop`` (the stop signal) ends the wait with ``StackError``, so
    SIGTERM still stops a service in an outage. Retrying is safe because Eddy's Redis writes are
    idempotent: they are replayed after a crash anyway (DESIGN.md, delivery).
    """

    def __init__(
        self, service: str, should_stop: Callable[[], bool], outage: _Outage | None = None
    ) -> None:
        super().__init__(ExponentialBackoff(cap=RETRY_CAP_S, base=0.05), retries=-1)
        self.service = service
        self.should_stop = should_stop
        self.up = metrics.DEPENDENCY_UP.labels(service, "redis")
        self.retries = metrics.DEPENDENCY_RETRIES.labels(service, "redis")
        #: shared by every connection's copy: Redis is away for the client, not a connection
        self.outage = outage or _Outage()

    def __deepcopy__(self, memo: dict[int, Any]) -> PatientRetry:
        """A copy for one connection (redis-py copies it): the same service, signal, outage."""
        return PatientRetry(self.service, self.should_stop, self.outage)

    def call_with_retry(
        self,
        do: Callable[[], T],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        """``do()``, tried again after each connection failure (see the class)."""

        def failed(error: Exception, failures: int) -> None:
            fail(error, failures) if with_failure_count else fail(error)
            self.retries.inc()
            if self.outage.since is None:
                self.outage.since = time.monotonic()
                self.up.set(0)
                HEALTH.waiting_for.add("redis")
            if failures == 1 or failures % WARN_EVERY == 0:
                log.warning(
                    "Redis unreachable, trying again",
                    extra={"service": self.service, "tries": failures, "error": str(error)},
                )
            if self.should_stop():
                raise StackError(
                    f"stopped while Redis was unreachable ({error}); nothing was lost: the "
                    "batch in hand was not committed and runs again on the next start"
                ) from error

        result = super().call_with_retry(do, failed, is_retryable, with_failure_count=True)
        if self.outage.since is not None:
            log.info(
                "Redis answers again",
                extra={
                    "service": self.service,
                    "seconds_away": round(time.monotonic() - self.outage.since, 1),
                },
            )
            self.outage.since = None
            self.up.set(1)
            HEALTH.waiting_for.discard("redis")
        return result


def connect_redis(
    settings: Settings, service: str = "", should_stop: Callable[[], bool] | None = None
) -> redis.Redis:
    """A Redis client for the configured URL.

    With ``should_stop``, a service's client: its calls wait through a Redis outage until
    Redis is back or the service is asked to stop (``PatientRetry``). Without it, a command-line
    client: a call fails after redis-py's few quick tries, with the error to show.
    """
    if settings.redis_url is None:
        raise ConfigurationError(
            "EDDY_REDIS_URL is not set: point it at a Redis server or run `eddy stack up`"
        )
    credentials = redis_credentials(settings)
    if should_stop is None:
        return redis.Redis.from_url(
            settings.redis_url, socket_timeout=10, health_check_interval=30, **credentials
        )
    metrics.DEPENDENCY_UP.labels(service, "redis").set(1)
    return redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=10,
        socket_connect_timeout=2,
        health_check_interval=30,
        retry=PatientRetry(service, should_stop),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        **credentials,
    )


def redis_credentials(settings: Settings) -> dict[str, Any]:
    """The Redis client options of the credential settings (a password in the URL still works)."""
    options: dict[str, Any] = {}
    if settings.redis_password.get_secret_value():
        options["password"] = settings.redis_password.get_secret_value()
        if settings.redis_username:
            options["username"] = settings.redis_username
    if settings.redis_tls_ca is not None and (settings.redis_url or "").startswith("rediss://"):
        options["ssl_ca_certs"] = str(settings.redis_tls_ca)
    return options


def deployment_status_key(prefix: str, model_name: str) -> str:
    """Where monitoring keeps the live figures of a model's deployment (``eddy models status``)."""
    return f"eddy:{prefix}monitoring:{model_name}:deployment"


def leaderboard_key(prefix: str, model_name: str) -> str:
    """Where training keeps its leaderboard as JSON (``eddy models leaderboard`` reads it)."""
    return f"eddy:{prefix}training:{model_name}:leaderboard"


def leaderboard_history_key(prefix: str, model_name: str) -> str:
    """Where training keeps the leaderboard's recent history (``eddy report`` draws it)."""
    return f"eddy:{prefix}training:{model_name}:leaderboard:history"


#: SET key 1 EX ttl for every key: one command for a whole batch's ids.
_REMEMBER = """
for _, key in ipairs(KEYS) do
  redis.call('SET', key, '1', 'EX', ARGV[1])
end
"""


class Deduplicator:
    """Remembers event ids for a while, so a replayed or re-sent event has one effect.

    Ids are remembered only after the effect is acknowledged (``remember``), never on first
    sight: a crash in between replays the event rather than losing it.
    """

    def __init__(self, client: redis.Redis, namespace: str, ttl_s: int) -> None:
        self.client = client
        self.prefix = f"eddy:{namespace}:seen:"
        self.ttl_s = ttl_s
        self._remember = client.register_script(_REMEMBER)

    def seen(self, event_ids: Iterable[str]) -> set[str]:
        """The ids among ``event_ids`` that were remembered before."""
        ids = list(event_ids)
        if not ids:
            return set()
        found = self.client.mget([self.prefix + i for i in ids])
        return {i for i, value in zip(ids, found, strict=True) if value is not None}

    def remember(self, event_ids: Iterable[str]) -> None:
        """Remember ids for the configured time."""
        keys = [self.prefix + event_id for event_id in event_ids]
        if keys:
            self._remember(keys=keys, args=[self.ttl_s])


_SAVE_HISTORIES = """
local ttl, at = ARGV[1], 2
for i = 1, #KEYS do
  local rewrite, count = ARGV[at], tonumber(ARGV[at + 1])
  at = at + 2
  if rewrite == '1' then redis.call('DEL', KEYS[i]) end
  for first = 0, count - 1, 1000 do
    redis.call('RPUSH', KEYS[i], unpack(ARGV, at + first, at + math.min(first + 999, count - 1)))
  end
  at = at + count
  redis.call('PEXPIRE', KEYS[i], ttl)
end
"""


class WindowStore:
    """Each entity's recent events, as its derived features' windows need them.

    An entity's rows are a Redis list that starts with the layout of its columns: rows are
    appended as events come (one script call a batch, for every entity in it), and the list is
    rewritten once pruned rows make up half of it. Histories read or written are kept in
    memory too (up to ``cached`` rows in all, the least recently used going first) until
    ``forget``: call it whenever partitions are assigned, as another instance may have added
    to them meanwhile. Two writers at once (an
    instance that lost its partition without knowing yet) only append the same events twice,
    which reading takes once. Keys expire ``ttl_s`` after the entity's last event.
    """

    def __init__(self, client: redis.Redis, namespace: str, windows: Windows, cached: int) -> None:
        self.client = client
        self.prefix = f"eddy:{namespace}:history:"
        self.header = pydantic_core.to_json(["layout", windows.layout])
        self.width = len(windows.read)
        self.row_length = 2 + self.width + len(windows.names)
        self.ttl_ms = max(int(windows.expire_s * 1000), 1)
        self.cached = cached
        self._cache: OrderedDict[str, History] = OrderedDict()
        self._rows: dict[str, int] = {}  # each cached history's rows when last stored
        self._cached_rows = 0
        self._save = client.register_script(_SAVE_HISTORIES)

    def forget(self) -> None:
        """Read every history from Redis again (partitions were assigned)."""
        self._cache.clear()
        self._rows.clear()
        self._cached_rows = 0

    def get_many(self, entity_ids: Sequence[str]) -> dict[str, History]:
        """The history of each of ``entity_ids`` (an empty one for an entity not seen)."""
        out = {e: held for e in entity_ids if (held := self._cache.get(e)) is not None}
        missing = [e for e in entity_ids if e not in out]
        if missing:
            pipe = self.client.pipeline(transaction=False)
            for entity_id in missing:
                pipe.lrange(self.prefix + entity_id, 0, -1)
            for entity_id, rows in zip(missing, pipe.execute(), strict=True):
                out[entity_id] = self._parsed(entity_id, rows)
        return out

    def _parsed(self, entity_id: str, rows: list[bytes]) -> History:
        """A stored history; a fresh one if there is none, or another layout, or it is damaged."""
        if not rows or rows[0] != self.header:  # never seen, expired, or kept under another layout
            return History(stored=-1)
        try:
            stored = [pydantic_core.from_json(row) for row in rows[1:]]
        except ValueError:
            stored = None
        if stored is not None and all(self._sound(row) for row in stored):
            return History.of(stored, self.width)
        log.warning(  # one damaged key must not send every event of its entity to the DLQ
            "a window history in Redis could not be read: started afresh",
            extra={"key": self.prefix + entity_id},
        )
        return History(stored=-1)

    def _sound(self, row: Any) -> bool:
        """A row as ``put_many`` writes it: a time, an id, then numbers or nulls."""
        return (
            isinstance(row, list)
            and len(row) == self.row_length
            and isinstance(row[0], int | float)
            and isinstance(row[1], str)
            and all(v is None or (isinstance(v, int | float) and v == v) for v in row[2:])
        )

    def put_many(self, histories: Mapping[str, History]) -> None:
        """Store what each history added, or all of it where pruned rows would pile up."""
        keys: list[str] = []
        args: list[Any] = []
        for entity_id, history in histories.items():
            rewrite = history.stored < 0 or history.stored + len(history.added) > max(
                2 * len(history.times), 16
            )
            if rewrite:
                rows = [self.header, *map(pydantic_core.to_json, history.rows())]
                history.stored = len(history.times)
            else:
                rows = list(map(pydantic_core.to_json, history.added))
                history.stored += len(rows)
            keys.append(self.prefix + entity_id)
            args += ["1" if rewrite else "0", len(rows), *rows]
            history.added = []
            self._cache[entity_id] = history
            self._cache.move_to_end(entity_id)
            size = len(history.times)
            self._cached_rows += size - self._rows.get(entity_id, 0)
            self._rows[entity_id] = size
        if keys:
            self._save(keys=keys, args=[self.ttl_ms, *args])
        while self._cache and self._cached_rows > self.cached:
            evicted, _history = self._cache.popitem(last=False)
            self._cached_rows -= self._rows.pop(evicted)


class FeatureStore:
    """The latest features of each entity, for serving look-ups and people's label pages."""

    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self.client = client
        self.prefix = f"eddy:{namespace}:features:"

    def put_many(self, latest: Mapping[str, Mapping[str, Any]]) -> None:
        """Store entity → features (a newer write replaces an older one)."""
        if latest:
            prefix, dumps = self.prefix, json.dumps
            self.client.mset({prefix + entity_id: dumps(f) for entity_id, f in latest.items()})

    def get(self, entity_id: str) -> dict[str, Any] | None:
        """The latest features of ``entity_id``, or None if unknown."""
        raw = self.client.get(self.prefix + entity_id)
        return None if raw is None else dict(json.loads(raw))

    def get_many(self, entity_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The latest features of each known entity of ``entity_ids``, in one round trip."""
        values = self.client.mget([self.prefix + entity_id for entity_id in entity_ids])
        return {
            entity_id: dict(json.loads(raw))
            for entity_id, raw in zip(entity_ids, values, strict=True)
            if raw is not None
        }
