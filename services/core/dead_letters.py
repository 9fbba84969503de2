"""Dead letters read back and sent again after a fix: ``eddy dlq list`` and ``eddy dlq replay``.

A replay sends each letter's original bytes back to the topic it came from (or another), each
once: the source position of every letter sent is remembered in Redis, so running the same
replay twice sends nothing the second time. It then watches the dead-letter topic for a while
for the messages it sent and counts those rejected again, with their reasons.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

from confluent_kafka import OFFSET_BEGINNING, KafkaError, Message, TopicPartition
from pydantic import ValidationError

from schemas import DeadLetter
from services.core.kafka import end_offsets, make_consumer, make_producer
from services.core.settings import Settings
from services.core.state import connect_redis
from services.core.topics import Topics


def replayed_key(prefix: str) -> str:
    """The Redis set of source positions (topic/partition/offset) already replayed."""
    return f"eddy:{prefix}dlq:replayed"


def position(letter: DeadLetter) -> str:
    """Where a dead letter's original came from, as one string."""
    return f"{letter.source_topic}/{letter.source_partition}/{letter.source_offset}"


def read_letters(
    settings: Settings,
    reason: str | None = None,
    since: datetime | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[DeadLetter]:
    """Every dead letter on the topic now, oldest first, with the reason and time asked for.

    Reads from the beginning to the end as it is when called, in a group of its own: it takes
    nothing from the services and commits nothing. A message that is not a dead letter (written
    there by something else) is skipped.
    """
    return [
        letter
        for letter, _offset in _letters(settings, Topics(settings.topic_prefix)("dlq"), progress)
        if (reason is None or letter.reason == reason)
        and (since is None or letter.failed_at >= since)
    ]


def _letters(
    settings: Settings, topic: str, progress: Callable[[int], None] | None = None
) -> Iterator[tuple[DeadLetter, int]]:
    """Each dead letter with its offset, until the end the topic had when asked, and a quiet second.

    The quiet second is needed: the embedded broker reports the end of a partition as one past
    the first offset of its last record batch, short of the records after it in that batch.
    """
    consumer = make_consumer(settings, f"eddy-dlq-{uuid.uuid4().hex}")
    try:
        ends = {tp.partition: tp.offset for tp in end_offsets(consumer, topic) if tp.offset > 0}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        behind = set(ends)
        read, quiet = 0, 0
        while ends:
            batch = consumer.consume(500, 1.0)
            quiet = 0 if batch else quiet + 1
            if not batch and (not behind or quiet >= 10):  # 10 s: a partition that never ends
                break
            for message in batch:
                if message.error() is not None:
                    continue
                partition, offset = message.partition() or 0, message.offset() or 0
                if offset + 1 >= ends.get(partition, 0):
                    behind.discard(partition)
                read += 1
                try:
                    yield DeadLetter.model_validate_json(message.value() or b""), offset
                except ValidationError:
                    continue
            if progress is not None:
                progress(read)
    finally:
        consumer.close()


@dataclass
class ReplayReport:
    """What a replay did: sent, skipped (why), and rejected again (by reason)."""

    sent: int = 0
    already_replayed: int = 0
    #: originals cut at the dead-letter size limit, or with personal data taken out: what is
    #: left is not the message that came
    truncated: int = 0
    rejected_again: Counter[str] = field(default_factory=Counter)
    #: where each letter went: topic → count
    topics: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, object]:
        """Flat keys for ``--json``."""
        return {
            "sent": self.sent,
            "already_replayed": self.already_replayed,
            "not_replayable": self.truncated,
            "rejected_again": sum(self.rejected_again.values()),
            "rejected_again_by_reason": dict(self.rejected_again),
            "sent_to": dict(self.topics),
        }


def replay(
    settings: Settings,
    letters: list[DeadLetter],
    to_topic: str | None = None,
    watch_s: float = 10.0,
) -> ReplayReport:
    """Send each letter's original back (to ``to_topic`` if given), once; count re-rejections."""
    report = ReplayReport()
    client = connect_redis(settings)
    key = replayed_key(settings.topic_prefix)
    producer = make_producer(settings)
    sent_at: set[tuple[str, int, int]] = set()
    chosen: list[DeadLetter] = []
    errors: list[KafkaError] = []

    def delivered(error: KafkaError | None, message: Message) -> None:
        if error is not None:
            errors.append(error)
        else:
            sent_at.add((message.topic() or "", message.partition() or 0, message.offset() or 0))

    seen = client.smembers(key) if letters else set()
    for letter in letters:
        if position(letter).encode() in seen:
            report.already_replayed += 1
            continue
        if letter.original_truncated or letter.original_redacted:
            report.truncated += 1  # what is left is not the message that came
            continue
        topic = to_topic or letter.source_topic
        producer.produce(
            topic,
            base64.b64decode(letter.original),
            base64.b64decode(letter.original_key) if letter.original_key else None,
            on_delivery=delivered,
        )
        producer.poll(0)
        chosen.append(letter)
        report.topics[topic] += 1
    if producer.flush(30) or errors:
        raise RuntimeError(
            f"the broker did not take every replayed message ({len(errors)} failed"
            f"{': ' + str(errors[0]) if errors else ''}); none is marked as replayed, so "
            "running the replay again sends them again (ingest drops those it already took)"
        )
    if chosen:
        client.sadd(key, *(position(letter) for letter in chosen))
    report.sent = len(chosen)
    if chosen and watch_s > 0:
        report.rejected_again = _rejected_again(settings, sent_at, watch_s)
    return report


def _rejected_again(
    settings: Settings, sent_at: set[tuple[str, int, int]], watch_s: float
) -> Counter[str]:
    """Reasons of the dead letters that name a replayed message as their source, for a while."""
    topic = Topics(settings.topic_prefix)("dlq")
    consumer = make_consumer(settings, f"eddy-dlq-{uuid.uuid4().hex}")
    found: Counter[str] = Counter()
    try:
        consumer.assign(
            [
                TopicPartition(topic, tp.partition, OFFSET_BEGINNING)
                for tp in end_offsets(consumer, topic)
            ]
        )
        deadline = time.monotonic() + watch_s
        while time.monotonic() < deadline and sum(found.values()) < len(sent_at):
            for message in consumer.consume(500, 0.2):
                if message.error() is not None:
                    continue
                try:
                    letter = DeadLetter.model_validate_json(message.value() or b"")
                except ValidationError:
                    continue
                source = (letter.source_topic, letter.source_partition, letter.source_offset)
                if source in sent_at:
                    found[letter.reason] += 1
    finally:
        consumer.close()
    return found
