"""Personal data marked in the schema never leaves ingest: no topic, Redis key or log holds it."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from schemas import DeadLetter, FeatureEvent
from services.core.settings import Settings
from services.core.topics import Topics
from tests.integration.support import (
    OpenReader,
    StartService,
    everything_in_redis,
    everything_on_topics,
    produce,
)

EMAIL = "alice.secret@example.com"
PHONE = "+44 7700 900123"

SCHEMA = """
name = "customers"

[features.amount]
type = "float"
min = 0

[features.email]
type = "string"
pii = "hash"

[features.phone]
type = "string"
required = false
pii = "drop"
"""


def test_marked_values_are_hashed_or_dropped_before_anything_is_written(
    settings: Settings, start_service: StartService, reader: OpenReader, tmp_path: Path
) -> None:
    schema = tmp_path / "customers.toml"
    schema.write_text(SCHEMA)
    ingest = start_service(
        "ingest", EDDY_INGEST__FEATURE_SCHEMA=str(schema), EDDY_PII_KEY="pii-test-key"
    )
    good = {"event_id": "c-1", "entity_id": "cust-1", "ts": "2026-12-01T10:00:00Z",
            "features": {"amount": 12.5, "email": EMAIL, "phone": PHONE}}  # fmt: skip
    bad = {**good, "event_id": "c-2", "features": {**good["features"], "amount": "lots"}}
    unknown = {**good, "event_id": "c-3", "features": {**good["features"], "extra": 1}}
    broken = json.dumps(good).encode()[:-3]  # not JSON any more, the values still in it
    produce(
        settings,
        "raw",
        [(b"cust-1", json.dumps(e).encode()) for e in (good, bad, unknown)] + [(b"cust-1", broken)],
    )
    (accepted,) = reader("features", FeatureEvent).read_until(lambda items: len(items) >= 1)
    letters = reader("dlq", DeadLetter).read_until(lambda items: len(items) >= 3)

    assert accepted.features["amount"] == 12.5 and "phone" not in accepted.features
    hashed = accepted.features["email"]
    assert isinstance(hashed, str) and hashed.startswith("h:") and EMAIL not in hashed
    assert {d.reason for d in letters} == {"wrong_type", "unknown_field", "invalid_json"}
    assert all(d.original_redacted for d in letters)
    originals = [base64.b64decode(d.original) for d in letters]
    assert any(hashed.encode() in o for o in originals), "a parsed reject keeps its other fields"
    ingest.stop()
    for secret in (EMAIL, PHONE):
        raw = Topics(settings.topic_prefix)("raw")  # the producer's own topic: it came so
        assert secret.encode() not in everything_on_topics(settings, but=raw), secret
        assert secret.encode() not in everything_in_redis(settings), secret
        assert secret not in ingest.log_path.read_text(errors="replace"), secret


def test_a_schema_that_hashes_needs_a_key_and_says_which(
    settings: Settings, start_service: StartService, tmp_path: Path
) -> None:
    schema = tmp_path / "customers.toml"
    schema.write_text(SCHEMA)
    ingest = start_service("ingest", EDDY_INGEST__FEATURE_SCHEMA=str(schema), EDDY_PII_KEY="")
    assert ingest.process is not None
    assert ingest.process.wait(60) == 1
    assert "EDDY_PII_KEY" in ingest.log_tail()
