"""ingest's derived features: each accepted event gets its entity's windowed aggregates.

The histories live in Redis and are written back before the batch's outputs are acknowledged:
an event the history already holds (a batch run again after a crash) is not counted twice, its
aggregates are worked out again as of its time (``services.core.aggregates``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC

import redis

from services.core import metrics
from services.core.aggregates import layout, seconds
from services.core.feature_schema import FeatureSchema
from services.core.state import WindowStore
from services.ingest.validation import CleanEvent


class Derivation:
    """Adds the schema's derived features to a batch's accepted events, in their order."""

    def __init__(self, schema: FeatureSchema, client: redis.Redis, namespace: str) -> None:
        self.specs = schema.derived
        self.policy = schema.windows
        horizon = max((s.window_s for s in self.specs.values()), default=0.0)
        needed = horizon + seconds(self.policy.lateness)
        ttl_s = max(seconds(self.policy.expire_after), needed)
        self.store = WindowStore(client, namespace, ttl_s, layout(self.specs))
        self.late = metrics.LATE_EVENTS.labels("ingest")

    def __call__(self, events: Sequence[CleanEvent]) -> list[CleanEvent]:
        """The events with their derived features (one Redis read and one write a batch)."""
        if not self.specs or not events:
            return list(events)
        histories = self.store.get_many(sorted({event.entity_id for event in events}))
        out: list[CleanEvent] = []
        late = 0
        for event in events:
            ts = event.ts if event.ts.tzinfo else event.ts.replace(tzinfo=UTC)
            derived = histories[event.entity_id].add(
                ts.timestamp(), event.event_id, event.features, self.specs, self.policy
            )
            late += derived.late
            out.append(event._replace(features={**event.features, **derived.values}))
        self.store.put_many(histories)
        if late:
            self.late.inc(late)
        return out
