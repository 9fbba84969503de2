"""From raw bytes on ``events.raw`` to a clean event for ``features``, or a ``Rejection``."""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

import pydantic_core
from pydantic import ValidationError

from schemas import RawEvent
from schemas.base import Features, utc_now
from services.core.feature_schema import FeatureSchema, check_features
from services.core.rejection import Rejection
from services.core.stream import describe, validation_reason


class CleanEvent(NamedTuple):
    """A raw event that passed every check, its features normalised: a ``FeatureEvent`` to be.

    Its parts are validated already (the envelope by ``RawEvent``, the features by the schema),
    so it is encoded directly (``json``) instead of being validated again as a ``FeatureEvent``:
    building and dumping that model took 8.5 of ingest's 23 us per event in process. A test holds
    the two encodings equal.
    """

    event_id: str
    entity_id: str
    ts: datetime
    features: Features
    feature_schema: str

    def json(self) -> bytes:
        """The ``FeatureEvent`` JSON, stamped as ingested now."""
        return pydantic_core.to_json(
            {
                "schema_version": 1,
                "event_id": self.event_id,
                "entity_id": self.entity_id,
                "ts": self.ts,
                "features": self.features,
                "feature_schema": self.feature_schema,
                "ingested_at": utc_now(),
            }
        )


def validate_raw(raw: bytes, schema: FeatureSchema, max_bytes: int) -> CleanEvent | Rejection:
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
    return CleanEvent(event.event_id, event.entity_id, event.ts, features, schema.name)
