"""Serving throughput: features → serving → predictions, against a bare confluent-kafka loop.

Both read the same number of pre-produced feature events (10 numeric features), each trial in
its own process, on servers of its own (``Context.own_servers``). The baseline consumes, decodes
the JSON, adds one field, encodes and produces; serving runs a scaled logistic regression
(compiled to ONNX, a batch per call). Serving runs three ways: alone, with a second model in
shadow (answering every event too, on ``predictions.shadow``, a message per batch), and with
explanations on. The rate is taken from the output messages' timestamps between the 10th and
90th percentile, so start-up and group joins do not count.
"""

from __future__ import annotations

import json
import random
import sys
import time
import uuid
from datetime import UTC, datetime

from confluent_kafka import TopicPartition

from bench.harness import Context, Figure, median_figure
from schemas import FeatureEvent, ShadowAnswers
from services.core import deployments, registry
from services.core.datasets import default_classifier
from services.core.embedded import spawn_child, stop_child
from services.core.kafka import make_consumer, make_producer
from services.core.settings import Settings
from services.core.signing import Keyring
from services.core.topics import Topics

SCENARIO = "serving throughput"
FEATURES = [f"f{i}" for i in range(10)]


def synthetic_rows(count: int, seed: int) -> list[tuple[dict[str, float], bool]]:
    """Rows of 10 numeric features with a logistic ground truth."""
    rng = random.Random(seed)
    weights = [rng.uniform(-2, 2) for _ in FEATURES]
    rows = []
    for _ in range(count):
        x = {name: rng.gauss(5, 2) for name in FEATURES}
        score = sum(w * (x[n] - 5) for w, n in zip(weights, FEATURES, strict=True))
        rows.append((x, score + rng.gauss(0, 1) > 0))
    return rows


def publish_model(settings: Settings, seed: int = 1, hold: bool = False) -> int:
    """A scaled logistic regression trained on 2,000 synthetic rows, published and signed."""
    model = default_classifier()
    for x, y in synthetic_rows(2000, seed=seed):
        model.learn_one(x, y)
    artifact = registry.serialize_river(model)
    return registry.publish(settings, settings.model_name, artifact, hold=hold).version


def deploy_shadow(settings: Settings) -> None:
    """A second model, held back, put in shadow beside the first."""
    champion = publish_model(settings)
    challenger = publish_model(settings, seed=3, hold=True)
    record = deployments.change(
        None,
        Keyring.of(settings),
        model_name=settings.model_name,
        action="shadow",
        mode="shadow",
        champion_version=champion,
        challenger_version=challenger,
        decided_by="person",
    )
    deployments.announce(settings, record)


def produce_features(settings: Settings, count: int) -> None:
    """``count`` feature events on the settings' ``features`` topic."""
    producer = make_producer(settings, **{"linger.ms": 20})
    topic = Topics(settings.topic_prefix)("features")
    now = datetime.now(UTC)
    for i, (x, _y) in enumerate(synthetic_rows(count, seed=2)):
        event = FeatureEvent(
            event_id=f"b-{i}",
            entity_id=f"e{i % 100}",
            ts=now,
            features=x,
            feature_schema="bench",
            ingested_at=now,
        )
        while True:
            try:
                producer.produce(topic, event.model_dump_json().encode(), event.entity_id.encode())
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(60)


def output_rate(settings: Settings, role: str, count: int, timeout_s: float = 300) -> float:
    """Messages/s on an output topic, from producer timestamps, once ``count`` have arrived."""
    consumer = make_consumer(settings, f"bench-reader-{uuid.uuid4().hex}")
    topic = Topics(settings.topic_prefix)(role)  # type: ignore[arg-type]
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    stamps: list[int] = []
    deadline = time.monotonic() + timeout_s
    while len(stamps) < count and time.monotonic() < deadline:
        stamps += [m.timestamp()[1] for m in consumer.consume(5000, 0.5) if m.error() is None]
    consumer.close()
    if len(stamps) < count:
        raise RuntimeError(f"only {len(stamps)} of {count} outputs on {topic} in {timeout_s}s")
    stamps.sort()
    low, high = stamps[count // 10], stamps[count * 9 // 10]
    return (count * 0.8) / max((high - low) / 1000, 1e-3)


def shadow_answers(settings: Settings, count: int, timeout_s: float = 120) -> None:
    """Wait until ``predictions.shadow`` holds ``count`` answers (a message per batch)."""
    consumer = make_consumer(settings, f"bench-reader-{uuid.uuid4().hex}")
    topic = Topics(settings.topic_prefix)("shadow_predictions")
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    answers, deadline = 0, time.monotonic() + timeout_s
    try:
        while answers < count and time.monotonic() < deadline:
            for message in consumer.consume(500, 0.5):
                if message.error() is None:
                    answers += len(
                        ShadowAnswers.model_validate_json(message.value() or b"").answers
                    )
    finally:
        consumer.close()
    if answers < count:
        raise RuntimeError(f"only {answers} of {count} shadow answers in {timeout_s}s")


def bare_loop(bootstrap: str, source: str, sink: str, count: int, safe: bool) -> None:
    """The baseline: consume, decode, add a field, encode, produce.

    ``safe``: flush and commit after each batch (at-least-once, as Eddy delivers); otherwise
    fire-and-forget with auto-commit, the fastest a bare loop goes (and can lose messages).
    """
    from confluent_kafka import Consumer, Producer

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bare-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": not safe,
            "session.timeout.ms": 3000,
            "fetch.wait.max.ms": 10,
        }
    )
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all", "enable.idempotence": True}
    )
    consumer.subscribe([source])
    done = 0
    while done < count:
        messages = consumer.consume(500, 0.2)
        for message in messages:
            if message.error() is not None:
                continue
            event = json.loads(message.value() or b"{}")
            event["bare"] = True
            producer.produce(sink, json.dumps(event).encode(), message.key())
            done += 1
        if messages and safe:
            producer.flush()
            consumer.commit(asynchronous=False)
        else:
            producer.poll(0)
    producer.flush()
    consumer.close()


