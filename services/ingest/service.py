"""ingest: validates raw events, drops duplicates, keeps the feature store, writes ``features``."""

from __future__ import annotations

from collections.abc import Sequence

from confluent_kafka import Message, TopicPartition

from schemas.base import Features
from services.core import metrics
from services.core.feature_schema import FeatureSchema, redact
from services.core.rejection import Rejection
from services.core.runtime import Runtime, bootstrap, run_stream_service
from services.core.settings import Settings
from services.core.state import Deduplicator, FeatureStore
from services.core.stream import BatchHandler, Effects, reject
from services.ingest.derivation import Derivation
from services.ingest.validation import CleanEvent, EventWindow, validate_raw

SERVICE = "ingest"


class IngestHandler:
    """Handles a batch of raw events: each ends on ``features``, on the DLQ, or as a duplicate."""

    def __init__(self, runtime: Runtime, schema: FeatureSchema) -> None:
        self.schema = schema
        self.max_bytes = runtime.settings.ingest.max_event_bytes
        self.window = EventWindow.of(runtime.settings.ingest)
        self.pii_key = runtime.settings.pii_key.get_secret_value().encode()
        schema.require_pii_key(self.pii_key)
        self.features_topic = runtime.topics("features")
        self.dlq_topic = runtime.topics("dlq")
        namespace = f"{runtime.settings.topic_prefix}{SERVICE}"
        self.dedup = Deduplicator(runtime.redis, namespace, runtime.settings.ingest.dedup_ttl_s)
        self.store = FeatureStore(runtime.redis, runtime.settings.topic_prefix or "default")
        self.duplicates = metrics.DUPLICATES.labels(SERVICE)
        self.derive = Derivation(
            schema, runtime.redis, namespace, runtime.settings.ingest.window_cache_rows
        )
        # ids emitted by batches not yet acknowledged: Redis learns them only after the ack
        self.in_flight: set[str] = set()

    def __call__(self, messages: Sequence[Message]) -> Effects:
        """Validate, de-duplicate (against Redis and within the batch), and emit."""
        effects = Effects()
        valid: list[CleanEvent] = []
        window, key, personal = self.window, self.pii_key, bool(self.schema.personal)
        for message in messages:
            raw = message.value() or b""
            result = validate_raw(raw, self.schema, self.max_bytes, window, key)
            if isinstance(result, Rejection):
                reject(
                    message,
                    SERVICE,
                    self.dlq_topic,
                    effects,
                    result.reason,
                    result.detail,
                    result.event_id,
                    # personal data stays out of the dead letter too; unparsed, nothing is kept
                    (redact(raw, self.schema, key) or b"") if personal else None,
                )
            else:
                valid.append(result)
        already_seen = self.dedup.seen(event.event_id for event in valid)
        accepted: dict[str, CleanEvent] = {}
        for event in valid:
            if (
                event.event_id in already_seen
                or event.event_id in accepted
                or event.event_id in self.in_flight
            ):
                self.duplicates.inc()
                continue
            accepted[event.event_id] = event
        if self.schema.derived:
            accepted = {event.event_id: event for event in self.derive(list(accepted.values()))}
        for event in accepted.values():
            effects.emit_json(self.features_topic, event.entity_id, event.json())
        if accepted:
            latest = {event.entity_id: event.features for event in accepted.values()}
            self.in_flight.update(accepted)
            effects.after_ack.append(lambda: self._acknowledged(accepted, latest))
        return effects

    def assigned(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        """Partitions came: histories held in memory may be stale, read them from Redis again."""
        self.derive.store.forget()
        return partitions

    def _acknowledged(self, accepted: dict[str, CleanEvent], latest: dict[str, Features]) -> None:
        self.store.put_many(latest)
        self.dedup.remember(accepted)
        self.in_flight.difference_update(accepted)


def handlers(runtime: Runtime) -> dict[str, BatchHandler]:
    """Topic → handler for the ingest service."""
    return {runtime.topics("raw"): _handler(runtime)}


def _handler(runtime: Runtime) -> IngestHandler:
    return IngestHandler(runtime, FeatureSchema.load(runtime.settings.ingest.feature_schema))


def run(settings: Settings | None = None) -> None:
    """Entry point: run ingest until SIGTERM or SIGINT."""
    runtime = bootstrap(SERVICE, settings)
    ingest = _handler(runtime)
    run_stream_service(runtime, {runtime.topics("raw"): ingest}, on_assign=ingest.assigned)
