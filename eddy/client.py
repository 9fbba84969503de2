"""The Python client for Eddy's users: send events and labels, predict, read topics back.

Public as ``eddy.Client`` (see ``eddy/__init__.py`` and docs/python.md).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from pydantic import BaseModel, ValidationError

from schemas import DriftEvent, Label, Prediction, PredictionReply, PredictionRequest, RawEvent
from schemas.base import Features
from services.core.exceptions import DeliveryError, EddyError, MessageTooLargeError
from services.core.kafka import end_offsets, make_consumer, make_producer
from services.core.settings import Settings
from services.core.topics import TopicRole, Topics

PayloadT = TypeVar("PayloadT", bound=BaseModel)


class PredictionTimeoutError(EddyError):
    """No reply came in time: is serving running, with a model loaded."""


class PredictionFailedError(EddyError):
    """Serving answered, but with an error instead of a prediction."""


class EddyClient:
    """Produces to Eddy's input topics and performs request/reply prediction calls."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.topics = Topics(self.settings.topic_prefix)
        self.producer = make_producer(self.settings)
        self._replies: Consumer | None = None
        self._pending: dict[str, PredictionReply] = {}

    def send_events(self, events: Iterable[RawEvent]) -> int:
        """Produce raw events (keyed by entity) and wait for the broker; returns the count."""
        topic = self.topics("raw")
        count = 0
        for event in events:
            self._produce(topic, event.entity_id.encode(), event.model_dump_json().encode())
            count += 1
        self.flush()
        return count

    def send_raw(self, value: bytes, key: bytes | None = None) -> None:
        """Produce bytes to ``events.raw`` as they are (for replaying or testing bad input)."""
        self._produce(self.topics("raw"), key, value)

    def send_labels(self, labels: Iterable[Label]) -> int:
        """Produce labels (keyed by event_id) and wait for the broker; returns the count."""
        count = 0
        for label in labels:
            self.send_label(label)
            count += 1
        self.flush()
        return count

    def send_label(self, label: Label) -> None:
        """Produce one label without waiting (``flush`` waits)."""
        self._produce(
            self.topics("labels"), label.event_id.encode(), label.model_dump_json().encode()
        )

    def _produce(self, topic: str, key: bytes | None, value: bytes) -> None:
        while True:
            try:
                self.producer.produce(topic, value, key)
                return
            except BufferError:
                self.producer.poll(0.05)
            except KafkaException as error:
                if error.args[0].code() != KafkaError.MSG_SIZE_TOO_LARGE:
                    raise
                limit = self.settings.kafka.max_message_bytes
                raise MessageTooLargeError(
                    f"a message of {len(value):,} bytes for {topic} is larger than the "
                    f"{limit:,} allowed (EDDY_KAFKA__MAX_MESSAGE_BYTES)"
                ) from None

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until everything sent is acknowledged."""
        if self.producer.flush(timeout_s):
            raise DeliveryError("the broker did not acknowledge every message in time")

    def predict(
        self,
        features: Features,
        timeout_s: float = 10.0,
        explain: bool = False,
        entity_id: str | None = None,
    ) -> PredictionReply:
        """Ask serving for a prediction and wait for its reply.

        ``explain``: with the features' largest contributions, where the model has an explainer.
        ``entity_id``: the features not sent come from that entity's latest in the feature store
        (the reply's ``filled`` names them).
        """
        replies = self._reply_consumer()
        correlation_id = uuid.uuid4().hex
        request = PredictionRequest(
            correlation_id=correlation_id, features=features, explain=explain, entity_id=entity_id
        )
        self._produce(
            self.topics("prediction_requests"),
            correlation_id.encode(),
            request.model_dump_json().encode(),
        )
        self.flush()
        deadline = time.monotonic() + timeout_s
        while correlation_id not in self._pending:
            if time.monotonic() > deadline:
                raise PredictionTimeoutError(
                    f"no reply within {timeout_s}s on {self.topics('prediction_replies')}: "
                    "is `eddy run serving` running with a model loaded?"
                )
            # poll, not consume(n, timeout): that waits the whole timeout unless n messages come,
            # which made every call take at least 100 ms
            first = replies.poll(0.1)
            for message in [first, *replies.consume(100, 0)] if first is not None else []:
                if message.error() is None:
                    reply = PredictionReply.model_validate_json(message.value() or b"")
                    self._pending[reply.correlation_id] = reply
        reply = self._pending.pop(correlation_id)
        if reply.error is not None:
            raise PredictionFailedError(reply.error)
        return reply

    def read(
        self,
        role: TopicRole,
        payload: type[PayloadT],
        from_beginning: bool = True,
        idle_s: float | None = 2.0,
    ) -> Iterator[PayloadT]:
        """Each message of a topic as its payload, as it comes; ends after ``idle_s`` quiet.

        ``client.read("predictions", Prediction)``, ``("drift", DriftEvent)``,
        ``("dlq", DeadLetter)``... (``idle_s=None``: never ends). Joins no consumer group, so it
        takes nothing from the services and commits nothing; a message that is not the payload
        is skipped.
        """
        from services.core.tailing import follow

        for text in follow(self.settings, self.topics(role), from_beginning, idle_s):
            try:
                yield payload.model_validate_json(text)
            except ValidationError:
                continue

    def read_predictions(self, idle_s: float | None = 2.0) -> Iterator[Prediction]:
        """Every served prediction on ``predictions``, from the beginning."""
        return self.read("predictions", Prediction, idle_s=idle_s)

    def read_drift(self, idle_s: float | None = 2.0) -> Iterator[DriftEvent]:
        """Every drift event monitoring published, from the beginning."""
        return self.read("drift", DriftEvent, idle_s=idle_s)

    def serving_answers(self, timeout_s: float = 2.0) -> bool:
        """True when serving answers a request within ``timeout_s`` (even with a refusal).

        The probe sends no features, so a serving that checks them refuses it: an answer all
        the same, which is all a start-up wait needs to know.
        """
        try:
            self.predict({}, timeout_s=timeout_s)
        except PredictionFailedError:
            return True
        except PredictionTimeoutError:
            return False
        return True

    def _reply_consumer(self) -> Consumer:
        """Reads replies from the end of every partition, assigned at first use."""
        if self._replies is None:
            consumer = make_consumer(self.settings, f"eddy-client-{uuid.uuid4().hex}")
            topic = self.topics("prediction_replies")
            consumer.assign(
                [
                    TopicPartition(topic, tp.partition, tp.offset)
                    for tp in end_offsets(consumer, topic)
                ]
            )
            self._replies = consumer
        return self._replies

    def close(self) -> None:
        """Flush and close the clients."""
        self.producer.flush(10)
        if self._replies is not None:
            self._replies.close()
            self._replies = None

    def __enter__(self) -> EddyClient:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
