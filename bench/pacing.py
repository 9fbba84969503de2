"""Offered load for the latency and loop scenarios: a rate-paced producer and an arrival clock.

The producer sends pre-serialised messages when they are due, in small bursts once per
millisecond tick, and records when each was handed to the client; a reader thread records
when each event's output arrived. Both clocks are this process's ``time.monotonic()``, so a
latency is an arrival time minus a send time, with no clock skew between machines.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from confluent_kafka import Consumer, Producer, TopicPartition

from services.core.kafka import make_consumer
from services.core.settings import Settings

#: Pacing tick: due messages are sent in one burst per tick.
TICK_S = 0.001


@dataclass(frozen=True, slots=True)
class Scheduled:
    """One message to send ``due_s`` seconds after the stream starts."""

    due_s: float
    topic: str
    key: bytes | None
    value: bytes


def at_rate(
    rate: float, topic: str, messages: Sequence[tuple[bytes | None, bytes]]
) -> list[Scheduled]:
    """``messages`` (key, value) due one every ``1 / rate`` seconds, the first at once."""
    return [Scheduled(i / rate, topic, key, value) for i, (key, value) in enumerate(messages)]


def send_paced(
    producer: Producer,
    schedule: Sequence[Scheduled],
    stop: threading.Event | None = None,
    start_at: float | None = None,
) -> list[float]:
    """Send each message when it is due (``schedule`` sorted by due time); their send times.

    Due times count from ``start_at`` (a ``time.monotonic()`` reading; now by default). A
    message late because of a slow tick goes out in the next burst, so the offered rate holds
    over any interval longer than a few ticks. Stops early when ``stop`` is set; the unsent
    ones have no entry in the result.
    """
    produce, poll = producer.produce, producer.poll
    sent_at: list[float] = []
    started = time.monotonic() if start_at is None else start_at
    time.sleep(max(0.0, started - time.monotonic()))
    total = len(schedule)
    i = 0
    while i < total and not (stop is not None and stop.is_set()):
        now = time.monotonic()
        elapsed = now - started
        while i < total and schedule[i].due_s <= elapsed:
            message = schedule[i]
            while True:
                try:
                    produce(message.topic, message.value, message.key)
                    break
                except BufferError:
                    poll(0.01)  # the local queue is full: the offered rate is not being met
            sent_at.append(now)
            i += 1
        poll(0)
        if i < total:
            time.sleep(max(0.0, min(TICK_S, schedule[i].due_s - (time.monotonic() - started))))
    producer.flush(30)
    return sent_at


def event_id_in(value: bytes) -> str | None:
    """The ``event_id`` of a JSON payload, found without decoding the whole of it."""
    at = value.find(b'"event_id"')
    if at < 0:
        return None
    start = value.find(b'"', value.find(b":", at + 10) + 1) + 1
    end = value.find(b'"', start)
    return value[start:end].decode() if 0 < start <= end else None


class ArrivalClock(threading.Thread):
    """Reads topics from their beginning in a thread and records when each event id first came."""

    def __init__(self, settings: Settings, topics: Sequence[str]) -> None:
        super().__init__(name="arrival-clock", daemon=True)
        self.arrivals: dict[str, float] = {}
        self._stop_reading = threading.Event()
        self._consumer: Consumer = make_consumer(settings, f"bench-clock-{uuid.uuid4().hex}")
        partitions = []
        for topic in topics:
            metadata = self._consumer.list_topics(topic, timeout=10).topics[topic]
            partitions += [TopicPartition(topic, p, 0) for p in metadata.partitions]
        self._consumer.assign(partitions)

    def run(self) -> None:
        """Record arrivals until stopped."""
        arrivals, poll, consume = self.arrivals, self._consumer.poll, self._consumer.consume
        try:
            while not self._stop_reading.is_set():
                # consume(n, timeout) would wait out its timeout unless n came: poll the first
                first = poll(0.05)
                if first is None:
                    continue
                now = time.monotonic()
                messages = [first, *consume(10_000, 0)]
                for message in messages:
                    if message.error() is None:
                        event_id = event_id_in(message.value() or b"")
                        if event_id is not None and event_id not in arrivals:
                            arrivals[event_id] = now
        finally:
            self._consumer.close()

    def wait_for(self, event_ids: Sequence[str], timeout_s: float) -> bool:
        """Wait until every id arrived (True) or the time is up (False)."""
        deadline = time.monotonic() + timeout_s
        waiting = 0  # ids before this one have all arrived
        while True:
            while waiting < len(event_ids) and event_ids[waiting] in self.arrivals:
                waiting += 1
            if waiting == len(event_ids):
                return True
            if time.monotonic() > deadline or not self.is_alive():
                return False
            time.sleep(0.02)

    def close(self) -> None:
        """Stop reading and leave."""
        self._stop_reading.set()
        self.join(10)


@dataclass
class Trace:
    """Send and arrival times of one paced stream of events (arrival None: never came)."""

    rate: float
    sent: list[float]
    arrived: list[float | None]

    def latencies_ms(self, missing_at: float) -> list[float]:
        """Each event's latency; one that never came counts as arriving at ``missing_at``."""
        return [
            ((missing_at if a is None else a) - s) * 1000
            for s, a in zip(self.sent, self.arrived, strict=True)
        ]

    def max_backlog(self, start: float, end: float, step_s: float = 0.01) -> int:
        """The largest backlog at ``step_s`` intervals between ``start`` and ``end``."""
        arrivals = sorted(a for a in self.arrived if a is not None)
        steps = max(1, math.ceil((end - start) / step_s))
        worst = 0
        for k in range(steps + 1):
            at = start + k * step_s
            sent = bisect.bisect_right(self.sent, at)
            worst = max(worst, sent - bisect.bisect_right(arrivals, at))
        return worst


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by the nearest-rank method."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]
