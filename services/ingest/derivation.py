"""ingest's derived features: each accepted event gets its entity's windowed aggregates.

The histories live in Redis (and, for the entities seen lately, in memory too) and are written
before the batch's outputs are acknowledged: an event the history already holds (a batch run
again after a crash) is not counted twice and gets the values it got the first time
(``services.core.aggregates``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC

import redis

from services.core import metrics
from services.core.aggregates import Windows
from services.core.feature_schema import FeatureSchema
from services.core.state import WindowStore
from services.ingest.validation import CleanEvent


class Derivation:
    """Adds the schema's derived features to a batch's accepted events, in their order."""

    def __init__(
        self, schema: FeatureSchema, client: redis.Redis, namespace: str, cached: int = 500_000
    ) -> None:
        self.windows = Windows(schema.derived, schema.windows)
        self.active = bool(schema.derived)
        self.store = WindowStore(client, namespace, self.windows, cached)
        self.late = metrics.LATE_EVENTS.labels("ingest")

    def __call__(self, events: Sequence[CleanEvent]) -> list[CleanEvent]:
        """The events with derived features: a batch reads what memory lacks, writes once."""
        if not self.active or not events:
            return list(events)
        histories = self.store.get_many(list(dict.fromkeys(e.entity_id for e in events)))
        out: list[CleanEvent] = []
        late = 0
        add = self.windows.add
        for event in events:
            ts = event.ts if event.ts.tzinfo else event.ts.replace(tzinfo=UTC)
            derived = add(
                histories[event.entity_id], ts.timestamp(), event.event_id, event.features
            )
            late += derived.late
            out.append(event._replace(features={**event.features, **derived.values}))
        self.store.put_many(histories)
        if late:
            self.late.inc(late)
        return out
