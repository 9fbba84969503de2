"""Payloads of the data path: raw events in, clean features out, rejects to the DLQ."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from schemas.base import Features, Identifier, Payload, utc_now

RejectReason = Literal[
    "oversized",
    "not_utf8",
    "invalid_json",
    "missing_field",
    "unknown_field",
    "wrong_type",
    "out_of_range",
    "invalid_value",
    "handler_error",
]


class RawEvent(Payload):
    """What a producer sends to ``events.raw``; the features are checked by ingest's schema."""

    event_id: Identifier = Field(description="Producer-chosen idempotency key.")
    entity_id: Identifier = Field(description="The entity the event is about; the Kafka key.")
    ts: datetime = Field(description="Event time (ISO 8601 or Unix seconds).")
    features: dict[str, Any] = Field(description="Raw feature values, validated by ingest.")


class FeatureEvent(Payload):
    """A validated, normalised event on ``features``."""

    event_id: Identifier
    entity_id: Identifier
    ts: datetime
    features: Features
    feature_schema: str = Field(description="Name of the feature schema that validated it.")
    ingested_at: datetime = Field(default_factory=utc_now)


class DeadLetter(Payload):
    """A rejected input on ``events.dlq``: why, and enough to find and replay it."""

    reason: RejectReason
    detail: str = Field(max_length=2000, description="What was expected and what came.")
    service: str
    source_topic: str
    source_partition: int
    source_offset: int
    original: str = Field(description="The original bytes, base64 (truncated if oversized).")
    original_size: int = Field(ge=0, description="Size of the original message in bytes.")
    original_truncated: bool = False
    original_redacted: bool = Field(
        False,
        description="Personal data in the original was hashed or dropped (or, if it could not be "
        "parsed, the original withheld): it is not the message that came.",
    )
    event_id: str | None = Field(None, description="The event id, if it could be read.")
    original_key: str | None = Field(
        None, description="The original message key, base64 (a replay sends it again)."
    )
    failed_at: datetime = Field(default_factory=utc_now)
