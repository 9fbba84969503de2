"""Reading a topic back for people and scripts: ``eddy tail``, one JSON object a line."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from services.core.kafka import end_offsets, make_consumer
from services.core.settings import Settings


def follow(
    settings: Settings, topic: str, from_beginning: bool = False, idle_exit_s: float | None = None
) -> Iterator[str]:
    """Each message of ``topic`` as text, from its end (or beginning) on, as it comes.

    Ends after ``idle_exit_s`` without a message (never when None). The reader joins no
    consumer group: it takes nothing from the services' consumers and commits nothing.
    """
    for _at, value in follow_messages(settings, topic, from_beginning, idle_exit_s):
        yield value.decode("utf-8", errors="replace")


def follow_messages(
    settings: Settings, topic: str, from_beginning: bool = False, idle_exit_s: float | None = None
) -> Iterator[tuple[float, bytes]]:
    """As ``follow``, each message as (its timestamp in seconds, its bytes)."""
    consumer = make_consumer(settings, f"eddy-tail-{uuid.uuid4().hex}")
    try:
        ends = end_offsets(consumer, topic)
        consumer.assign(
            [
                TopicPartition(
                    topic, tp.partition, OFFSET_BEGINNING if from_beginning else tp.offset
                )
                for tp in ends
            ]
        )
        last = time.monotonic()
        while idle_exit_s is None or time.monotonic() - last < idle_exit_s:
            for message in consumer.consume(500, 0.2):
                if message.error() is not None:
                    continue
                last = time.monotonic()
                yield message.timestamp()[1] / 1000, message.value() or b""
    finally:
        consumer.close()
