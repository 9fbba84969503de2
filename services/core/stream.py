"""The one Kafka loop every confluent-kafka service runs: consume, dispatch, produce, commit.

Delivery rule (DESIGN.md): a batch's offsets are committed only after everything its handlers
produced is acknowledged by the broker, and after the handlers' ``after_ack`` effects ran. A
crash anywhere before the commit replays the batch; handlers make that harmless by being
idempotent by ``event_id``. With ``transactional=True`` the outputs and the offsets commit
atomically instead (exactly-once for consumers reading ``read_committed``).
"""

from __future__ import annotations

import base64
import logging
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Protocol, TypeVar

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from pydantic import BaseModel, ValidationError

from schemas import DeadLetter
from schemas.events import RejectReason
from services.core import metrics
from services.core.exceptions import DeliveryError
from services.core.kafka import make_consumer, make_producer
from services.core.settings import Settings

log = logging.getLogger(__name__)

#: Original bytes kept in a dead letter; larger inputs are truncated (their size is recorded).
DLQ_ORIGINAL_LIMIT = 16_384

PayloadT = TypeVar("PayloadT", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Outbound:
    """One message a handler wants produced."""

    topic: str
    key: bytes | None
    value: bytes


@dataclass
class Effects:
    """What handling a batch produces, and what must happen once the broker acknowledged it."""

    outputs: list[Outbound] = field(default_factory=list)
    after_ack: list[Callable[[], None]] = field(default_factory=list)

    def emit(self, topic: str, key: str | bytes | None, payload: BaseModel) -> None:
        """Queue ``payload`` (JSON) for ``topic``."""
        raw_key = key.encode() if isinstance(key, str) else key
        self.outputs.append(Outbound(topic, raw_key, payload.model_dump_json().encode()))

    def extend(self, other: Effects) -> None:
        """Add another handler's effects after these."""
        self.outputs.extend(other.outputs)
        self.after_ack.extend(other.after_ack)


class BatchHandler(Protocol):
    """A service's logic for one topic: the batch in (in partition order), its effects out."""

    def __call__(self, messages: Sequence[Message]) -> Effects: ...


def dead_letter(
    message: Message,
    service: str,
    reason: RejectReason,
    detail: str,
    event_id: str | None = None,
) -> DeadLetter:
    """A dead letter that carries the reason, the original bytes and where they came from."""
    original = message.value() or b""
    kept = original[:DLQ_ORIGINAL_LIMIT]
    return DeadLetter(
        reason=reason,
        detail=detail[:2000],
        service=service,
        source_topic=message.topic() or "",
        source_partition=message.partition() or 0,
        source_offset=message.offset() or 0,
        original=base64.b64encode(kept).decode(),
        original_size=len(original),
        original_truncated=len(kept) < len(original),
        event_id=event_id,
    )


def validation_reason(error: ValidationError) -> RejectReason:
    """The DLQ reason code that best names the first problem pydantic found."""
    kind = error.errors()[0]["type"] if error.errors() else ""
    if kind == "json_invalid":
        return "invalid_json"
    if kind == "missing":
        return "missing_field"
    if kind == "extra_forbidden":
        return "unknown_field"
    if kind.endswith(("_type", "_parsing")) or kind == "model_type":
        return "wrong_type"
    if kind.startswith(("greater", "less")) or kind.endswith(("_too_long", "_too_short")):
        return "out_of_range"
    return "invalid_value"


def describe(error: ValidationError) -> str:
    """A one-line account of what was expected and what came."""
    parts = []
    for item in error.errors()[:5]:
        where = ".".join(str(p) for p in item["loc"]) or "(message)"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def decode(
    message: Message, model: type[PayloadT], service: str, dlq_topic: str, effects: Effects
) -> PayloadT | None:
    """The message as ``model``, or None after queueing a dead letter that says why."""
    try:
        return model.model_validate_json(message.value() or b"")
    except ValidationError as error:
        reason = validation_reason(error)
        metrics.REJECTED.labels(service, reason).inc()
        effects.emit(
            dlq_topic, message.key(), dead_letter(message, service, reason, describe(error))
        )
        return None


class StopSignal:
    """Set by SIGTERM or SIGINT; the loop finishes its batch, commits, and returns."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def install(self) -> StopSignal:
        """Route SIGTERM and SIGINT here (main thread only)."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        return self

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.info("stopping", extra={"signal": signal.Signals(signum).name})
        self.event.set()

    def is_set(self) -> bool:
        """True once a stop was asked for."""
        return self.event.is_set()


class StreamProcessor:
    """Runs handlers on batches from their topics with Eddy's delivery rule."""

    def __init__(
        self,
        settings: Settings,
        service: str,
        group_id: str,
        handlers: dict[str, BatchHandler],
        transactional_id: str | None = None,
        stop: StopSignal | None = None,
    ) -> None:
        self.settings = settings
        self.service = service
        self.handlers = handlers
        self.stop = stop or StopSignal()
        self.transactional = transactional_id is not None
        overrides = {"transactional.id": transactional_id} if transactional_id else {}
        self.producer: Producer = make_producer(settings, **overrides)
        consumer_overrides = {"isolation.level": "read_committed"}
        self.consumer: Consumer = make_consumer(settings, group_id, **consumer_overrides)
        self._delivery_errors: list[KafkaError] = []
        self._produced: dict[str, int] = defaultdict(int)
        self._batch_seconds = metrics.BATCH_SECONDS.labels(service)
        self._consumed = {t: metrics.MESSAGES_CONSUMED.labels(service, t) for t in handlers}
        self.batches = 0

    def run(
        self,
        tick: Callable[[], Effects] | None = None,
        tick_interval_s: float = 1.0,
        on_assign: Callable[[list[TopicPartition]], list[TopicPartition]] | None = None,
    ) -> None:
        """Process until stopped.

        ``tick`` runs between batches every ``tick_interval_s`` (timers, expiry sweeps); its
        effects are produced and acknowledged like a batch's. ``on_assign`` may return the
        assigned partitions with the offsets to start from, for a service that keeps its
        position with its own state.
        """
        if self.transactional:
            self.producer.init_transactions(30)

        def assigned(consumer: Consumer, partitions: list[TopicPartition]) -> None:
            if on_assign is not None:
                consumer.assign(on_assign(partitions))

        self.consumer.subscribe(list(self.handlers), on_assign=assigned)
        log.info("consuming", extra={"service": self.service, "topics": list(self.handlers)})
        last_tick = time.monotonic()
        try:
            while not self.stop.is_set():
                messages = self._next_batch()
                if messages:
                    self.process(messages)
                if tick is not None and time.monotonic() - last_tick >= tick_interval_s:
                    last_tick = time.monotonic()
                    effects = tick()
                    self._produce_and_wait(effects.outputs)
                    for effect in effects.after_ack:
                        effect()
        finally:
            self.close()

    def _next_batch(self) -> list[Message]:
        """Whatever is already fetched, up to a batch; else wait for the first message only.

        ``consume(n, timeout)`` waits the whole timeout unless n messages come, which would add
        the timeout to every event's latency at low rates.
        """
        size = self.settings.kafka.batch_size
        messages: list[Message] = self.consumer.consume(size, 0)
        if messages:
            return messages
        first = self.consumer.poll(self.settings.kafka.poll_timeout_s)
        if first is None:
            return []
        return [first, *self.consumer.consume(size - 1, 0)] if size > 1 else [first]

    def process(self, messages: Sequence[Message]) -> None:
        """Handle one consumed batch end to end: effects produced, acknowledged, committed."""
        started = time.perf_counter()
        by_topic: dict[str, list[Message]] = defaultdict(list)
        offsets: dict[tuple[str, int], int] = {}
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("consume error", extra={"error": str(error)})
                continue
            topic, partition, offset = message.topic(), message.partition(), message.offset()
            assert topic is not None and partition is not None and offset is not None
            by_topic[topic].append(message)
            offsets[(topic, partition)] = offset + 1
        if not offsets:
            return
        effects = Effects()
        for topic, batch in by_topic.items():
            self._consumed[topic].inc(len(batch))
            effects.extend(self.handlers[topic](batch))
        commit = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        if self.transactional:
            self._produce_in_transaction(effects.outputs, commit)
            for effect in effects.after_ack:
                effect()
        else:
            self._produce_and_wait(effects.outputs)
            for effect in effects.after_ack:
                effect()
            self.consumer.commit(offsets=commit, asynchronous=False)
        self.batches += 1
        self._batch_seconds.observe(time.perf_counter() - started)

    def _produce(self, outputs: Sequence[Outbound]) -> None:
        produce, poll = self.producer.produce, self.producer.poll
        on_delivery = self._on_delivery
        for out in outputs:
            while True:
                try:
                    produce(out.topic, out.value, out.key, on_delivery=on_delivery)
                    break
                except BufferError:
                    poll(0.05)  # the local queue is full: let deliveries drain, then retry
            self._produced[out.topic] += 1

    def _produce_and_wait(self, outputs: Sequence[Outbound]) -> None:
        self._produce(outputs)
        remaining = self.producer.flush(60)
        self._raise_on_delivery_failure(remaining)

    def _produce_in_transaction(
        self, outputs: Sequence[Outbound], commit: list[TopicPartition]
    ) -> None:
        self.producer.begin_transaction()
        self._produce(outputs)
        self.producer.send_offsets_to_transaction(
            commit, self.consumer.consumer_group_metadata(), 30
        )
        self.producer.commit_transaction(60)
        self._raise_on_delivery_failure(0)

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._delivery_errors.append(error)

    def _raise_on_delivery_failure(self, remaining: int) -> None:
        if remaining or self._delivery_errors:
            errors, self._delivery_errors = self._delivery_errors, []
            raise DeliveryError(
                f"{remaining} messages unacknowledged, {len(errors)} failed "
                f"(first: {errors[0] if errors else 'timeout'}); offsets not committed"
            )
        for topic, count in self._produced.items():
            metrics.MESSAGES_PRODUCED.labels(self.service, topic).inc(count)
        self._produced.clear()

    def close(self) -> None:
        """Leave the group (so partitions move at once) and flush the producer."""
        self.consumer.close()
        self.producer.flush(10)
        log.info("stopped", extra={"service": self.service, "batches": self.batches})
