"""Monitoring's handlers on in-memory messages: what each batch emits, and stable drift ids."""

from __future__ import annotations

import pickle
import random
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
from confluent_kafka import Message

from schemas import DeadLetter, DriftEvent, Prediction, TrainingExample
from schemas.base import Features
from services.core.settings import IngestSettings, Settings
from services.core.stream import Effects
from services.core.topics import TopicRole, Topics
from services.monitoring.service import (
    DriftPublisher,
    ExamplesHandler,
    Monitor,
    PredictionsHandler,
    drift_id,
    handlers,
)

SETTINGS = Settings(topic_prefix="unit.", model_name="fraud")
TOPICS = Topics(SETTINGS.topic_prefix)
NOW = datetime(2024, 1, 1, tzinfo=UTC)


def example_messages(
    error_rates: Sequence[tuple[int, float, int | None]], with_prediction: bool = True
) -> list[Message]:
    """training.examples messages: ``(count, error rate, model version)`` segments, in order."""
    rng = random.Random(11)
    messages: list[Message] = []
    for count, rate, version in error_rates:
        for _ in range(count):
            i = len(messages)
            wrong = rng.random() < rate
            example = TrainingExample(
                event_id=f"ev-{i}",
                entity_id="e-1",
                ts=NOW,
                features={"x": 1.0},
                label=True,
                prediction=(not wrong) if with_prediction else None,
                model_version=version,
            )
            messages.append(_message("training_examples", i, example.model_dump_json().encode()))
    return messages


def prediction_messages(values: list[Features]) -> list[Message]:
    """Champion predictions made on these features, one per feature dict, in order."""
    return [
        _message(
            "predictions",
            i,
            Prediction(
                event_id=f"ev-{i}",
                entity_id="e-1",
                ts=NOW,
                features=v,
                model_name="fraud",
                model_version=1,
                prediction=True,
            )
            .model_dump_json()
            .encode(),
        )
        for i, v in enumerate(values)
    ]


def _message(role: TopicRole, offset: int, value: bytes) -> Message:
    return Message(topic=TOPICS(role), partition=0, offset=offset, key=b"e-1", value=value)


def _drift_events(effects: Effects) -> list[DriftEvent]:
    return [
        DriftEvent.model_validate_json(out.value)
        for out in effects.outputs
        if out.topic == TOPICS("drift")
    ]


def _examples_handler() -> ExamplesHandler:
    return ExamplesHandler(SETTINGS, TOPICS, DriftPublisher(SETTINGS, TOPICS))


def _in_batches(handler: ExamplesHandler | PredictionsHandler, messages: list[Message]) -> Effects:
    effects = Effects()
    for start in range(0, len(messages), 500):
        effects.extend(handler(messages[start : start + 500]))
    return effects


JUMP = [(3000, 0.05, 3), (1500, 0.40, 4)]


def test_a_worse_error_rate_gives_one_concept_event_under_the_version_that_made_the_errors() -> (
    None
):
    events = _drift_events(_in_batches(_examples_handler(), example_messages(JUMP)))
    assert len(events) == 1
    event = events[0]
    assert (event.kind, event.subject, event.model_name, event.model_version) == (
        "concept",
        "error",
        "fraud",
        4,
    )
    assert event.magnitude is not None and event.magnitude > 0.2 and event.window > 0


def test_replaying_the_same_messages_through_the_same_history_republishes_the_same_drift_id() -> (
    None
):
    messages = example_messages(JUMP)
    first = _drift_events(_in_batches(_examples_handler(), messages))
    again = _drift_events(_in_batches(_examples_handler(), messages))
    assert [e.drift_id for e in first] == [e.drift_id for e in again] != []


def test_drift_ids_differ_by_prefix_model_kind_subject_and_position() -> None:
    message = example_messages([(2, 0.0, 1)])
    base = drift_id("p.", "m", "data", "amount", message[0])
    variants = {
        drift_id("q.", "m", "data", "amount", message[0]),
        drift_id("p.", "n", "data", "amount", message[0]),
        drift_id("p.", "m", "concept", "amount", message[0]),
        drift_id("p.", "m", "data", "clicks", message[0]),
        drift_id("p.", "m", "data", "amount", message[1]),
    }
    assert base not in variants and len(variants) == 5
    assert base == drift_id("p.", "m", "data", "amount", message[0])


def test_examples_without_a_prediction_feed_neither_the_error_watch_nor_the_kpi() -> None:
    handler = _examples_handler()
    effects = _in_batches(handler, example_messages(JUMP, with_prediction=False))
    assert _drift_events(effects) == []
    assert handler.errors.updates == 0 and handler.accuracy.value is None


def test_a_malformed_example_goes_to_the_dlq_and_the_batch_goes_on() -> None:
    good = example_messages([(3, 0.0, 1)])
    bad = _message("training_examples", 99, b'{"event_id": ')
    handler = _examples_handler()
    effects = handler([good[0], bad, *good[1:]])
    letters = [
        DeadLetter.model_validate_json(o.value) for o in effects.outputs if o.topic == TOPICS("dlq")
    ]
    assert [(d.reason, d.source_offset, d.service) for d in letters] == [
        ("invalid_json", 99, "monitoring")
    ]
    assert handler.errors.updates == 3


