"""confluent-kafka clients built from Settings, and topic provisioning: one vocabulary for all."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from confluent_kafka import (
    Consumer,
    ConsumerGroupState,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from services.core.exceptions import ConfigurationError
from services.core.settings import Settings
from services.core.topics import Topics, TopicSpec


def _common(settings: Settings) -> dict[str, Any]:
    if settings.kafka_bootstrap is None:
        raise ConfigurationError(
            "EDDY_KAFKA_BOOTSTRAP is not set: point it at a Kafka cluster or run `eddy stack up`"
        )
    return {
        "bootstrap.servers": settings.kafka_bootstrap,
        **settings.kafka.security_config(),
        **settings.kafka.extra,
    }


def producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """An idempotent producer that waits for every in-sync replica (acks=all)."""
    return {
        **_common(settings),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": settings.kafka.linger_ms,
        "message.max.bytes": settings.kafka.max_message_bytes,
        **overrides,
    }


def consumer_config(settings: Settings, group_id: str, **overrides: Any) -> dict[str, Any]:
    """A consumer whose offsets are committed by Eddy only, after its outputs are acknowledged."""
    session_ms = settings.kafka.session_timeout_ms
    return {
        **_common(settings),
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": session_ms,
        "heartbeat.interval.ms": max(100, session_ms // 5),
        "fetch.wait.max.ms": settings.kafka.fetch_wait_max_ms,
        "max.partition.fetch.bytes": settings.kafka.max_message_bytes,
        "fetch.max.bytes": max(settings.kafka.max_message_bytes, 52_428_800),
        **overrides,
    }


#: The least data a batching consumer's fetch waits for (up to its service's fetch wait).
FETCH_MIN_BYTES = 65_536


def batching_fetches(settings: Settings, wait_ms: int) -> Settings:
    """The settings with a consumer that lets data pile up for ``wait_ms`` (0: unchanged).

    For services off the path from event to prediction (labeling, training, monitoring): they
    trade that much latency for fewer, bigger batches and fewer broker requests. With the
    default ``fetch.min.bytes`` of 1 the broker answers a fetch as soon as any data is there,
    and under load such a service handles many batches of a few messages, each paying its
    Redis round trips and broker requests. ``EDDY_KAFKA__EXTRA`` can still set
    ``fetch.min.bytes``.
    """
    if wait_ms == 0:
        return settings
    extra = {"fetch.min.bytes": str(FETCH_MIN_BYTES), **settings.kafka.extra}
    kafka = settings.kafka.model_copy(update={"fetch_wait_max_ms": wait_ms, "extra": extra})
    return settings.model_copy(update={"kafka": kafka})


def make_producer(settings: Settings, **overrides: Any) -> Producer:
    """A producer from the settings."""
    return Producer(producer_config(settings, **overrides))


def make_consumer(settings: Settings, group_id: str, **overrides: Any) -> Consumer:
    """A consumer in ``group_id`` from the settings."""
    return Consumer(consumer_config(settings, group_id, **overrides))


def make_admin(settings: Settings) -> AdminClient:
    """An admin client from the settings."""
    return AdminClient(_common(settings))


def partitions_of(spec: TopicSpec, settings: Settings) -> int:
    """How many partitions ``create_topics`` gives the topic: the setting, else its declaration."""
    return settings.kafka.topic_partitions or spec.partitions


def create_topics(settings: Settings, timeout_s: float = 30.0) -> tuple[list[str], list[str]]:
    """Create every declared topic that does not exist yet; returns (created, already there).

    Idempotent: running it twice creates nothing the second time. It waits until the broker's
    metadata lists every topic, so a service started right after finds them.
    """
    admin = make_admin(settings)
    topics = Topics(settings.topic_prefix).all()
    futures = admin.create_topics(
        [
            NewTopic(
                name,
                num_partitions=partitions_of(spec, settings),
                replication_factor=-1,
                config=spec.config,
            )
            for name, spec in topics
        ],
        operation_timeout=timeout_s,
    )
    created, existing = [], []
    for name, future in futures.items():
        try:
            future.result()
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
            existing.append(name)
    _wait_for_topics(admin, [name for name, _ in topics], timeout_s)
    return sorted(created), sorted(existing)


def _wait_for_topics(admin: AdminClient, names: Iterable[str], timeout_s: float) -> None:
    wanted = set(names)
    deadline = time.monotonic() + timeout_s
    while True:
        listed = set(admin.list_topics(timeout=timeout_s).topics)
        if wanted <= listed:
            return
        if time.monotonic() > deadline:
            raise ConfigurationError(
                f"topics not visible after creation: {sorted(wanted - listed)}"
            )
        time.sleep(0.1)


def list_topics(settings: Settings) -> dict[str, int]:
    """Topic name → partition count, as the broker reports them."""
    metadata = make_admin(settings).list_topics(timeout=10)
    return {name: len(topic.partitions) for name, topic in metadata.topics.items()}


def end_offsets(consumer: Consumer, topic: str, timeout_s: float = 10.0) -> list[TopicPartition]:
    """The current end offset of every partition of ``topic``."""
    metadata = consumer.list_topics(topic, timeout=timeout_s)
    partitions = metadata.topics[topic].partitions
    ends = []
    for partition in sorted(partitions):
        _low, high = consumer.get_watermark_offsets(
            TopicPartition(topic, partition), timeout=timeout_s
        )
        ends.append(TopicPartition(topic, partition, high))
    return ends


def unsettled_groups(
    settings: Settings, groups: Iterable[str], timeout_s: float = 5.0
) -> list[str]:
    """The consumer groups among ``groups`` that have not finished joining (not yet stable)."""
    admin = make_admin(settings)  # held until the answers come: a dropped client cancels them
    futures = admin.describe_consumer_groups(list(groups), request_timeout=timeout_s)
    waiting = []
    for group, future in futures.items():
        try:  # a group nobody has joined yet may come back as an error
            stable = future.result(timeout=timeout_s).state == ConsumerGroupState.STABLE
        except (KafkaException, TimeoutError):
            stable = False
        if not stable:
            waiting.append(group)
    return sorted(waiting)
