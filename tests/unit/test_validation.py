"""Ingest's check of raw bytes: every hostile or malformed input is a Rejection, never a crash."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from schemas import FeatureEvent
from services.core.feature_schema import FeatureSchema
from services.core.rejection import Rejection
from services.ingest.validation import CleanEvent, EventWindow, validate_raw

MAX_BYTES = 65_536

FEATURES = {
    "empty_server_form_handler": 0.5,
    "popup_window": 0.0,
    "https": 1.0,
    "request_from_other_domain": 0.25,
    "anchor_from_other_domain": 0.75,
    "is_popular": 0.5,
    "long_url": 1.0,
    "age_of_domain": 1,
    "ip_in_url": 0,
}


@pytest.fixture(scope="module")
def schema() -> FeatureSchema:
    return FeatureSchema.load("phishing")


def envelope(**changes: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": "evt-0001",
        "entity_id": "page-42",
        "ts": "2024-05-01T12:00:00Z",
        "features": dict(FEATURES),
    }
    event.update(changes)
    return event


def encoded(event: dict[str, Any]) -> bytes:
    return json.dumps(event).encode()


def with_feature_literal(name: str, literal: str) -> bytes:
    """An event whose feature ``name`` is written as a raw JSON literal (NaN, 1e400...)."""
    features = {**FEATURES, name: "__here__"}
    return encoded(envelope(features=features)).replace(b'"__here__"', literal.encode())


def accepted(result: CleanEvent | Rejection) -> CleanEvent:
    assert isinstance(result, CleanEvent), f"expected a clean event, got {result!r}"
    return result


def rejected(result: CleanEvent | Rejection) -> Rejection:
    assert isinstance(result, Rejection), f"expected a Rejection, got {result!r}"
    return result


def test_valid_event_becomes_a_feature_event(schema: FeatureSchema) -> None:
    event = accepted(validate_raw(encoded(envelope()), schema, MAX_BYTES))

    assert event.event_id == "evt-0001"
    assert event.entity_id == "page-42"
    assert event.ts == datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert event.features == FEATURES
    assert event.feature_schema == "phishing"


@pytest.mark.parametrize(
    "ts", ["2024-05-01T12:00:00.123456Z", "2024-05-01T14:00:00+02:00", 1_700_000_000.5]
)
def test_a_clean_event_is_written_exactly_as_its_feature_event_would_be(
    schema: FeatureSchema, ts: object
) -> None:
    features = {**FEATURES, "https": 1, "age_of_domain": 0.0, "is_popular": 1e-300}
    event = accepted(validate_raw(encoded(envelope(ts=ts, features=features)), schema, MAX_BYTES))

    written = event.json()

    model = FeatureEvent(**event._asdict())
    expected = model.model_dump_json().encode()
    cut = written.index(b'"ingested_at"')
    assert written[:cut] == expected[:cut]
    decoded = FeatureEvent.model_validate_json(written)
    assert decoded.model_dump(exclude={"ingested_at"}) == model.model_dump(exclude={"ingested_at"})
    assert abs(decoded.ingested_at - datetime.now(UTC)) < timedelta(minutes=1)


def test_features_are_normalised_in_the_feature_event(schema: FeatureSchema) -> None:
    features = {**FEATURES, "https": 1, "age_of_domain": 0.0}

    event = accepted(validate_raw(encoded(envelope(features=features)), schema, MAX_BYTES))

    assert type(event.features["https"]) is float
    assert type(event.features["age_of_domain"]) is int


def test_timestamp_as_unix_seconds_is_accepted(schema: FeatureSchema) -> None:
    event = accepted(validate_raw(encoded(envelope(ts=1_700_000_000)), schema, MAX_BYTES))

    assert event.ts == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)


def test_timestamp_as_iso_string_keeps_its_offset(schema: FeatureSchema) -> None:
    raw = encoded(envelope(ts="2024-05-01T14:00:00+02:00"))

    event = accepted(validate_raw(raw, schema, MAX_BYTES))

    assert event.ts.utcoffset() == timedelta(hours=2)
    assert event.ts == datetime(2024, 5, 1, 12, tzinfo=UTC)


def test_event_exactly_at_the_size_limit_is_accepted(schema: FeatureSchema) -> None:
    raw = encoded(envelope())
    padded = raw[:-1] + b" " * 100 + b"}"

    accepted(validate_raw(padded, schema, max_bytes=len(padded)))


def test_event_one_byte_over_the_size_limit_is_rejected_as_oversized(
    schema: FeatureSchema,
) -> None:
    raw = encoded(envelope())

    result = rejected(validate_raw(raw, schema, max_bytes=len(raw) - 1))

    assert result.reason == "oversized"
    assert str(len(raw)) in result.detail


def test_size_is_checked_before_anything_is_parsed(schema: FeatureSchema) -> None:
    result = rejected(validate_raw(b"\xff" * 101, schema, max_bytes=100))

    assert result.reason == "oversized"


def test_feature_error_carries_the_event_id(schema: FeatureSchema) -> None:
    raw = encoded(envelope(features={**FEATURES, "https": 2.0}))

    result = rejected(validate_raw(raw, schema, MAX_BYTES))

    assert result.reason == "out_of_range"
    assert result.event_id == "evt-0001"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        pytest.param(b"", "invalid_json", id="empty-bytes"),
        pytest.param(b"   ", "invalid_json", id="whitespace"),
        pytest.param(b"{", "invalid_json", id="truncated-object"),
        pytest.param(b"{'event_id': 'e'}", "invalid_json", id="single-quotes"),
        pytest.param(b'{"event_id": "e",}', "invalid_json", id="trailing-comma"),
        pytest.param(b"\xff\xfe{}", "not_utf8", id="utf16-bom"),
        pytest.param(b'{"event_id": "caf\xe9"}', "not_utf8", id="latin1-byte"),
        pytest.param(b"\xc3", "not_utf8", id="cut-multibyte"),
        pytest.param(b"[]", "wrong_type", id="json-list"),
        pytest.param(b"42", "wrong_type", id="json-number"),
        pytest.param(b'"event"', "wrong_type", id="json-string"),
        pytest.param(b"null", "wrong_type", id="json-null"),
        pytest.param(b"true", "wrong_type", id="json-bool"),
        pytest.param(b"[" * 10_000 + b"]" * 10_000, "invalid_json", id="deep-list"),
        pytest.param(b'{"a":' * 10_000 + b"1" + b"}" * 10_000, "invalid_json", id="deep-object"),
        pytest.param(
            b'{"event_id":"e","entity_id":"u","ts":0,"features":{"https":'
            + b"[" * 10_000
            + b"]" * 10_000
            + b"}}",
            "invalid_json",
            id="deep-feature",
        ),
        pytest.param(
            b'{"event_id":"e","entity_id":"u","ts":0,"features":{"https":"\\ud800"}}',
            "invalid_json",
            id="lone-surrogate",
        ),
    ],
)
def test_malformed_bytes_are_rejected_not_raised(
    schema: FeatureSchema, raw: bytes, reason: str
) -> None:
    result = rejected(validate_raw(raw, schema, max_bytes=10_000_000))

    assert result.reason == reason
    assert result.event_id is None


@pytest.mark.parametrize(
    ("event", "reason", "named"),
    [
        pytest.param(envelope(event_id=None), "wrong_type", "event_id", id="null-event-id"),
        pytest.param(envelope(event_id=17), "wrong_type", "event_id", id="numeric-event-id"),
        pytest.param(envelope(event_id="has space"), "invalid_value", "event_id", id="space-id"),
        pytest.param(envelope(event_id="tab\there"), "invalid_value", "event_id", id="tab-id"),
        pytest.param(envelope(event_id="é"), "invalid_value", "event_id", id="non-ascii-id"),
        pytest.param(envelope(event_id="x" * 201), "out_of_range", "event_id", id="201-char-id"),
        pytest.param(envelope(event_id=""), "out_of_range", "event_id", id="empty-event-id"),
        pytest.param(envelope(entity_id="a b"), "invalid_value", "entity_id", id="space-entity"),
        pytest.param(envelope(ts="yesterday"), "wrong_type", "ts", id="ts-not-a-date"),
        pytest.param(envelope(ts=True), "wrong_type", "ts", id="ts-bool"),
        pytest.param(envelope(ts=1e20), "wrong_type", "ts", id="ts-after-year-9999"),
        pytest.param(envelope(features=[1, 2]), "wrong_type", "features", id="features-list"),
        pytest.param(envelope(features="x"), "wrong_type", "features", id="features-string"),
        pytest.param(envelope(source="app"), "unknown_field", "source", id="unknown-envelope"),
        pytest.param(envelope(schema_version=2), "out_of_range", "schema_version", id="version-2"),
    ],
)
def test_bad_envelope_is_rejected_with_its_reason_and_field(
    schema: FeatureSchema, event: dict[str, Any], reason: str, named: str
) -> None:
    result = rejected(validate_raw(encoded(event), schema, MAX_BYTES))

    assert result.reason == reason
    assert result.detail.startswith(f"{named}:")


@pytest.mark.parametrize("field", ["event_id", "entity_id", "ts", "features"])
def test_missing_envelope_field_is_rejected_as_missing_field(
    schema: FeatureSchema, field: str
) -> None:
    event = envelope()
    del event[field]

    result = rejected(validate_raw(encoded(event), schema, MAX_BYTES))

    assert result.reason == "missing_field"
    assert result.detail == f"{field}: Field required"


def test_event_id_of_exactly_200_characters_is_accepted(schema: FeatureSchema) -> None:
    event = accepted(validate_raw(encoded(envelope(event_id="x" * 200)), schema, MAX_BYTES))

    assert len(event.event_id) == 200


@pytest.mark.parametrize(
    ("literal", "reason"),
    [
        pytest.param("NaN", "invalid_value", id="nan"),
        pytest.param("Infinity", "invalid_value", id="infinity"),
        pytest.param("-Infinity", "invalid_value", id="minus-infinity"),
        pytest.param("1e400", "invalid_value", id="float-overflow"),
        pytest.param("1" + "0" * 400, "out_of_range", id="integer-10-to-400"),
        pytest.param("-" + "9" * 400, "out_of_range", id="negative-400-digits"),
        pytest.param("true", "wrong_type", id="bool-for-float"),
        pytest.param('"0.5"', "wrong_type", id="string-for-float"),
        pytest.param("null", "missing_field", id="null-for-required"),
    ],
)
def test_hostile_number_literal_in_a_float_feature_is_rejected(
    schema: FeatureSchema, literal: str, reason: str
) -> None:
    result = rejected(validate_raw(with_feature_literal("https", literal), schema, MAX_BYTES))

    assert result.reason == reason
    assert result.detail.startswith("https:")
    assert result.event_id == "evt-0001"


@pytest.mark.parametrize(
    ("literal", "reason"),
    [
        pytest.param("NaN", "invalid_value", id="nan"),
        pytest.param("1e400", "invalid_value", id="float-overflow"),
        pytest.param("1" + "0" * 400, "out_of_range", id="integer-10-to-400"),
        pytest.param("false", "wrong_type", id="bool-for-int"),
        pytest.param('"1"', "wrong_type", id="string-for-int"),
    ],
)
def test_hostile_number_literal_in_an_int_feature_is_rejected(
    schema: FeatureSchema, literal: str, reason: str
) -> None:
    raw = with_feature_literal("age_of_domain", literal)

    result = rejected(validate_raw(raw, schema, MAX_BYTES))

    assert result.reason == reason
    assert result.detail.startswith("age_of_domain:")


def test_fractional_value_for_an_int_feature_is_rejected_as_wrong_type() -> None:
    schema = FeatureSchema.model_validate({"name": "n", "features": {"count": {"type": "int"}}})
    raw = encoded(envelope(features={"count": 1.5}))

    result = rejected(validate_raw(raw, schema, MAX_BYTES))

    assert result.reason == "wrong_type"
    assert result.detail.startswith("count:")


def test_unknown_feature_is_rejected_as_unknown_field(schema: FeatureSchema) -> None:
    raw = encoded(envelope(features={**FEATURES, "page_rank": 0.3}))

    result = rejected(validate_raw(raw, schema, MAX_BYTES))

    assert result.reason == "unknown_field"
    assert "page_rank" in result.detail


def test_accepted_event_serialises_to_json_that_reads_back(schema: FeatureSchema) -> None:
    event = accepted(validate_raw(encoded(envelope()), schema, MAX_BYTES))

    again = FeatureEvent.model_validate_json(event.json())

    assert again.model_dump(exclude={"ingested_at", "schema_version"}) == event._asdict()


def _twice(old: bytes, new: bytes) -> bytes:
    raw = encoded(envelope())
    assert old in raw
    return raw.replace(old, new)


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        (_twice(b'"event_id": "evt-0001"', b'"event_id": "x", "event_id": "evt-0001"'), "event_id"),
        (_twice(b'"https": 1.0', b'"https": 0.0, "https": 1.0'), "https"),
        (_twice(b'"https": 1.0', b'"https" : 0.0, "https": 1.0'), "https"),
    ],
    ids=["envelope", "feature", "feature, space before the colon"],
)
def test_a_key_given_twice_is_refused_whichever_the_parser_would_keep(
    schema: FeatureSchema, raw: bytes, key: str
) -> None:
    result = rejected(validate_raw(raw, schema, MAX_BYTES))
    assert result.reason == "invalid_json"
    assert repr(key) in result.detail


def test_keys_spelt_inside_string_values_are_not_taken_for_repeats(schema: FeatureSchema) -> None:
    raw = encoded(envelope(event_id='x":1', entity_id='"https":'))
    rejected_or_clean = validate_raw(raw, schema, MAX_BYTES)
    assert not (
        isinstance(rejected_or_clean, Rejection) and rejected_or_clean.reason == "invalid_json"
    )


def test_pretty_printed_json_is_still_accepted(schema: FeatureSchema) -> None:
    accepted(validate_raw(json.dumps(envelope(), indent=2).encode(), schema, MAX_BYTES))


@pytest.mark.parametrize(
    "ts",
    ["9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "1900-01-01T00:00:00Z"],
)
def test_an_event_time_far_from_now_is_out_of_range_and_says_which_setting(
    schema: FeatureSchema, ts: str
) -> None:
    result = rejected(validate_raw(encoded(envelope(ts=ts)), schema, MAX_BYTES))
    assert result.reason == "out_of_range"
    assert "EDDY_INGEST__MAX_EVENT_AGE_DAYS" in result.detail


def test_the_event_time_window_is_configurable_and_takes_times_without_a_zone_as_utc(
    schema: FeatureSchema,
) -> None:
    hour_ago = (datetime.now(UTC) - timedelta(hours=1)).replace(tzinfo=None).isoformat()
    narrow = EventWindow(max_age=timedelta(minutes=30), max_ahead=timedelta(0))
    assert rejected(validate_raw(encoded(envelope(ts=hour_ago)), schema, MAX_BYTES, narrow))
    accepted(validate_raw(encoded(envelope(ts=hour_ago)), schema, MAX_BYTES))