def test_a_shift_in_one_numeric_feature_served_gives_one_data_event_naming_it() -> None:
    rng = random.Random(5)
    values: list[Features] = [
        {
            "amount": rng.gauss(50.0 if i < 3000 else 80.0, 10.0),
            "clicks": rng.randint(0, 9),
            "https": rng.random() < 0.5,
            "country": "fr",
        }
        for i in range(4000)
    ]
    monitor = Monitor(SETTINGS, TOPICS)
    events = _drift_events(_in_batches(monitor.predictions, prediction_messages(values)))
    assert [(e.kind, e.subject, e.model_version) for e in events] == [("data", "amount", None)]
    # the KS statistic of a 3-std shift, once the recent window holds enough of the new regime
    assert events[0].detector.startswith("KS") and events[0].magnitude is not None
    assert 0.1 < events[0].magnitude <= 1.0
    assert sorted(monitor.data.watches) == ["amount", "clicks", "https"], "strings: not watched"


def test_the_service_reads_examples_predictions_and_the_deployments_challengers() -> None:
    # the features come with the predictions made on them: no need to read them twice
    assert sorted(handlers(SETTINGS, TOPICS)) == sorted(
        [
            TOPICS("predictions"),
            TOPICS("training_examples"),
            TOPICS("deployments"),
            TOPICS("shadow_predictions"),
        ]
    )


def test_every_example_delivered_twice_still_gives_one_concept_event() -> None:
    twice = [message for message in example_messages(JUMP) for _ in (1, 2)]
    events = _drift_events(_in_batches(_examples_handler(), twice))
    assert [(e.kind, e.model_version) for e in events] == [("concept", 4)]


def test_a_monitor_restored_from_a_snapshot_reports_a_change_it_had_begun_to_see() -> None:
    examples = example_messages(JUMP)
    cut = 3010  # the change began at 3,000; it is detected some 40 examples in
    predictions = prediction_messages([{"x": float(i % 7)} for i in range(len(examples))])
    running = Monitor(SETTINGS, TOPICS)
    _in_batches(running.examples, examples[:cut])
    _in_batches(running.predictions, predictions[:cut])
    snapshot = pickle.dumps(running.state())
    uninterrupted = _drift_events(_in_batches(running.examples, examples[cut:]))

    restored = Monitor(SETTINGS, TOPICS)
    restored.restore(pickle.loads(snapshot))
    resumed = _drift_events(_in_batches(restored.examples, examples[cut:]))
    forgetful = Monitor(SETTINGS, TOPICS)
    relearned = _drift_events(_in_batches(forgetful.examples, examples[cut:]))

    assert [e.drift_id for e in resumed] == [e.drift_id for e in uninterrupted]
    assert len(resumed) == 1 and resumed[0].kind == "concept"
    assert relearned == [], "without its history the error rate never rose"
    assert sorted(restored.data.watches) == ["x"]
    assert restored.quality.accuracy.value == running.quality.accuracy.value


@pytest.mark.parametrize("state", [{"errors": None}, ["errors"], None])
def test_a_state_of_another_shape_is_refused_and_changes_nothing(state: object) -> None:
    monitor = Monitor(SETTINGS, TOPICS)
    before = monitor.examples.errors

    with pytest.raises(ValueError, match="not a state of this version"):
        monitor.restore(state)

    assert monitor.examples.errors is before


def test_a_time_like_feature_that_only_grows_is_never_tested_for_data_drift(
    tmp_path: Path,
) -> None:
    schema = tmp_path / "days.toml"
    schema.write_text(
        'name = "days"\n[features.day]\ntype = "int"\ntime_like = true\n'
        '[features.amount]\ntype = "float"\n'
    )
    settings = SETTINGS.model_copy(update={"ingest": IngestSettings(feature_schema=str(schema))})
    rng = random.Random(3)
    values: list[Features] = [
        {"day": 700_000 + i, "amount": rng.gauss(50, 10)} for i in range(4000)
    ]
    monitor = Monitor(settings, TOPICS)

    events = _drift_events(_in_batches(monitor.predictions, prediction_messages(values)))

    assert events == [] and sorted(monitor.data.watches) == ["amount"]


def test_regression_errors_feed_the_mae_kpi_and_a_concept_event_when_they_grow() -> None:
    rng = random.Random(8)
    messages = []
    for i in range(4000):
        label = rng.uniform(0, 100)
        error = rng.gauss(0, 1 if i < 3000 else 10)
        example = TrainingExample(
            event_id=f"ev-{i}", entity_id="e-1", ts=NOW, features={"x": 1.0},
            label=label, prediction=label + error, model_version=1,
        )  # fmt: skip
        messages.append(_message("training_examples", i, example.model_dump_json().encode()))
    handler = ExamplesHandler(SETTINGS, TOPICS, DriftPublisher(SETTINGS, TOPICS), task="regression")

    events = _drift_events(_in_batches(handler, messages))

    assert [(e.kind, e.subject) for e in events] == [("concept", "error")]
    mae = handler.quality.mae.value
    assert mae is not None and 5 < mae < 10  # the last 1,000 absolute errors, of a N(0, 10)
    assert handler.quality.accuracy.value is None  # no accuracy for numbers
