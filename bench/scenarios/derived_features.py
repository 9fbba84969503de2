"""Derived features: what windowed aggregates cost ingest, Redis and a request by entity.

- Throughput: ingest (a service process) reads pre-produced raw events of 10 numeric features
  for 1,000 entities, a few seconds of event time apart, and writes ``features``; once with the
  plain schema (the baseline) and once with ten aggregates over three windows declared (sliding
  1 min, tumbling 1 h, hopping 10 min by 1 min). Each trial on servers of its own; the rate is
  taken from the output messages' timestamps between their 10th and 90th percentile.
- Memory: ingest's derivation, in this process, gives 100,000 entities five events each (all
  inside their windows) on an embedded Redis of its own; the figure is what Redis's
  ``used_memory`` grew by.
- Request by entity: serving (a service process) answers request/reply calls, interleaved: one
  with all 10 features, one naming an entity whose features the store holds and sending none.
  The figure is the p99 of the second less the p99 of the first, over the same run.
"""

from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.harness import Context, Figure, median_figure
from bench.pacing import percentile
from bench.scenarios.serving_throughput import FEATURES, output_rate, publish_model, synthetic_rows
from eddy.client import EddyClient, PredictionTimeoutError
from schemas import RawEvent
from schemas.base import Features
from services.core.embedded import EmbeddedStack
from services.core.feature_schema import FeatureSchema
from services.core.kafka import make_producer
from services.core.settings import Settings
from services.core.state import FeatureStore, connect_redis
from services.core.topics import Topics
from services.ingest.derivation import Derivation
from services.ingest.validation import CleanEvent

SCENARIO = "derived features"
ENTITIES = 1_000

#: Ten aggregates over three windows, on the synthetic features.
DERIVED = """
[windows]
lateness = "30s"

[derived.n_1m]
agg = "count"
window = "1m"

[derived.f0_sum_1m]
agg = "sum"
of = "f0"
window = "1m"

[derived.f1_mean_1m]
agg = "mean"
of = "f1"
window = "1m"

[derived.f2_max_1m]
agg = "max"
of = "f2"
window = "1m"

[derived.n_1h]
agg = "count"
window = "1h"
kind = "tumbling"

[derived.f0_mean_1h]
agg = "mean"
of = "f0"
window = "1h"
kind = "tumbling"

[derived.f3_std_1h]
agg = "std"
of = "f3"
window = "1h"
kind = "tumbling"

[derived.f4_min_10m]
agg = "min"
of = "f4"
window = "10m"
kind = "hopping"
hop = "1m"

[derived.f5_sum_10m]
agg = "sum"
of = "f5"
window = "10m"
kind = "hopping"
hop = "1m"

[derived.f6_last_10m]
agg = "last"
of = "f6"
window = "10m"
kind = "hopping"
hop = "1m"
"""


def schema_file(workdir: Path, derived: bool) -> Path:
    """The bench's feature schema (10 floats), with or without the ten aggregates."""
    path = workdir / f"derived-{'on' if derived else 'off'}.toml"
    lines = ['name = "bench"', ""]
    for name in FEATURES:
        lines += [f"[features.{name}]", 'type = "float"', ""]
    path.write_text("\n".join(lines) + (DERIVED if derived else ""), encoding="utf-8")
    return path


def raw_events(count: int) -> list[tuple[bytes | None, bytes]]:
    """Raw events for ``ENTITIES`` entities, 50 ms of event time apart (all in the past hour)."""
    rows = synthetic_rows(2_000, seed=5)
    start = datetime.now(UTC) - timedelta(minutes=50)
    out: list[tuple[bytes | None, bytes]] = []
    for i in range(count):
        event = RawEvent(
            event_id=f"d-{i}",
            entity_id=f"e{i % ENTITIES}",
            ts=start + timedelta(milliseconds=50 * i),
            features=rows[i % len(rows)][0],
        )
        out.append((event.entity_id.encode(), event.model_dump_json().encode()))
    return out


def produce_raw(settings: Settings, messages: list[tuple[bytes | None, bytes]]) -> None:
    """Messages on the settings' ``events.raw``, acknowledged."""
    producer = make_producer(settings, **{"linger.ms": 20})
    topic = Topics(settings.topic_prefix)("raw")
    for key, value in messages:
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(60):
        raise RuntimeError("the broker did not acknowledge every raw event")


def _ingest_rate(ctx: Context, derived: bool, count: int) -> float:
    schema = str(schema_file(ctx.workdir, derived))
    with ctx.own_servers():
        settings = ctx.settings()
        produce_raw(settings, raw_events(count))
        with ctx.services(settings, "ingest", EDDY_INGEST__FEATURE_SCHEMA=schema):
            return output_rate(settings, "features", count)


