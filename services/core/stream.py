"""What a service's handlers speak: batches in, ``Effects`` out, dead letters for bad input.

The loop that drives them (consume, dispatch, produce, commit) is ``processor.py``.
"""

from __future__ import annotations

import base64
import logging
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import NamedTuple, Protocol, TypeVar

from confluent_kafka import Message
from pydantic import BaseModel, ValidationError

from schemas import DeadLetter
from schemas.events import RejectReason
from services.core import metrics
from services.core.rejection import Rejection

log = logging.getLogger(__name__)

#: Original bytes kept in a dead letter; larger inputs are truncated (their size is recorded).
DLQ_ORIGINAL_LIMIT = 16_384

PayloadT = TypeVar("PayloadT", bound=BaseModel)


class Outbound(NamedTuple):
    """One message a handler wants produced (a tuple: one is built per output event)."""

    topic: str
    key: bytes | None
    value: bytes


@dataclass
class Effects:
    """What handling a batch produces, and what must happen once the broker acknowledged it."""

    outputs: list[Outbound] = field(default_factory=list)
    after_ack: list[Callable[[], None]] = field(default_factory=list)
    #: Run before the batch's offsets are committed, after its ``after_ack``: an after-ack effect
    #: may start work (a store's write) that this waits for, so the loop goes on meanwhile.
    before_commit: list[Callable[[], None]] = field(default_factory=list)

    def emit(self, topic: str, key: str | bytes | None, payload: BaseModel) -> None:
        """Queue ``payload`` (JSON) for ``topic``."""
        self.emit_json(topic, key, payload.model_dump_json().encode())

    def emit_json(self, topic: str, key: str | bytes | None, value: bytes) -> None:
        """Queue JSON already encoded (a hot path's own encoder, held equal to its model's)."""
        raw_key = key.encode() if isinstance(key, str) else key
        self.outputs.append(Outbound(topic, raw_key, value))

    def extend(self, other: Effects) -> None:
        """Add another handler's effects after these."""
        self.outputs.extend(other.outputs)
        self.after_ack.extend(other.after_ack)
        self.before_commit.extend(other.before_commit)


class BatchHandler(Protocol):
    """A service's logic for one topic: the batch in (in partition order), its effects out."""

    def __call__(self, messages: Sequence[Message]) -> Effects: ...


class DeferredEffects(Protocol):
    """A batch's effects still being worked out, a store's reply on its way; ``result`` waits."""

    def result(self) -> Effects: ...


class JointHandler(Protocol):
    """A service's logic for all its topics at once: each topic's share of a batch in.

    It must do what the topics' own handlers would do one after another; it is for a service
    whose handlers each wait for the same store, so that it waits once per batch. It may return
    ``DeferredEffects``: the loop then takes the next batch before it asks for the result, so
    the store works on one batch while the service decodes the next.
    """

    def __call__(self, batches: Mapping[str, Sequence[Message]]) -> Effects | DeferredEffects: ...


def dead_letter(
    message: Message,
    service: str,
    reason: RejectReason,
    detail: str,
    event_id: str | None = None,
    redacted: bytes | None = None,
) -> DeadLetter:
    """A dead letter that carries the reason, the original bytes and where they came from.

    ``redacted``: the original with personal data taken out, kept instead of the message.
    """
    original = message.value() or b""
    kept = (original if redacted is None else redacted)[:DLQ_ORIGINAL_LIMIT]
    key = message.key()
    return DeadLetter(
        original_key=None if key is None else base64.b64encode(key[:1024]).decode(),
        reason=reason,
        detail=detail[:2000],
        service=service,
        source_topic=message.topic() or "",
        source_partition=message.partition() or 0,
        source_offset=message.offset() or 0,
        original=base64.b64encode(kept).decode(),
        original_size=len(original),
        original_truncated=redacted is None and len(kept) < len(original),
        original_redacted=redacted is not None,
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
        _reject(message, error, service, dlq_topic, effects)
        return None


def decode_batch(
    messages: Sequence[Message],
    model: type[PayloadT],
    service: str,
    dlq_topic: str,
    effects: Effects,
    check: Callable[[PayloadT], PayloadT | Rejection] | None = None,
) -> list[tuple[PayloadT, bytes]]:
    """Each valid message as ``model`` with its raw JSON; a dead letter queued for each other.

    ``decode`` for a whole batch, with the model's validator looked up once: labeling decodes
    two messages per event, and the calls around each validation cost as much as a small
    model's validation itself. ``check`` is a further rule a valid item must pass (a label
    must fit the target); it returns the item, a normalised copy of it, or a ``Rejection``.
    """
    validate = model.__pydantic_validator__.validate_json
    valid: list[tuple[PayloadT, bytes]] = []
    for message in messages:
        raw = message.value() or b""
        try:
            item = validate(raw)
        except ValidationError as error:
            _reject(message, error, service, dlq_topic, effects)
            continue
        if check is not None:
            checked = check(item)
            if isinstance(checked, Rejection):
                reject(
                    message,
                    service,
                    dlq_topic,
                    effects,
                    checked.reason,
                    checked.detail,
                    checked.event_id,
                )
                continue
            if checked is not item:  # normalised: the raw JSON must say what the item says
                item, raw = checked, checked.model_dump_json().encode()
        valid.append((item, raw))
    return valid


def _reject(
    message: Message, error: ValidationError, service: str, dlq_topic: str, effects: Effects
) -> None:
    """Count an invalid input and queue its dead letter, which says why."""
    reject(message, service, dlq_topic, effects, validation_reason(error), describe(error))


def reject(
    message: Message,
    service: str,
    dlq_topic: str,
    effects: Effects,
    reason: RejectReason,
    detail: str,
    event_id: str | None = None,
    redacted: bytes | None = None,
) -> None:
    """Count an input that cannot be handled, log it (rate-limited), queue its dead letter."""
    metrics.REJECTED.labels(service, reason).inc()
    REJECT_LOG.note(service, reason, detail, event_id)
    letter = dead_letter(message, service, reason, detail, event_id, redacted)
    effects.emit(dlq_topic, message.key(), letter)


class RejectLog:
    """A warning per service and reason at most every ``every_s``, with the count since the last.

    An operator sees rejects in the log without reading the dead-letter topic, and a flood of
    bad input costs one line per reason every few seconds, not one per message.
    """

    def __init__(self, every_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.every_s = every_s
        self.clock = clock
        self._counts: Counter[tuple[str, str]] = Counter()
        self._last: dict[tuple[str, str], float] = {}

    def note(self, service: str, reason: str, detail: str, event_id: str | None) -> bool:
        """Count one reject; True when it was logged (with the count since the last line)."""
        key = (service, reason)
        self._counts[key] += 1
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.every_s:
            return False
        log.warning(
            "rejected to the dead-letter topic",
            extra={
                "service": service,
                "reason": reason,
                "count": self._counts[key],
                "since_s": None if last is None else round(now - last, 1),
                "example": detail[:300],
                "event_id": event_id,
            },
        )
        self._counts[key] = 0
        self._last[key] = now
        return True


#: The process's reject log (each service is a process of its own).
REJECT_LOG = RejectLog()


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