def _baseline_rate(ctx: Context, count: int, safe: bool) -> float:
    with ctx.own_servers():
        return _bare_loop_rate(ctx, count, safe)


def _bare_loop_rate(ctx: Context, count: int, safe: bool) -> float:
    settings = ctx.settings()
    produce_features(settings, count)
    topics = Topics(settings.topic_prefix)
    code = (
        "from bench.scenarios.serving_throughput import bare_loop; "
        f"bare_loop({settings.kafka_bootstrap!r}, {topics('features')!r}, "
        f"{topics('predictions')!r}, {count}, {safe})"
    )
    # a child that dies with the bench: killed mid-run, a plain Popen outlived it
    log = ctx.workdir / f"bare-loop-{uuid.uuid4().hex[:6]}.log"
    process = spawn_child([sys.executable, "-c", code], log)
    try:
        return output_rate(settings, "predictions", count)
    finally:
        try:
            process.wait(60)
        finally:
            stop_child(process)


def _serving_rate(ctx: Context, count: int, way: str = "alone") -> float:
    with ctx.own_servers():
        settings = ctx.settings()
        if way == "shadow":
            deploy_shadow(settings)
        else:
            publish_model(settings)
        env = {"EDDY_SERVING__EXPLAIN": "true"} if way == "explained" else {}
        produce_features(settings, count)
        with ctx.services(settings, "serving", **env):
            rate = output_rate(settings, "predictions", count)
            if way == "shadow":  # the shadow's answers must all be there too
                shadow_answers(settings, count)
            return rate


def run(ctx: Context) -> list[Figure]:
    """Median events/s of serving and of both bare loops, and the ratios."""
    count = 5_000 if ctx.quick else 50_000
    safe, fast, serving, shadow, explained = [], [], [], [], []
    for i in range(ctx.repeats):
        safe.append(_baseline_rate(ctx, count, safe=True))
        fast.append(_baseline_rate(ctx, count, safe=False))
        serving.append(_serving_rate(ctx, count))
        shadow.append(_serving_rate(ctx, count, "shadow"))
        explained.append(_serving_rate(ctx, count, "explained"))
        ctx.progress(
            f"   run {i + 1}: bare loop {safe[-1]:,.0f}/s (at-least-once), "
            f"{fast[-1]:,.0f}/s (fire-and-forget); serving {serving[-1]:,.0f}/s, with a "
            f"shadow {shadow[-1]:,.0f}/s, explaining {explained[-1]:,.0f}/s"
        )
    name = f"serving events/s, {count:,} events"
    return [
        median_figure(
            SCENARIO,
            f"{name} vs at-least-once bare loop",
            "ev/s",
            serving,
            safe,
            target=">= 0.8x bare loop",
            met=lambda v, b: b is not None and v >= 0.8 * b,
        ),
        median_figure(
            SCENARIO,
            f"{name} vs fire-and-forget bare loop",
            "ev/s",
            serving,
            fast,
            target=">= 0.8x bare loop",
            met=lambda v, b: b is not None and v >= 0.8 * b,
        ),
        median_figure(
            SCENARIO,
            f"{name}, a second model in shadow vs serving alone",
            "ev/s",
            shadow,
            serving,
            target=">= 0.8x",
            met=lambda v, b: b is not None and v >= 0.8 * b,
        ),
        median_figure(
            SCENARIO,
            f"{name}, explanations on vs off",
            "ev/s",
            explained,
            serving,
            target=">= 0.7x",
            met=lambda v, b: b is not None and v >= 0.7 * b,
        ),
    ]
