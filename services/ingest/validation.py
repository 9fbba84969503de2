"""From raw bytes on ``events.raw`` to a clean ``FeatureEvent``, or a ``Rejection`` saying why."""

from __future__ import annotations

from pydantic import ValidationError

from schemas import FeatureEvent, RawEvent
from services.core.stream import describe, validation_reason
from services.ingest.feature_schema import FeatureSchema, Rejection, check_features


def validate_raw(raw: bytes, schema: FeatureSchema, max_bytes: int) -> FeatureEvent | Rejection:
    """Check size, encoding, envelope and features, in that order, and normalise."""
    if len(raw) > max_bytes:
        return Rejection("oversized", f"{len(raw)} bytes, over the limit of {max_bytes}")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejection("not_utf8", f"not UTF-8 at byte {exc.start}")
    try:
        event = RawEvent.model_validate_json(raw)
    except ValidationError as error:
        return Rejection(validation_reason(error), describe(error))
    features = check_features(schema, event.features)
    if isinstance(features, Rejection):
        return Rejection(features.reason, features.detail, event.event_id)
    return FeatureEvent(
        event_id=event.event_id,
        entity_id=event.entity_id,
        ts=event.ts,
        features=features,
        feature_schema=schema.name,
    )
