"""Fast state in Redis: de-duplication by event_id and the online feature store."""

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


class Deduplicator:
    """Remembers event ids for a while, so a replayed or re-sent event has one effect.

    Ids are remembered only after the effect is acknowledged (``remember``), never on first
    sight: a crash in between replays the event rather than losing it.
    """

    def __init__(self, client: redis.Redis, namespace: str, ttl_s: int) -> None:
        self.client = client
        self.prefix = f"eddy:{namespace}:seen:"
        self.ttl_s = ttl_s

    def seen(self, event_ids: Iterable[str]) -> set[str]:
        """The ids among ``event_ids`` that were remembered before."""
        ids = list(event_ids)
        if not ids:
            return set()
        found = self.client.mget([self.prefix + i for i in ids])
        return {i for i, value in zip(ids, found, strict=True) if value is not None}

    def remember(self, event_ids: Iterable[str]) -> None:
        """Remember ids for the configured time."""
        pipe = self.client.pipeline(transaction=False)
        for event_id in event_ids:
            pipe.set(self.prefix + event_id, b"1", ex=self.ttl_s)
        pipe.execute()


class FeatureStore:
    """The latest features of each entity, for serving look-ups and people's label pages."""

    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self.client = client
        self.prefix = f"eddy:{namespace}:features:"

    def put_many(self, latest: Mapping[str, Mapping[str, Any]]) -> None:
        """Store entity → features (a newer write replaces an older one)."""
        pipe = self.client.pipeline(transaction=False)
        for entity_id, features in latest.items():
            pipe.set(self.prefix + entity_id, json.dumps(features))
        pipe.execute()

    def get(self, entity_id: str) -> dict[str, Any] | None:
        """The latest features of ``entity_id``, or None if unknown."""
        raw = self.client.get(self.prefix + entity_id)
        return None if raw is None else dict(json.loads(raw))
