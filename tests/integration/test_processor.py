"""The shared loop's delivery rule, on the real broker: offsets commit only for settled batches.

A batch is settled once the broker acknowledged its outputs; the offsets of settled batches are
committed together, at most once per ``commit_interval_ms``, and everything is settled and
committed when the loop stops.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, Message
from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]

from schemas import DeadLetter, FeatureEvent
from services.core.exceptions import DeliveryError
from services.core.kafka import make_admin, make_producer
from services.core.processor import AfterBatch, StreamProcessor
from services.core.settings import Settings
from services.core.stream import BatchHandler, Effects, JointHandler, Outbound, StopSignal
from services.core.topics import Topics
from tests.integration.support import OpenReader, feature_events, produce, produce_features

GROUP = "processor-test"


def _echo(settings: Settings) -> dict[str, object]:
    """Handlers that copy every feature event to ``predictions`` (the loop is what is tested)."""
    topics = Topics(settings.topic_prefix)
    sink = topics("predictions")

    def handle(messages: Sequence[Message]) -> Effects:
        return Effects(outputs=[Outbound(sink, m.key(), m.value() or b"") for m in messages])

    return {topics("features"): handle}


@contextmanager
def _running(
    settings: Settings,
    after_batch: AfterBatch | None = None,
    handlers: dict[str, BatchHandler] | None = None,
    joint: JointHandler | None = None,
) -> Iterator[StreamProcessor]:
    """A StreamProcessor running in a thread until the block ends (then stopped: SIGTERM-like)."""
    processor = StreamProcessor(
        settings,
        "test",
        Topics(settings.topic_prefix).group(GROUP),
        handlers or _echo(settings),  # type: ignore[arg-type]
        stop=StopSignal(),
        joint=joint,
    )
    thread = threading.Thread(target=lambda: processor.run(after_batch=after_batch), daemon=True)
    thread.start()
    try:
        yield processor
    finally:
        processor.stop.event.set()
        thread.join(30)
        assert not thread.is_alive(), "the loop did not stop"


def _with_commit_interval(settings: Settings, interval_ms: int) -> Settings:
    kafka = settings.kafka.model_copy(update={"commit_interval_ms": interval_ms})
    return settings.model_copy(update={"kafka": kafka})


def _committed(admin: AdminClient, settings: Settings) -> int:
    """How many input messages the test group committed (fresh topics start at offset 0)."""
    request = [ConsumerGroupTopicPartitions(Topics(settings.topic_prefix).group(GROUP))]
    result = next(iter(admin.list_consumer_group_offsets(request).values())).result()
    return sum(tp.offset for tp in result.topic_partitions if tp.offset >= 0)


def test_settled_offsets_wait_for_the_commit_interval_and_are_all_committed_on_stop(
    settings: Settings, reader: OpenReader
) -> None:
    settings = _with_commit_interval(settings, 600_000)
    admin = make_admin(settings)
    events = feature_events(60)
    outputs = reader("predictions", FeatureEvent)
    with _running(settings):
        produce_features(settings, events)
        outputs.read_until(lambda items: len(items) >= len(events))
        assert len(outputs.items) == len(events)
        # every output is acknowledged, yet within the interval nothing was committed
        assert _committed(admin, settings) == 0
    assert _committed(admin, settings) == len(events)

    with _running(settings):  # the same group resumes after what was committed
        assert outputs.settle(quiet_s=3.0) == outputs.items[: len(events)]


def test_with_no_commit_interval_settled_offsets_are_committed_while_the_loop_runs(
    settings: Settings, reader: OpenReader
) -> None:
    settings = _with_commit_interval(settings, 0)
    admin = make_admin(settings)
    events = feature_events(60)
    outputs = reader("predictions", FeatureEvent)
    with _running(settings):
        produce_features(settings, events)
        outputs.read_until(lambda items: len(items) >= len(events))
        deadline = time.monotonic() + 30
        while _committed(admin, settings) < len(events) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _committed(admin, settings) == len(events)


def test_after_batch_sees_each_batch_s_positions_and_its_effects_settle_in_order(
    settings: Settings, reader: OpenReader
) -> None:
    events = feature_events(300)
    features = Topics(settings.topic_prefix)("features")
    settled: list[int] = []  # the position of each batch whose after-batch effect ran

    def after_batch(positions: dict[tuple[str, int], int]) -> list[Callable[[], None]]:
        position = sum(offset for (topic, _p), offset in positions.items() if topic == features)
        return [lambda: settled.append(position)]

    outputs = reader("predictions", FeatureEvent)
    with _running(settings, after_batch):
        for start in range(0, len(events), 100):
            produce_features(settings, events[start : start + 100])
        outputs.read_until(lambda items: len(items) >= len(events))
        deadline = time.monotonic() + 30
        while (not settled or settled[-1] < len(events)) and time.monotonic() < deadline:
            time.sleep(0.05)

    assert settled == sorted(set(settled)), "effects ran out of order or twice"
    assert settled[-1] == len(events), "the last batch's effect did not run"


def test_a_joint_handler_gets_each_batch_whole_by_topic_and_the_topic_handlers_get_nothing(
    settings: Settings, reader: OpenReader
) -> None:
    topics = Topics(settings.topic_prefix)
    events = feature_events(200)
    batches: list[dict[str, int]] = []  # messages per topic in each batch

    def per_topic(messages: Sequence[Message]) -> Effects:
        raise AssertionError("a topic's own handler ran beside the joint one")

    def joint(by_topic: Mapping[str, Sequence[Message]]) -> Effects:
        batches.append({topic: len(messages) for topic, messages in by_topic.items()})
        sink = topics("predictions")
        return Effects(
            outputs=[
                Outbound(sink, m.key(), m.value() or b"")
                for messages in by_topic.values()
                for m in messages
            ]
        )

    outputs = reader("predictions", FeatureEvent)
    handlers = {topics("features"): per_topic, topics("labels"): per_topic}
    with _running(settings, handlers=handlers, joint=joint):
        produce_features(settings, events)
        produce(settings, "labels", [(None, e.model_dump_json().encode()) for e in events])
        outputs.read_until(lambda items: len(items) >= 2 * len(events))

    assert sorted(e.event_id for e in outputs.items) == sorted(2 * [e.event_id for e in events])
    assert sum(b.get(topics("features"), 0) for b in batches) == len(events)
    assert sum(b.get(topics("labels"), 0) for b in batches) == len(events)
    assert all(count > 0 for batch in batches for count in batch.values()), "an empty topic"


def test_deferred_effects_are_taken_after_the_next_batch_comes_and_settle_in_order(
    settings: Settings, reader: OpenReader
) -> None:
    kafka = settings.kafka.model_copy(update={"batch_size": 40})
    settings = settings.model_copy(update={"kafka": kafka})
    topics = Topics(settings.topic_prefix)
    admin = make_admin(settings)
    events = feature_events(400)
    log: list[tuple[str, int]] = []

    class Deferred:
        def __init__(self, n: int, messages: Sequence[Message]) -> None:
            self.n, self.messages = n, list(messages)

        def result(self) -> Effects:
            log.append(("result", self.n))
            sink = topics("predictions")
            effects = Effects([Outbound(sink, m.key(), m.value() or b"") for m in self.messages])
            effects.after_ack.append(lambda: log.append(("acked", self.n)))
            effects.before_commit.append(lambda: log.append(("confirmed", self.n)))
            return effects

    def joint(by_topic: Mapping[str, Sequence[Message]]) -> Deferred:
        n = sum(1 for kind, _ in log if kind == "submit")
        log.append(("submit", n))
        return Deferred(n, by_topic[topics("features")])

    produce_features(settings, events)  # a backlog: the next batch is always there at once
    outputs = reader("predictions", FeatureEvent)

    def per_topic(messages: Sequence[Message]) -> Effects:
        raise AssertionError("a topic's own handler ran beside the joint one")

    with _running(settings, handlers={topics("features"): per_topic}, joint=joint):
        outputs.read_until(lambda items: len(items) >= len(events))
    batches = sum(1 for kind, _ in log if kind == "submit")

    assert [e.event_id for e in outputs.items] == [e.event_id for e in events], "order or loss"
    assert _committed(admin, settings) == len(events)
    for kind in ("result", "acked", "confirmed"):
        assert [n for k, n in log if k == kind] == list(range(batches)), f"{kind} out of order"
    for n in range(batches):
        assert log.index(("submit", n)) < log.index(("result", n)) < log.index(("acked", n))
        assert log.index(("acked", n)) < log.index(("confirmed", n))
    overlapped = [
        n for n in range(batches - 1) if log.index(("submit", n + 1)) < log.index(("result", n))
    ]
    assert overlapped, "no batch was handed over while the one before it was deferred"


def _poisoned_ids(settings: Settings, count: int, poison: set[int]) -> list[FeatureEvent]:
    events = feature_events(count)
    produce_features(settings, events)
    return [events[i] for i in sorted(poison)]


def test_a_message_the_handler_fails_on_is_a_dead_letter_and_the_rest_of_its_batch_goes_on(
    settings: Settings, reader: OpenReader
) -> None:
    topics = Topics(settings.topic_prefix)
    sink = topics("predictions")
    poison = _poisoned_ids(settings, 300, {7, 150})
    bad = {f'"event_id":"{e.event_id}"'.encode() for e in poison}

    def handle(messages: Sequence[Message]) -> Effects:
        for m in messages:  # a bug that only some values trigger, found mid-batch
            if any(b in (m.value() or b"") for b in bad):
                raise ZeroDivisionError("division by zero")
        return Effects(outputs=[Outbound(sink, m.key(), m.value() or b"") for m in messages])

    outputs = reader("predictions", FeatureEvent)
    letters = reader("dlq", DeadLetter)
    with _running(settings, handlers={topics("features"): handle}):
        outputs.read_until(lambda items: len(items) >= 298)
        letters.read_until(lambda items: len(items) >= 2)
    assert len({e.event_id for e in outputs.items}) == 298
    assert {e.event_id for e in outputs.items}.isdisjoint(e.event_id for e in poison)
    assert [(d.reason, d.service) for d in letters.items] == [("handler_error", "test")] * 2
    assert all("ZeroDivisionError" in d.detail for d in letters.items)
    assert sorted(d.source_offset for d in letters.items) == [7, 150]


def test_a_joint_handler_failing_now_or_in_its_deferred_result_rejects_only_the_bad_message(
    settings: Settings, reader: OpenReader
) -> None:
    kafka = settings.kafka.model_copy(update={"batch_size": 40})
    settings = settings.model_copy(update={"kafka": kafka})
    topics = Topics(settings.topic_prefix)
    sink = topics("predictions")
    poison = _poisoned_ids(settings, 200, {3, 120})
    now, later = (f'"event_id":"{e.event_id}"'.encode() for e in poison)

    class Deferred:
        def __init__(self, messages: Sequence[Message]) -> None:
            self.messages = list(messages)

        def result(self) -> Effects:
            if any(later in (m.value() or b"") for m in self.messages):
                raise KeyError("late failure")
            return Effects([Outbound(sink, m.key(), m.value() or b"") for m in self.messages])

    def joint(by_topic: Mapping[str, Sequence[Message]]) -> Deferred:
        messages = by_topic[topics("features")]
        if any(now in (m.value() or b"") for m in messages):
            raise ValueError("early failure")
        return Deferred(messages)

    outputs = reader("predictions", FeatureEvent)
    letters = reader("dlq", DeadLetter)
    with _running(settings, handlers={topics("features"): lambda m: Effects()}, joint=joint):
        outputs.read_until(lambda items: len(items) >= 198)
        letters.read_until(lambda items: len(items) >= 2)
    assert len({e.event_id for e in outputs.items}) == 198
    assert sorted(d.source_offset for d in letters.items) == [3, 120]
    assert {d.detail.split(":")[0] for d in letters.items} == {"ValueError", "KeyError"}


def test_a_batch_whose_outputs_failed_is_never_committed_not_even_by_the_stop_after_the_error(
    settings: Settings,
) -> None:
    # the broker refuses every output (a topic name it cannot have): the loop ends with the
    # error, and the stop that follows must not commit the failed batch as if it had settled
    # (it once did, and a restart then skipped the batch: its events were lost)
    settings = _with_commit_interval(settings, 0)
    admin = make_admin(settings)
    topics = Topics(settings.topic_prefix)

    def handle(messages: Sequence[Message]) -> Effects:
        return Effects(
            outputs=[Outbound("not a topic!", m.key(), m.value() or b"") for m in messages]
        )

    processor = StreamProcessor(
        settings, "test", topics.group(GROUP), {topics("features"): handle}, stop=StopSignal()
    )
    produce_features(settings, feature_events(20))
    with pytest.raises(DeliveryError, match="Invalid topic"):
        processor.run()
    assert _committed(admin, settings) == 0


def test_a_transactional_loop_fenced_by_a_newer_producer_ends_saying_so_and_commits_nothing(
    settings: Settings,
) -> None:
    # a newer instance under the same transactional id (a takeover) fences this one: its next
    # transaction fails, nothing of it is committed, and the error says what to do
    admin = make_admin(settings)
    topics = Topics(settings.topic_prefix)
    processor = StreamProcessor(
        settings,
        "test",
        topics.group(GROUP),
        _echo(settings),  # type: ignore[arg-type]
        transactional_id=f"{settings.topic_prefix}tx",
        stop=StopSignal(),
    )
    produce_features(settings, feature_events(10))
    failure: list[BaseException] = []

    def run() -> None:
        try:
            processor.run()
        except BaseException as error:  # kept for the assertion
            failure.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while _committed(admin, settings) < 10 and time.monotonic() < deadline:
        time.sleep(0.1)
    newer = make_producer(settings, **{"transactional.id": f"{settings.topic_prefix}tx"})
    newer.init_transactions(30)  # fences the loop's producer
    produce_features(settings, feature_events(10, start=10))
    thread.join(60)

    assert not thread.is_alive() and failure, "the fenced loop went on"
    assert isinstance(failure[0], DeliveryError) and "fenced" in str(failure[0])
    assert "EDDY_SERVING__INSTANCE" in str(failure[0])
    assert _committed(admin, settings) == 10
