"""Helpers for integration tests: real topics, real processes, real models."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar

from confluent_kafka import TopicPartition
from pydantic import BaseModel

from schemas import FeatureEvent, ModelVersion, RawEvent
from services.core import registry
from services.core.datasets import default_classifier, stream
from services.core.kafka import end_offsets, make_consumer, make_producer
from services.core.settings import Settings
from services.core.state import connect_redis
from services.core.supervisor import ServiceProcess
from services.core.topics import TopicRole, Topics

PayloadT = TypeVar("PayloadT", bound=BaseModel)
T = TypeVar("T")


def trained_model(rows: int = 200) -> bytes:
    """A default classifier that learned the first rows of Phishing, as artifact bytes."""
    model = default_classifier()
    for features, label in list(stream("phishing"))[:rows]:
        model.learn_one(features, label)
    return registry.serialize_river(model)


def publish_model(settings: Settings, rows: int = 200, **kwargs: object) -> ModelVersion:
    """Publish a trained default classifier under serving's model name."""
    return registry.publish(
        settings,
        settings.model_name,
        trained_model(rows),
        **kwargs,  # type: ignore[arg-type]
    )


def phishing_events(count: int, start: int = 0, prefix: str = "ev") -> list[RawEvent]:
    """Raw events made from Phishing rows, ids ``{prefix}-{i}``."""
    rows = list(stream("phishing"))[start : start + count]
    return [
        RawEvent(
            event_id=f"{prefix}-{start + i}",
            entity_id=f"page-{(start + i) % 7}",
            ts=datetime.now(UTC),
            features=features,
        )
        for i, (features, _label) in enumerate(rows)
    ]


def feature_events(count: int, start: int = 0, prefix: str = "ev") -> list[FeatureEvent]:
    """Already-validated feature events, for feeding serving directly."""
    return [
        FeatureEvent(
            event_id=e.event_id,
            entity_id=e.entity_id,
            ts=e.ts,
            features=e.features,
            feature_schema="phishing",
        )
        for e in phishing_events(count, start, prefix)
    ]


def produce(
    settings: Settings, role: TopicRole, payloads: list[tuple[bytes | None, bytes]]
) -> None:
    """Produce (key, value) pairs to a topic and wait for the broker."""
    producer = make_producer(settings)
    topic = Topics(settings.topic_prefix)(role)
    for key, value in payloads:
        producer.produce(topic, value, key)
    assert producer.flush(30) == 0, "the broker did not acknowledge every message"


def produce_features(settings: Settings, events: list[FeatureEvent]) -> None:
    """Produce feature events keyed by entity."""
    produce(
        settings, "features", [(e.entity_id.encode(), e.model_dump_json().encode()) for e in events]
    )


class TopicReader:
    """Reads a topic from its beginning, across calls, decoding each message as one model."""

    def __init__(self, settings: Settings, role: TopicRole, model: type[PayloadT]) -> None:
        self.model = model
        self.items: list[BaseModel] = []
        self.consumer = make_consumer(settings, f"test-reader-{uuid.uuid4().hex}")
        topic = Topics(settings.topic_prefix)(role)
        partitions = self.consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self.consumer.assign([TopicPartition(topic, p, 0) for p in partitions])

    def read_until(
        self, done: Callable[[list[BaseModel]], bool], timeout_s: float = 60.0
    ) -> list[BaseModel]:
        """Consume until ``done(items)`` holds or the time is up; returns every item so far."""
        deadline = time.monotonic() + timeout_s
        while not done(self.items) and time.monotonic() < deadline:
            for message in self.consumer.consume(500, 0.2):
                if message.error() is None:
                    self.items.append(self.model.model_validate_json(message.value() or b""))
        return self.items

    def settle(self, quiet_s: float = 2.0) -> list[BaseModel]:
        """Consume until nothing new arrived for ``quiet_s``: to show that nothing more comes."""
        last_count, last_change = -1, time.monotonic()
        while time.monotonic() - last_change < quiet_s:
            for message in self.consumer.consume(500, 0.2):
                if message.error() is None:
                    self.items.append(self.model.model_validate_json(message.value() or b""))
            if len(self.items) != last_count:
                last_count, last_change = len(self.items), time.monotonic()
        return self.items

    def close(self) -> None:
        """Close the consumer."""
        self.consumer.close()


def everything_on_topics(settings: Settings, but: str = "") -> bytes:
    """Every key and value on this test's topics but ``but``, to search for what must not be."""
    consumer = make_consumer(settings, f"sweep-{uuid.uuid4().hex}")
    found = b""
    try:
        topics = [
            t
            for t in consumer.list_topics(timeout=10).topics
            if t.startswith(settings.topic_prefix) and t != but
        ]
        for topic in topics:
            for end in end_offsets(consumer, topic):
                if end.offset <= 0:
                    continue
                consumer.assign([TopicPartition(topic, end.partition, 0)])
                while batch := consumer.consume(500, 2.0):
                    found += b"\n".join((m.value() or b"") + (m.key() or b"") for m in batch)
    finally:
        consumer.close()
    return found


def everything_in_redis(settings: Settings) -> bytes:
    """Every key, type and serialized value in Redis, to search for what must not be there."""
    client = connect_redis(settings)
    found = b""
    for key in client.scan_iter(count=1000):
        found += key + b"\n" + (client.type(key) or b"") + (client.dump(key) or b"") + b"\n"
    return found


def poll_until(check: Callable[[], T | None], timeout_s: float, every_s: float = 0.1) -> T | None:
    """``check()`` again and again until it gives something, or None when the time is up."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = check()
        if found is not None or time.monotonic() >= deadline:
            return found
        time.sleep(every_s)


def pid_alive(pid: int) -> bool:
    """True while a process with this id exists (and is not a zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except OSError:
        return False


#: The fixtures' types, for test signatures.
StartService = Callable[..., ServiceProcess]
OpenReader = Callable[[TopicRole, type[BaseModel]], TopicReader]


def metric_value(port: int, name: str) -> float:
    """The sum of a metric's samples on a service's /metrics page (0 if absent)."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as page:
        text = page.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


def wait_for_metric(port: int, name: str, at_least: float, timeout_s: float = 60) -> float:
    """Poll a service's metric until it reaches ``at_least``; fails the test if it never does."""
    deadline = time.monotonic() + timeout_s
    value = 0.0
    while time.monotonic() < deadline:
        try:
            value = metric_value(port, name)
        except OSError:
            value = 0.0  # not serving metrics yet
        if value >= at_least:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{name} reached {value}, not {at_least}, within {timeout_s}s")
