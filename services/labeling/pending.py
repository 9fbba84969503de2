"""The labeling join's state in Redis: what waits for a label, what was joined, what expired.

Per event id: a hash ``pending:{id}`` (fields ``features``, ``prediction``, ``tasked``), a label
parked before its features (``early:{id}``), and the markers ``labeled:{id}`` and
``expired:{id}``; one sorted set ``due`` holds the pending ids scored by their expiry deadline.
Every method pipelines its commands for a whole batch: the hot path pays a round trip per
batch, not per event.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import redis

_PARTS = ("features", "prediction", "tasked")


@dataclass(frozen=True, slots=True)
class PendingEvent:
    """What the store holds for one event id: raw JSON as it was stored, markers as flags."""

    features: bytes | None = None
    prediction: bytes | None = None
    early_label: bytes | None = None
    tasked: bool = False
    labeled: bool = False
    expired: bool = False


def _event(parts: list[Any], early_label: Any, labeled: Any = 0, expired: Any = 0) -> PendingEvent:
    features, prediction, tasked = parts
    return PendingEvent(
        features, prediction, early_label, tasked is not None, bool(labeled), bool(expired)
    )


class PendingStore:
    """Pending features and predictions, early labels, and the markers that make replays harmless.

    The sorted set decides expiry (the sweep); the Redis TTLs on hashes and early labels are
    only a safety net for a deployment that stopped sweeping, so they are the markers' longer
    TTL: a shorter one could delete an item before the sweep counted it.
    """

    def __init__(
        self,
        client: redis.Redis,
        namespace: str,
        pending_ttl_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.prefix = f"eddy:{namespace}:"
        self.due_key = f"{self.prefix}due"
        self.pending_ttl_s = pending_ttl_s
        self.marker_ttl_ms = max(1, round(pending_ttl_s * 10_000))  # 10 x the pending time
        self.clock = clock

    def _pending(self, event_id: str) -> str:
        return f"{self.prefix}pending:{event_id}"

    def _early(self, event_id: str) -> str:
        return f"{self.prefix}early:{event_id}"

    def _labeled(self, event_id: str) -> str:
        return f"{self.prefix}labeled:{event_id}"

    def _expired(self, event_id: str) -> str:
        return f"{self.prefix}expired:{event_id}"

    def lookup(self, event_ids: Collection[str]) -> dict[str, PendingEvent]:
        """Everything stored about each id, markers included."""
        if not event_ids:
            return {}
        pipe = self.client.pipeline(transaction=False)
        for event_id in event_ids:
            pipe.hmget(self._pending(event_id), _PARTS)
        pipe.mget(
            [key(i) for key in (self._early, self._labeled, self._expired) for i in event_ids]
        )
        replies = pipe.execute()
        n = len(event_ids)
        flags = replies[n]
        return {
            event_id: _event(replies[i], flags[i], flags[n + i], flags[2 * n + i])
            for i, event_id in enumerate(event_ids)
        }

    def closed(self, event_ids: Collection[str]) -> set[str]:
        """The ids among ``event_ids`` already joined or expired (one command for the batch)."""
        if not event_ids:
            return set()
        pipe = self.client.pipeline(transaction=False)
        pipe.mget([key(i) for key in (self._labeled, self._expired) for i in event_ids])
        flags = pipe.execute()[0]
        n = len(event_ids)
        return {i for k, i in enumerate(event_ids) if flags[k] or flags[n + k]}

    def add_features(self, features: Mapping[str, bytes]) -> dict[str, PendingEvent]:
        """Store FeatureEvent JSON by id; returns what each event has right after the write."""
        return self._add("features", features)

    def add_predictions(self, predictions: Mapping[str, bytes]) -> dict[str, PendingEvent]:
        """Store Prediction JSON by id; returns what each event has right after the write."""
        return self._add("prediction", predictions)

    def _add(self, part: str, items: Mapping[str, bytes]) -> dict[str, PendingEvent]:
        """Write one part of each event, then read all of it back in the same pipeline.

        Writing before reading is what makes the join safe across instances: of a label parked
        by one instance and features stored by another, the later of the two reads sees the
        other, so an example may come twice (consumers de-duplicate) but is never lost.
        Rewriting the same part is harmless, and ``NX`` keeps the first deadline on replays.
        """
        if not items:
            return {}
        pipe = self.client.pipeline(transaction=False)
        for event_id, raw in items.items():
            pipe.hset(self._pending(event_id), part, raw)
            pipe.pexpire(self._pending(event_id), self.marker_ttl_ms)
        pipe.zadd(self.due_key, dict.fromkeys(items, self.clock() + self.pending_ttl_s), nx=True)
        for event_id in items:
            pipe.hmget(self._pending(event_id), _PARTS)
        pipe.mget([self._early(i) for i in items])
        replies = pipe.execute()
        n = len(items)
        parts, early = replies[2 * n + 1 : 3 * n + 1], replies[3 * n + 1]
        return {event_id: _event(parts[i], early[i]) for i, event_id in enumerate(items)}

    def park_labels(self, labels: Mapping[str, bytes]) -> dict[str, PendingEvent | None]:
        """Park Label JSON by id until its features come; returns what each event has now.

        None for an id where another label was parked first (the first label wins).
        """
        if not labels:
            return {}
        pipe = self.client.pipeline(transaction=False)
        for event_id, raw in labels.items():
            pipe.set(self._early(event_id), raw, nx=True, px=self.marker_ttl_ms)
        pipe.zadd(self.due_key, dict.fromkeys(labels, self.clock() + self.pending_ttl_s), nx=True)
        for event_id in labels:
            pipe.hmget(self._pending(event_id), _PARTS)
        replies = pipe.execute()
        n = len(labels)
        return {
            event_id: _event(replies[n + 1 + i], raw) if replies[i] else None
            for i, (event_id, raw) in enumerate(labels.items())
        }

    def mark_tasked(self, event_ids: Iterable[str]) -> None:
        """Remember that a labeling task was produced for these pending events."""
        pipe = self.client.pipeline(transaction=False)
        for event_id in event_ids:
            pipe.hset(self._pending(event_id), "tasked", b"1")
            pipe.pexpire(self._pending(event_id), self.marker_ttl_ms)  # never an orphan w/o TTL
        pipe.execute()

    def mark_labeled(self, event_ids: Collection[str]) -> None:
        """Close joined events: a marker that turns later labels into duplicates, state gone."""
        if not event_ids:
            return
        pipe = self.client.pipeline(transaction=False)
        for event_id in event_ids:
            pipe.set(self._labeled(event_id), b"1", px=self.marker_ttl_ms)
        self._forget(pipe, event_ids)
        pipe.zrem(self.due_key, *event_ids)
        pipe.execute()

    def pop_expired(self, limit: int) -> dict[str, PendingEvent]:
        """Close up to ``limit`` events whose deadline passed; returns what each held.

        Each id is claimed with its own ``ZREM``, so of several instances sweeping at once
        exactly one counts it. A crash between the claim and the clean-up leaves the state to
        its safety TTL, uncounted (counters restart with the process anyway).
        """
        pipe = self.client.pipeline(transaction=False)
        pipe.zrangebyscore(self.due_key, "-inf", self.clock(), start=0, num=limit)
        event_ids = [raw.decode() for raw in pipe.execute()[0]]
        if not event_ids:
            return {}
        n = len(event_ids)
        for event_id in event_ids:
            pipe.zrem(self.due_key, event_id)
        for event_id in event_ids:
            pipe.hmget(self._pending(event_id), _PARTS)
        pipe.mget([self._early(i) for i in event_ids])
        replies = pipe.execute()
        early = replies[2 * n]
        expired = {
            event_id: _event(replies[n + i], early[i])
            for i, event_id in enumerate(event_ids)
            if replies[i]
        }
        if expired:
            for event_id in expired:
                pipe.set(self._expired(event_id), b"1", px=self.marker_ttl_ms)
            self._forget(pipe, expired)
            pipe.execute()
        return expired

    def _forget(self, pipe: redis.client.Pipeline, event_ids: Collection[str]) -> None:
        """Queue the deletion of the events' pending hashes and parked labels (one command)."""
        pipe.delete(*(key(i) for key in (self._pending, self._early) for i in event_ids))
