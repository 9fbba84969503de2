"""labeling on the real broker and Redis: late labels joined once, every other fate counted.

Counts are read from the service's own /metrics endpoint. To know that labeling has stored an
input before the next one is sent, a test waits for its consumed-messages counter: the loop
counts a batch before handling it and handles batches one at a time, so whatever is sent after
that is seen in a later batch.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from typing import Any

from confluent_kafka import Message
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel

from schemas import DeadLetter, FeatureEvent, Label, LabelingTask, Prediction, TrainingExample
from services.core.runtime import Runtime
from services.core.settings import Settings
from services.core.state import connect_redis
from services.core.stream import BatchHandler, Effects, StopSignal
from services.core.supervisor import ServiceProcess
from services.core.topics import TopicRole, Topics
from services.labeling.pending import PendingEvent, PendingStore
from services.labeling.service import Labeling as LabelingHandlers
from tests.integration.support import (
    OpenReader,
    StartService,
    feature_events,
    produce,
)

CONFIDENT = {"False": 0.9, "True": 0.1}
UNSURE = {"False": 0.55, "True": 0.45}
#: Pending items expire after 1 s, swept every 0.2 s.
SHORT_PENDING = {"EDDY_LABELING__PENDING_TTL_S": "1", "EDDY_LABELING__SWEEP_INTERVAL_S": "0.2"}


def _prediction(
    event: FeatureEvent, probabilities: dict[str, float] = CONFIDENT, version: int = 3
) -> Prediction:
    return Prediction(
        event_id=event.event_id,
        entity_id=event.entity_id,
        ts=event.ts,
        features=event.features,
        model_name="default",
        model_version=version,
        prediction=max(probabilities, key=probabilities.__getitem__) == "True",
        probabilities=probabilities,
    )


def _send(settings: Settings, role: TopicRole, payloads: list[Prediction] | list[Label]) -> None:
    produce(settings, role, [(p.event_id.encode(), p.model_dump_json().encode()) for p in payloads])


class Labeling:
    """A running labeling process, and its counters as its /metrics endpoint shows them."""

    def __init__(self, process: ServiceProcess, settings: Settings) -> None:
        self.process = process
        self.topics = Topics(settings.topic_prefix)
        self.port = self._metrics_port()

    def _log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.process.log_path.read_text(errors="replace").splitlines():
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # librdkafka writes plain lines too
        return lines

    def _metrics_port(self, timeout_s: float = 30.0) -> int:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in self._log_lines():
                if "metrics_port" in line:
                    return int(line["metrics_port"])
            time.sleep(0.1)
        raise AssertionError(f"labeling logged no metrics_port:\n{self.process.log_tail()}")

    def sample(self, name: str, **labels: str) -> float:
        """The current value of one sample (0 if it was never counted)."""
        url = f"http://127.0.0.1:{self.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and labels.items() <= sample.labels.items():
                    return float(sample.value)
        return 0.0

    def wait_for(self, name: str, at_least: float, timeout_s: float = 60.0, **labels: str) -> float:
        """Poll a sample until it reaches ``at_least`` or the time is up; returns its value."""
        deadline = time.monotonic() + timeout_s
        value = self.sample(name, **labels)
        while value < at_least and time.monotonic() < deadline:
            time.sleep(0.1)
            value = self.sample(name, **labels)
        return value

    def labels(self, outcome: str, at_least: float = 0) -> float:
        """eddy_labels_total for one outcome, once it reached ``at_least``."""
        return self.wait_for("eddy_labels_total", at_least, service="labeling", outcome=outcome)

    def unlabeled(self, at_least: float = 0) -> float:
        """eddy_predictions_unlabeled_total, once it reached ``at_least``."""
        return self.wait_for("eddy_predictions_unlabeled_total", at_least, service="labeling")

    def wait_consumed(self, role: TopicRole, count: int) -> None:
        """Wait until labeling took ``count`` messages of a topic into a batch."""
        topic = self.topics(role)
        seen = self.wait_for("eddy_messages_consumed_total", count, service="labeling", topic=topic)
        assert seen >= count, f"labeling consumed {seen} of {count} on {topic}"

    def sweep_totals(self, until: dict[str, int], timeout_s: float = 30.0) -> dict[str, int]:
        """The totals of the last sweep line in the log, once they include ``until``."""
        deadline = time.monotonic() + timeout_s
        while True:
            lines = self._log_lines()
            sweeps = [line for line in lines if line.get("message") == "labeling sweep"]
            totals = dict(sweeps[-1]["totals"]) if sweeps else {}
            if until.items() <= totals.items() or time.monotonic() > deadline:
                return totals
            time.sleep(0.1)


def _start(start_service: StartService, settings: Settings, **env: str) -> Labeling:
    return Labeling(start_service("labeling", **env), settings)


def _by_id(items: list[BaseModel]) -> dict[str, Any]:
    return {item.event_id: item for item in items}  # type: ignore[attr-defined]


def test_a_label_after_its_prediction_gives_one_example_with_the_features_served(
    settings: Settings, start_service: StartService, reader: OpenReader
) -> None:
    labeling = _start(start_service, settings)
    events = feature_events(5)
    predictions = [_prediction(e, version=4) for e in events]
    _send(settings, "predictions", predictions)
    labeling.wait_consumed("predictions", 5)
    labels = [
        Label(event_id=e.event_id, label=i % 2 == 0, source="analyst") for i, e in enumerate(events)
    ]
    _send(settings, "labels", labels)

    examples = reader("training_examples", TrainingExample)
    examples.read_until(lambda items: len(items) >= 5)
    out = examples.settle()

    assert sorted(_by_id(out)) == sorted(e.event_id for e in events) and len(out) == 5
    examples = _by_id(out)
    for event, prediction, label in zip(events, predictions, labels, strict=True):
        example = examples[event.event_id]
        assert (example.entity_id, example.ts, example.features) == (
            event.entity_id,
            event.ts,
            event.features,
        )
        assert (example.label, example.label_source) == (label.label, "analyst")
        assert (example.prediction, example.model_version) == (prediction.prediction, 4)
    assert labeling.labels("joined", 5) == 5


def test_the_same_label_twice_gives_one_example_and_counts_the_second_as_duplicate(
    settings: Settings, start_service: StartService, reader: OpenReader
) -> None:
    labeling = _start(start_service, settings)
    event = feature_events(1)[0]
    _send(settings, "predictions", [_prediction(event)])
    label = Label(event_id=event.event_id, label=True)
    _send(settings, "labels", [label, label])  # twice in one batch
    examples = reader("training_examples", TrainingExample)
    examples.read_until(lambda items: len(items) >= 1)
    _send(settings, "labels", [label])  # and once more after it was joined

    assert labeling.labels("duplicate", 2) == 2
    assert [e.event_id for e in examples.settle()] == [event.event_id]
    assert labeling.labels("joined") == 1


def test_a_label_for_an_unknown_event_gives_no_example_and_is_counted_unknown(
    settings: Settings, start_service: StartService, reader: OpenReader
) -> None:
    labeling = _start(start_service, settings, **SHORT_PENDING)
    _send(settings, "labels", [Label(event_id="never-seen", label=True)])

    assert labeling.labels("unknown", 1) == 1
    assert labeling.labels("early") == 1, "an unknown label waits for its prediction first"
    assert labeling.sweep_totals(until={"unknown": 1}) == {
        "early": 1,
        "unknown": 1,
        "expired_events": 1,
    }
    assert reader("training_examples", TrainingExample).settle() == []
    assert labeling.labels("joined") == 0


def test_a_label_that_comes_before_its_prediction_is_joined_when_it_comes(
    settings: Settings, start_service: StartService, reader: OpenReader
) -> None:
    labeling = _start(start_service, settings)
    event = feature_events(1)[0]
    _send(settings, "labels", [Label(event_id=event.event_id, label=True, source="ops")])
    assert labeling.labels("early", 1) == 1
    examples = reader("training_examples", TrainingExample)
    assert examples.settle(1.0) == [], "an example without a prediction was produced"
    _send(settings, "predictions", [_prediction(event, version=2)])

    out = examples.read_until(lambda items: len(items) >= 1)
    out = examples.settle()

    assert len(out) == 1
    example = out[0]
    assert (example.event_id, example.label, example.label_source) == (event.event_id, True, "ops")
    assert (example.features, example.prediction, example.model_version) == (
        event.features,
        False,
        2,
    )
    assert labeling.labels("joined", 1) == 1


def test_a_prediction_that_comes_again_after_the_join_adds_nothing_and_asks_no_one(
    settings: Settings, start_service: StartService, reader: OpenReader
) -> None:
    labeling = _start(start_service, settings)
    event = feature_events(1)[0]
    _send(settings, "predictions", [_prediction(event, CONFIDENT, version=3)])
    labeling.wait_consumed("predictions", 1)
    _send(settings, "labels", [Label(event_id=event.event_id, label=True)])
    examples = reader("training_examples", TrainingExample)
    first = examples.read_until(lambda items: len(items) >= 1)
    _send(settings, "predictions", [_prediction(event, UNSURE, version=4)])
    labeling.wait_consumed("predictions", 2)

    assert [(e.event_id, e.model_version) for e in first] == [(event.event_id, 3)]
    assert len(examples.settle()) == 1
    assert reader("labeling_tasks", LabelingTask).settle(1.0) == [], "a labelled event was asked"
    assert labeling.wait_for("eddy_labeling_tasks_total", 0, service="labeling") == 0


def test_an_unlabeled_prediction_expires_counted_and_its_late_label_gives_no_example(
    settings: Settings, start_service: StartService, reader: OpenReader
) -> None:
    labeling = _start(start_service, settings, **SHORT_PENDING)
    event = feature_events(1)[0]
    _send(settings, "predictions", [_prediction(event)])

    assert labeling.unlabeled(1) == 1
    _send(settings, "labels", [Label(event_id=event.event_id, label=True)])

    assert labeling.labels("expired", 1) == 1
    assert reader("training_examples", TrainingExample).settle() == []
    totals = labeling.sweep_totals(until={"expired": 1, "expired_events": 1})
    assert totals == {"unlabeled_expired": 1, "expired": 1, "expired_events": 1}
    assert labeling.unlabeled() == 1


def test_an_unsure_prediction_gives_one_labeling_task_and_a_confident_one_none(
    settings: Settings, start_service: StartService, reader: OpenReader
) -> None:
    labeling = _start(start_service, settings)
    unsure, confident, unsure_later = feature_events(3)
    predictions = [_prediction(unsure, UNSURE, 5), _prediction(confident, CONFIDENT, 5)]
    _send(settings, "predictions", predictions)
    labeling.wait_consumed("predictions", 2)
    _send(settings, "predictions", [_prediction(unsure_later, UNSURE, 5)])
    tasks = reader("labeling_tasks", LabelingTask)
    asked = tasks.read_until(lambda items: len(items) >= 2)
    assert sorted(t.event_id for t in asked) == sorted([unsure.event_id, unsure_later.event_id])
    # the same predictions again change nothing
    _send(settings, "predictions", [*predictions, _prediction(unsure_later, UNSURE, 5)])
    labeling.wait_consumed("predictions", 6)

    out = tasks.settle()
    assert sorted(t.event_id for t in out) == sorted([unsure.event_id, unsure_later.event_id])
    task = _by_id(out)[unsure.event_id]
    assert (task.entity_id, task.features) == (unsure.entity_id, unsure.features)
    assert (task.prediction, task.uncertainty, task.model_version) == (False, 0.45, 5)
    assert labeling.wait_for("eddy_labeling_tasks_total", 2, service="labeling") == 2


def test_malformed_inputs_on_every_topic_reach_the_dlq_and_labeling_keeps_going(
    settings: Settings, start_service: StartService, reader: OpenReader
) -> None:
    _start(start_service, settings)
    event = feature_events(1)[0]
    unfeatured = _prediction(event).model_dump(mode="json", exclude={"features"})
    produce(settings, "labels", [(b"k", b'{"event_id": '), (b"k", b'{"label": true}')])
    produce(settings, "predictions", [(b"k", b'{"event_id": "p", "extra": 1}'), (b"k", b"[]")])
    produce(settings, "predictions", [(b"k", json.dumps(unfeatured).encode())])
    _send(settings, "predictions", [_prediction(event)])
    _send(settings, "labels", [Label(event_id=event.event_id, label=True)])

    dlq = reader("dlq", DeadLetter).read_until(lambda items: len(items) >= 5)
    examples = reader("training_examples", TrainingExample).read_until(lambda i: len(i) >= 1)

    topics = Topics(settings.topic_prefix)
    assert sorted((d.source_topic, d.reason) for d in dlq) == sorted(
        [
            (topics("labels"), "invalid_json"),
            (topics("labels"), "missing_field"),
            (topics("predictions"), "missing_field"),
            (topics("predictions"), "wrong_type"),
            (topics("predictions"), "missing_field"),
        ]
    )
    assert all(d.service == "labeling" and d.detail for d in dlq)
    assert [e.event_id for e in examples] == [event.event_id]


def test_labeling_killed_mid_stream_and_restarted_gives_every_label_its_example(
    settings: Settings, start_service: StartService, reader: OpenReader
) -> None:
    total, chunk = 600, 50
    events = feature_events(total)
    expected = {e.event_id: i % 3 == 0 for i, e in enumerate(events)}

    def send_all() -> None:
        for start in range(0, total, chunk):
            part = events[start : start + chunk]
            _send(settings, "predictions", [_prediction(e) for e in part])
            _send(
                settings,
                "labels",
                [Label(event_id=e.event_id, label=expected[e.event_id]) for e in part],
            )
            time.sleep(0.1)

    labeling = _start(start_service, settings)
    sender = threading.Thread(target=send_all, daemon=True)
    sender.start()
    examples = reader("training_examples", TrainingExample)
    examples.read_until(lambda items: len(items) >= 100)
    labeling.process.kill()
    killed_after = len(examples.items)
    _start(start_service, settings)
    sender.join()

    out = examples.read_until(lambda items: len(_by_id(items)) >= total, 120)
    joined = {event_id: example.label for event_id, example in _by_id(out).items()}
    assert joined == expected, f"missing {len(set(expected) - set(joined))}"
    assert killed_after < total, "the kill came after the stream ended: nothing was tested"
    print(f"labeling: killed after {killed_after} examples; repeats: {len(out) - total}")


def test_the_store_closes_each_expired_event_once_and_only_after_its_deadline(
    settings: Settings,
) -> None:
    now = [1000.0]
    client = connect_redis(settings)
    one, two = (
        PendingStore(client, f"{settings.topic_prefix}labeling", 10.0, clock=lambda: now[0])
        for _ in range(2)
    )
    one.add_predictions({f"ev-{i}": b"{}" for i in range(20)})
    assert one.pop_expired(100) == {}, "nothing is due before its deadline"
    now[0] += 11
    first, second = one.pop_expired(7), two.pop_expired(100)

    assert len(first) == 7 and len(second) == 13 and not set(first) & set(second)
    assert all(state.prediction == b"{}" for state in [*first.values(), *second.values()])
    assert all(state.expired for state in one.lookup([f"ev-{i}" for i in range(20)]).values())


# Handlers driven batch by batch on the real Redis, without a broker: replays and batches that
# mix topics, which a test cannot arrange through the broker.


def _handlers(settings: Settings) -> LabelingHandlers:
    """A fresh labeling instance, as after a restart (the state in Redis is kept)."""
    redis = connect_redis(settings)
    runtime = Runtime("labeling", settings, Topics(settings.topic_prefix), redis, StopSignal(), 0)
    return LabelingHandlers(runtime)


def _messages(payloads: list[BaseModel]) -> list[Message]:
    return [
        Message(topic="t", partition=0, offset=i, key=b"k", value=p.model_dump_json().encode())
        for i, p in enumerate(payloads)
    ]


def _batch(*parts: tuple[BatchHandler, list[BaseModel]], acked: bool = True) -> Effects:
    """One batch as the stream loop runs it; ``acked=False`` is a crash before the broker acked."""
    effects = Effects()
    for handler, payloads in parts:
        effects.extend(handler(_messages(payloads)))
    if acked:
        for effect in [*effects.after_ack, *effects.before_commit]:
            effect()
    return effects


def _produced(effects: Effects, settings: Settings, role: TopicRole) -> list[str]:
    topic = Topics(settings.topic_prefix)(role)
    return [json.loads(o.value)["event_id"] for o in effects.outputs if o.topic == topic]


def test_a_batch_replayed_after_a_crash_gives_its_example_again_and_never_loses_it(
    settings: Settings,
) -> None:
    event = feature_events(1)[0]
    prediction, label = _prediction(event), Label(event_id=event.event_id, label=True)
    before = _handlers(settings)
    crashed = _batch(
        (before.on_predictions, [prediction]), (before.on_labels, [label]), acked=False
    )
    after = _handlers(settings)
    replayed = _batch((after.on_predictions, [prediction]), (after.on_labels, [label]))
    again = _batch((after.on_predictions, [prediction]), (after.on_labels, [label]))

    assert _produced(crashed, settings, "training_examples") == [event.event_id]
    assert _produced(replayed, settings, "training_examples") == [event.event_id]
    assert again.outputs == [], "a batch replayed after its commit produced again"


def test_a_parked_label_joined_by_its_prediction_is_not_joined_again_by_a_repeat_in_that_batch(
    settings: Settings,
) -> None:
    event = feature_events(1)[0]
    label = Label(event_id=event.event_id, label=True)
    labeling = _handlers(settings)
    parked = _batch((labeling.on_labels, [label]))
    joined = _batch((labeling.on_predictions, [_prediction(event)]), (labeling.on_labels, [label]))

    assert parked.outputs == []
    assert _produced(joined, settings, "training_examples") == [event.event_id]
    assert labeling.counts.totals == {"early": 1, "joined": 1, "duplicate": 1}


def test_a_prediction_in_the_batch_whose_label_joined_its_event_asks_no_one(
    settings: Settings,
) -> None:
    event = feature_events(1)[0]
    labeling = _handlers(settings)
    label = Label(event_id=event.event_id, label=True)
    joined = _batch(
        (labeling.on_labels, [label]), (labeling.on_predictions, [_prediction(event, UNSURE)])
    )

    assert _produced(joined, settings, "training_examples") == [event.event_id]
    assert _produced(joined, settings, "labeling_tasks") == []
    assert PendingStore(connect_redis(settings), f"{settings.topic_prefix}labeling", 1).lookup(
        [event.event_id]
    )[event.event_id] == PendingEvent(labeled=True), "the joined event left state behind"


def test_one_batch_of_both_topics_joins_each_event_once_and_asks_only_about_the_unlabeled(
    settings: Settings,
) -> None:
    labeled, unlabeled, early = feature_events(3)
    topics = Topics(settings.topic_prefix)
    labeling = _handlers(settings)
    _batch((labeling.on_labels, [Label(event_id=early.event_id, label=False)]))
    effects = labeling.on_batch(
        {
            topics("labels"): _messages([Label(event_id=labeled.event_id, label=True)]),
            topics("predictions"): _messages(
                [_prediction(e, UNSURE) for e in (labeled, unlabeled, early)]
            ),
        }
    )
    for effect in [*effects.after_ack, *effects.before_commit]:
        effect()

    examples = {
        example["event_id"]: example
        for example in (
            json.loads(o.value) for o in effects.outputs if o.topic == topics("training_examples")
        )
    }
    assert sorted(examples) == sorted([labeled.event_id, early.event_id])
    assert examples[labeled.event_id]["model_version"] == 3, "the prediction of the same batch"
    assert examples[early.event_id]["label"] is False
    assert _produced(effects, settings, "labeling_tasks") == [unlabeled.event_id]
    assert labeling.counts.totals == {"early": 1, "joined": 2, "tasks": 1}


def test_an_unsure_prediction_sent_again_asks_once(settings: Settings) -> None:
    event = feature_events(1)[0]
    prediction = _prediction(event, UNSURE)
    labeling = _handlers(settings)
    first = _batch((labeling.on_predictions, [prediction, prediction]))
    second = _batch((labeling.on_predictions, [prediction]))

    assert _produced(first, settings, "labeling_tasks") == [event.event_id]
    assert second.outputs == []
    assert labeling.counts.totals == {"tasks": 1, "ignored_inputs": 1}


def test_a_canarys_prediction_is_served_so_its_label_is_joined_to_it(settings: Settings) -> None:
    event = feature_events(1)[0]
    canary = _prediction(event, CONFIDENT, version=9).model_copy(update={"variant": "canary"})
    labeling = _handlers(settings)
    _batch((labeling.on_predictions, [canary]))
    joined = _batch((labeling.on_labels, [Label(event_id=event.event_id, label=True)]))

    (example,) = [json.loads(o.value) for o in joined.outputs]
    assert example["model_version"] == 9


def test_a_task_carries_the_explanation_serving_gave(settings: Settings) -> None:
    event = feature_events(1)[0]
    unsure = _prediction(event, UNSURE).model_copy(update={"explanation": {"https": -0.7}})
    labeling = _handlers(settings)

    asked = _batch((labeling.on_predictions, [unsure]))

    tasks_topic = Topics(settings.topic_prefix)("labeling_tasks")
    (task,) = [LabelingTask.model_validate_json(o.value) for o in asked.outputs
               if o.topic == tasks_topic]  # fmt: skip
    assert task.explanation == {"https": -0.7}
