"""Derived features on the real broker and Redis: no crash or Redis restart changes a value.

The aggregates equal a brute-force computation (tests/unit/test_aggregates.py); here each
feature event must carry exactly what one uninterrupted pass over the same events gives.
"""

from __future__ import annotations

import json
import random
import secrets
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr

from schemas import FeatureEvent, RawEvent
from services.core.aggregates import History, Windows
from services.core.embedded import EmbeddedStack, tuned_for_embedded
from services.core.feature_schema import FeatureSchema
from services.core.kafka import create_topics
from services.core.settings import IngestSettings, KafkaSettings, Settings
from services.core.state import FeatureStore, connect_redis
from services.core.supervisor import ServiceProcess, service_env
from tests.integration.support import TopicReader, produce

SCHEMA = """
name = "payments"

[features.amount]
type = "float"
min = 0.0

[features.card_present]
type = "bool"
required = false

[windows]
lateness = "10s"

[derived.payments_1m]
agg = "count"
window = "1m"

[derived.spend_1m]
agg = "sum"
of = "amount"
window = "1m"

[derived.mean_spend_5m]
agg = "mean"
of = "amount"
window = "5m"
kind = "hopping"
hop = "1m"

[derived.max_spend_hour]
agg = "max"
of = "amount"
window = "1h"
kind = "tumbling"

[derived.spend_std_5m]
agg = "std"
of = "amount"
window = "5m"

[derived.present_share_5m]
agg = "mean"
of = "card_present"
window = "5m"

[derived.seconds_since_last]
agg = "since_last"

[derived.previous_amount]
agg = "lag"
of = "amount"

[derived.amount_vs_mean]
transform = "ratio"
of = "amount"
by = "mean_spend_5m"

[derived.log_amount]
transform = "log"
of = "amount"
"""


@pytest.fixture
def own_stack(tmp_path: Path) -> Iterator[EmbeddedStack]:
    """Servers this test restarts."""
    with EmbeddedStack(workdir=tmp_path / "stack") as stack:
        yield stack


def _events(n: int) -> list[RawEvent]:
    """Payments of 20 cards, mostly in order; a fifth late, some beyond the 10 s lateness."""
    rng = random.Random(7)
    start = datetime.now(UTC) - timedelta(hours=2)
    events = []
    for i in range(n):
        ts = start + timedelta(seconds=i * 2 - (rng.uniform(0, 30) if rng.random() < 0.2 else 0))
        features: dict[str, object] = {"amount": round(rng.lognormvariate(3, 1), 2)}
        if rng.random() < 0.7:
            features["card_present"] = rng.random() < 0.5
        card = f"card-{rng.randrange(20)}"
        events.append(RawEvent(event_id=f"p{i}", entity_id=card, ts=ts, features=features))
    return events


def test_a_sigkill_of_ingest_and_a_restart_of_redis_change_no_aggregate(
    own_stack: EmbeddedStack, tmp_path: Path
) -> None:
    path = tmp_path / "payments.toml"
    path.write_text(SCHEMA)
    schema = FeatureSchema.load(str(path))
    settings = Settings(
        kafka_bootstrap=own_stack.kafka_bootstrap,
        redis_url=own_stack.redis_url,
        topic_prefix=f"d{uuid.uuid4().hex[:8]}.",
        signing_key=SecretStr(secrets.token_hex(16)),
        registry_dir=tmp_path / "registry",
        kafka=tuned_for_embedded(KafkaSettings()),
        ingest=IngestSettings(feature_schema=str(path)),
    )
    create_topics(settings)
    events = _events(3000)
    raw = [(e.entity_id.encode(), e.model_dump_json().encode()) for e in events]
    env = service_env(settings)
    features = TopicReader(settings, "features", FeatureEvent)
    first = ServiceProcess("ingest", env, tmp_path / "ingest-1.log").start()
    second = ServiceProcess("ingest", env, tmp_path / "ingest-2.log")
    try:
        produce(settings, "raw", raw[:1000])  # handled and committed: its windows are in Redis
        features.read_until(lambda items: len(items) >= 1000, 120)
        time.sleep(2)  # several commit intervals
        produce(settings, "raw", raw[1000:2000])
        features.read_until(lambda items: len(items) >= 1200, 120)
        first.kill()  # mid-stream: batches handled, not all acknowledged nor committed
        seen_before_kill = len({f.event_id for f in features.items})
        own_stack.restart_redis()
        second.start()
        produce(settings, "raw", raw[2000:])
        wanted = {e.event_id for e in events}
        out = features.read_until(lambda items: wanted <= {f.event_id for f in items}, 180)
    finally:
        first.kill()
        second.stop()
        features.close()

    got: dict[str, list[dict[str, object]]] = {}
    for event in out:
        got.setdefault(event.event_id, []).append(event.features)
    windows = Windows(schema.derived, schema.windows)
    histories: dict[str, History] = {}
    late = 0
    for event in events:  # one pass, in the order each card's events were sent
        history = histories.setdefault(event.entity_id, History())
        derived = windows.add(history, event.ts.timestamp(), event.event_id, event.features)
        late += derived.late
        expected = {**event.features, **derived.values}
        for copy in got[event.event_id]:  # a batch sent again must carry the same values
            assert copy == pytest.approx(expected), (event, copy, expected)
    assert 0 < late < len(events) // 10, late  # some came too late to count, not most
    assert seen_before_kill < 2000  # the kill came before ingest was through the second part
    assert sum("spend_1m" in f[0] for f in got.values()) == len(events) - late
    # the online store holds each card's latest raw and derived features, for requests by entity
    store = FeatureStore(connect_redis(settings), settings.topic_prefix)
    latest = store.get(events[-1].entity_id)
    assert latest is not None and {"amount", "spend_1m", "log_amount"} <= latest.keys()
    sent_twice = sum(len(copies) > 1 for copies in got.values())
    print(json.dumps({"late": late, "sent_twice": sent_twice, "before_kill": seen_before_kill}))