def _memory_per_100k(ctx: Context, entities: int) -> float:
    """MB of Redis per 100,000 entities with five events each in their windows."""
    schema = FeatureSchema.load(str(schema_file(ctx.workdir, derived=True)))
    rows = synthetic_rows(500, seed=6)
    start = datetime.now(UTC) - timedelta(minutes=5)
    with EmbeddedStack(workdir=ctx.workdir / "derived-memory") as stack:
        settings = Settings(kafka_bootstrap=stack.kafka_bootstrap, redis_url=stack.redis_url)
        client = connect_redis(settings)
        derive = Derivation(schema, client, "bench")
        before = int(client.info("memory")["used_memory"])
        for first in range(0, entities, 500):
            batch = [
                CleanEvent(
                    f"m-{e}-{k}",
                    f"entity-{e}",
                    start + timedelta(seconds=10 * k),
                    dict(rows[(e + k) % len(rows)][0]),
                    "bench",
                )
                for k in range(5)
                for e in range(first, min(first + 500, entities))
            ]
            derive(batch)
        grown = int(client.info("memory")["used_memory"]) - before
        client.close()
    return grown / 1e6 * 100_000 / entities


def _by_entity_p99s(ctx: Context, calls: int) -> tuple[float, float]:
    """p99 ms of requests carrying all features and of requests by entity, interleaved."""
    schema = str(schema_file(ctx.workdir, derived=False))
    rows: list[Features] = [dict(x) for x, _ in synthetic_rows(200, seed=7)]
    with ctx.own_servers():
        settings = ctx.settings()
        publish_model(settings)
        store = FeatureStore(connect_redis(settings), settings.topic_prefix or "default")
        store.put_many({f"e{i}": rows[i] for i in range(len(rows))})
        with (
            ctx.services(settings, "serving", EDDY_INGEST__FEATURE_SCHEMA=schema),
            EddyClient(settings) as client,
        ):
            deadline = time.monotonic() + 60
            while True:
                try:
                    client.predict(rows[0], timeout_s=2.0)
                    break
                except PredictionTimeoutError:
                    if time.monotonic() > deadline:
                        raise
            full: list[float] = []
            by_entity: list[float] = []
            for i in range(calls):
                features = rows[i % len(rows)]
                began = time.perf_counter()
                client.predict(features)
                full.append((time.perf_counter() - began) * 1000)
                began = time.perf_counter()
                reply = client.predict({}, entity_id=f"e{i % len(rows)}")
                by_entity.append((time.perf_counter() - began) * 1000)
                assert reply.filled == sorted(FEATURES), reply
    return percentile(full, 99), percentile(by_entity, 99)


def run(ctx: Context) -> list[Figure]:
    """Ingest's throughput with and without aggregates, their memory, a request's added p99."""
    count = 8_000 if ctx.quick else 30_000
    plain, derived = [], []
    for _ in range(ctx.repeats):
        plain.append(_ingest_rate(ctx, False, count))
        derived.append(_ingest_rate(ctx, True, count))
        ctx.progress(f"   ingest: plain {plain[-1]:,.0f} ev/s, with aggregates {derived[-1]:,.0f}")
    entities = 10_000 if ctx.quick else 100_000
    memory = [_memory_per_100k(ctx, entities)]
    ctx.progress(f"   window state: {memory[0]:,.1f} MB per 100,000 entities")
    calls = 200 if ctx.quick else 1_000
    added, p99s = [], []
    for _ in range(ctx.repeats):
        full, by_entity = _by_entity_p99s(ctx, calls)
        added.append(by_entity - full)
        p99s.append((full, by_entity))
        ctx.progress(f"   request p99: all features {full:.2f} ms, by entity {by_entity:.2f} ms")
    return [
        median_figure(
            SCENARIO,
            "ingest with ten aggregates over three windows, vs without",
            "events/s",
            derived,
            plain,
            target=">= 0.8x",
            met=lambda v, b: b is not None and v >= 0.8 * b,
            note=f"{count:,} events of {ENTITIES:,} entities, 10 numeric features",
        ),
        median_figure(
            SCENARIO,
            "window state in Redis per 100,000 entities (5 events each)",
            "MB",
            memory,
            note=f"measured over {entities:,} entities; ten aggregates, three windows",
        ),
        median_figure(
            SCENARIO,
            "p99 a request by entity adds over one carrying its features",
            "ms",
            added,
            target="<= 2 ms",
            met=lambda v, _b: v <= 2.0,
            note=f"{calls:,} calls of each, interleaved; p99 all features / by entity, ms: "
            + ", ".join(f"{a:.1f} / {b:.1f}" for a, b in p99s)
            + f"; median of all-features p99s {statistics.median(a for a, _ in p99s):.1f} ms",
        ),
    ]
