"""Fast state in Redis: de-duplication by event_id and the online feature store.

Each batch costs one command per structure, not one per event: building and parsing a pipeline
of per-event commands cost ingest more CPU than validating the events. The multi-key commands
(MGET, MSET, a script over all the batch's keys) want one Redis, not Redis Cluster.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import redis

from services.core.settings import Settings


def connect_redis(settings: Settings) -> redis.Redis:
    """A Redis client for the configured URL."""
    from services.core.exceptions import ConfigurationError

    if settings.redis_url is None:
        raise ConfigurationError(
            "EDDY_REDIS_URL is not set: point it at a Redis server or run `eddy stack up`"
        )
    return redis.Redis.from_url(settings.redis_url, socket_timeout=10, health_check_interval=30)


def leaderboard_key(prefix: str, model_name: str) -> str:
    """Where training keeps its leaderboard as JSON (``eddy models leaderboard`` reads it)."""
    return f"eddy:{prefix}training:{model_name}:leaderboard"


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
