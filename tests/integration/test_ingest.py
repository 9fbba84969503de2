"""ingest on the real broker and Redis: clean events out, rejects to the DLQ, duplicates dropped."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import TypeVar

from schemas import DeadLetter, FeatureEvent
from services.core.settings import Settings
from services.core.state import FeatureStore, connect_redis
from tests.integration.support import OpenReader, StartService, phishing_events, produce

T = TypeVar("T")
GOOD = phishing_events(1)[0]


def _variant(**changes: object) -> bytes:
    return json.dumps({**json.loads(GOOD.model_dump_json()), **changes}).encode()


BAD_INPUTS: list[tuple[str, bytes, str]] = [
    ("bad json", b'{"event_id": ', "invalid_json"),
    ("not utf-8", b"\xff\xfe{}", "not_utf8"),
    ("missing field", _variant(event_id=None).replace(b'"event_id": null, ', b""), "missing_field"),
    (
        "wrong type",
        _variant(event_id="w1", features={**GOOD.features, "https": "yes"}),
        "wrong_type",
    ),
    (
        "out of range",
        _variant(event_id="r1", features={**GOOD.features, "https": 3.0}),
        "out_of_range",
    ),
    (
        "unknown feature",
        _variant(event_id="u1", features={**GOOD.features, "x": 1}),
        "unknown_field",
    ),
    ("unknown envelope field", _variant(event_id="u2", admin=True), "unknown_field"),
    ("oversized", _variant(event_id="o1", pad="A" * 200_000), "oversized"),
    ("nan", _variant(event_id="n1").replace(b'"https": 0.0', b'"https": NaN'), "invalid_value"),
    ("deeply nested", b"[" * 5_000 + b"]" * 5_000, "invalid_json"),
]


def test_every_kind_of_bad_input_reaches_the_dlq_with_its_reason_and_ingest_keeps_going(
    settings: Settings, start_service: StartService, reader: OpenReader
) -> None:
    start_service("ingest")
    produce(settings, "raw", [(b"bad", raw) for _name, raw, _reason in BAD_INPUTS])
    produce(settings, "raw", [(GOOD.entity_id.encode(), GOOD.model_dump_json().encode())])

    dlq = reader("dlq", DeadLetter).read_until(lambda items: len(items) >= len(BAD_INPUTS))
    features = reader("features", FeatureEvent).read_until(lambda items: len(items) >= 1)

    assert [d.reason for d in dlq] == [reason for _n, _r, reason in BAD_INPUTS]
    for letter, (_name, raw, _reason) in zip(dlq, BAD_INPUTS, strict=True):
        assert letter.original_size == len(raw)
        kept = base64.b64decode(letter.original)
        assert raw.startswith(kept) and (letter.original_truncated == (len(kept) < len(raw)))
        assert letter.source_topic.endswith("events.raw") and letter.detail
    assert sorted(d.source_offset for d in dlq) == list(range(len(BAD_INPUTS)))
    assert [f.event_id for f in features] == [GOOD.event_id], "a good event after bad ones is lost"


def test_the_same_event_twice_gives_one_feature_event(
    settings: Settings, start_service: StartService, reader: OpenReader
) -> None:
    events = phishing_events(20)
    twice = [(e.entity_id.encode(), e.model_dump_json().encode()) for e in events for _ in (1, 2)]
    start_service("ingest")
    produce(settings, "raw", twice)
    # and once more in a later batch, after ingest remembered them in Redis
    features = reader("features", FeatureEvent)
    features.read_until(lambda items: len(items) >= 20)
    produce(settings, "raw", twice[:10])
    out = features.settle()
    assert sorted(f.event_id for f in out) == sorted(e.event_id for e in events)


def test_features_are_normalised_and_the_store_keeps_the_latest_per_entity(
    settings: Settings, start_service: StartService, reader: OpenReader
) -> None:
    events = phishing_events(14)  # entities page-0..page-6, two events each
    start_service("ingest")
    produce(settings, "raw", [(e.entity_id.encode(), e.model_dump_json().encode()) for e in events])
    out = reader("features", FeatureEvent).read_until(lambda items: len(items) >= 14)
    first = out[0]
    assert isinstance(first.features["age_of_domain"], int)
    assert isinstance(first.features["https"], float)
    store = FeatureStore(connect_redis(settings), settings.topic_prefix)
    for event in events[7:]:
        stored = _eventually(lambda e=event: store.get(e.entity_id))  # written after the ack
        assert stored is not None
        assert stored == {
            k: (float(v) if k not in ("age_of_domain", "ip_in_url") else v)
            for k, v in event.features.items()
        }


def _eventually(read: Callable[[], T | None], timeout_s: float = 10.0) -> T | None:
    """What ``read`` returns once it is not None, or None after the timeout."""
    deadline = time.monotonic() + timeout_s
    value = read()
    while value is None and time.monotonic() < deadline:
        time.sleep(0.05)
        value = read()
    return value
