"""From raw bytes on ``events.raw`` to a clean event for ``features``, or a ``Rejection``."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import pydantic_core
from pydantic import ValidationError

from schemas import RawEvent
from schemas.base import Features, utc_now
from services.core.feature_schema import FeatureSchema, check_features
from services.core.rejection import Rejection
from services.core.settings import IngestSettings
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


@dataclass(frozen=True)
class EventWindow:
    """The event times ingest accepts, around now."""

    max_age: timedelta = timedelta(days=36_525)
    max_ahead: timedelta = timedelta(days=1)

    @classmethod
    def of(cls, settings: IngestSettings) -> EventWindow:
        """The window an ingest's settings give."""
        return cls(
            timedelta(days=settings.max_event_age_days),
            timedelta(seconds=settings.max_event_ahead_s),
        )


def duplicate_key(raw: bytes, keys: int) -> str | None:
    """A key that appears twice in one object of ``raw`` (None if none does).

    JSON parsers keep the last of two equal keys, silently, so ``{"event_id": "a", "event_id":
    "b"}`` would pass as "b" while other readers of the same bytes see "a". The exact check
    (Python's parser with a hook on every object) costs three times the validation, so it runs
    only when a cheap count says it might find something: without whitespace before a colon,
    every key ends with ``":``, so as many ``":`` as the ``keys`` parsed means no key repeats.
    """
    if raw.count(b'":') == keys and not _SPACE_AFTER_QUOTE.search(raw):
        return None
    repeated: list[str] = []

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        found = dict(pairs)
        if len(found) != len(pairs) and not repeated:
            seen: set[str] = set()
            for key, _value in pairs:
                if key in seen:
                    repeated.append(key)
                    break
                seen.add(key)
        return found

    json.loads(raw, object_pairs_hook=unique)
    return repeated[0] if repeated else None


_SPACE_AFTER_QUOTE = re.compile(rb'"[ \t\r\n]')


def validate_raw(
    raw: bytes,
    schema: FeatureSchema,
    max_bytes: int,
    window: EventWindow = EventWindow(),
    pii_key: bytes = b"",
) -> CleanEvent | Rejection:
    """Check size, encoding, envelope, features, keys and time, in that order, and normalise.

    Features marked as personal data come out hashed with ``pii_key`` or dropped.
    """
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
    features = check_features(schema, event.features, pii_key)
    if isinstance(features, Rejection):
        return Rejection(features.reason, features.detail, event.event_id)
    repeated = duplicate_key(raw, len(event.model_fields_set) + len(event.features))
    if repeated is not None:
        return Rejection("invalid_json", f"key {repeated!r} appears twice", event.event_id)
    now, ts = utc_now(), event.ts if event.ts.tzinfo else event.ts.replace(tzinfo=UTC)
    if not now - window.max_age <= ts <= now + window.max_ahead:
        return Rejection(
            "out_of_range",
            f"event time {event.ts.isoformat()} is outside the accepted window "
            f"({window.max_age.days} days back, {window.max_ahead.total_seconds():g} s ahead: "
            "EDDY_INGEST__MAX_EVENT_AGE_DAYS, EDDY_INGEST__MAX_EVENT_AHEAD_S)",
            event.event_id,
        )
    return CleanEvent(event.event_id, event.entity_id, event.ts, features, schema.name)
