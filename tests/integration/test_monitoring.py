"""monitoring on the real broker and Redis: drift events on ``drift``, rejects, and the KPI gauge.

Every stream here is produced under one entity key: drift is a property of the order in time,
and only one partition keeps that order (across partitions the service sees an interleaving).
"""

from __future__ import annotations

import json
import random
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from prometheus_client.parser import text_string_to_metric_families

from schemas import Alert, DeadLetter, DriftEvent, Prediction, TrainingExample
from services.core.embedded import free_port
from services.core.settings import Settings
from services.core.state import connect_redis
from services.core.topics import TopicRole, Topics
from tests.integration.support import OpenReader, StartService, poll_until, produce

KEY = b"entity-0"
#: Error rate 0.05 under version 3, then 0.40 under version 4: a worse model went live.
JUMP = [(3000, 0.05, 3), (1500, 0.40, 4)]
STATIONARY = [(4500, 0.10, 3)]


def examples(segments: list[tuple[int, float, int]], seed: int = 1) -> list[tuple[bytes, bytes]]:
    """Labelled predictions, ``(count, error rate, model version)`` segments in order."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    out = []
    for count, rate, version in segments:
        for _ in range(count):
            wrong = rng.random() < rate
            example = TrainingExample(
                event_id=f"ex-{len(out)}",
                entity_id=KEY.decode(),
                ts=now,
                features={"amount": 1.0},
                label=True,
                prediction=not wrong,
                model_version=version,
            )
            out.append((KEY, example.model_dump_json().encode()))
    return out


def served(count: int, shift_at: int, seed: int = 2) -> list[tuple[bytes, bytes]]:
    """Predictions on features whose ``amount`` mean moves up by 3 std at ``shift_at``.

    The other features and the predicted classes' mix hold.
    """
    rng = random.Random(seed)
    now = datetime.now(UTC)
    out = []
    for i in range(count):
        prediction = Prediction(
            event_id=f"fe-{i}",
            entity_id=KEY.decode(),
            ts=now,
            features={
                "amount": rng.gauss(50.0 if i < shift_at else 80.0, 10.0),
                "clicks": rng.randint(0, 9),
                "country": rng.choice(["fr", "de"]),
            },
            model_name="default",
            model_version=1,
            prediction=i % 2 == 0,
        )
        out.append((KEY, prediction.model_dump_json().encode()))
    return out


def metric_sample(port: int, name: str, labels: dict[str, str]) -> float | None:
    """One labelled sample from a service's /metrics page, or None while it is absent."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as page:
            text = page.read().decode()
    except OSError:
        return None  # not serving metrics yet
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                return float(sample.value)
    return None


def wait_for_sample(
    port: int,
    name: str,
    labels: dict[str, str],
    done: Callable[[float], bool],
    timeout_s: float = 60.0,
) -> float:
    """Poll a sample until ``done(value)``; fails the test with the last value if it never is."""
    deadline = time.monotonic() + timeout_s
    value = None
    while time.monotonic() < deadline:
        value = metric_sample(port, name, labels)
        if value is not None and done(value):
            return value
        time.sleep(0.2)
    raise AssertionError(f"{name}{labels} was {value} after {timeout_s}s")


def wait_until_consumed(settings: Settings, port: int, role: TopicRole, count: int) -> None:
    """Block until monitoring has handled ``count`` messages of ``role`` (its effects follow)."""
    labels = {"service": "monitoring", "topic": Topics(settings.topic_prefix)(role)}
    wait_for_sample(port, "eddy_messages_consumed_total", labels, lambda v: v >= count)


def start_monitoring(start_service: StartService) -> int:
    """Start monitoring with a known metrics port; returns the port."""
    port = free_port()
    start_service("monitoring", EDDY_METRICS_PORT=str(port))
    return port


def test_an_error_rate_jump_gives_one_concept_drift_event_with_the_version_that_made_it(
    settings: Settings, start_service: StartService, reader: OpenReader
) -> None:
    port = start_monitoring(start_service)
    stream = examples(JUMP)
    produce(settings, "training_examples", stream)

    drift = reader("drift", DriftEvent)
    drift.read_until(lambda items: len(items) >= 1)
    wait_until_consumed(settings, port, "training_examples", len(stream))
    events = drift.settle()

    assert len(events) == 1, events
    event = events[0]
    assert (event.kind, event.subject, event.model_name, event.model_version) == (
        "concept",
        "error",
        settings.model_name,
        4,
    )
    assert event.detector.startswith("ADWIN") and event.window > 0
    assert event.magnitude is not None and event.magnitude > 0.2


def test_a_stationary_error_rate_of_the_same_length_gives_no_drift_event(
    settings: Settings, start_service: StartService, reader: OpenReader
) -> None:
    port = start_monitoring(start_service)
    stream = examples(STATIONARY)
    produce(settings, "training_examples", stream)

    wait_until_consumed(settings, port, "training_examples", len(stream))
    assert reader("drift", DriftEvent).settle() == []


def test_a_mean_shift_in_one_feature_gives_one_data_drift_event_naming_that_feature(
    settings: Settings, start_service: StartService, reader: OpenReader
) -> None:
    port = start_monitoring(start_service)
    stream = served(4000, shift_at=3000)
    produce(settings, "predictions", stream)

    drift = reader("drift", DriftEvent)
    drift.read_until(lambda items: len(items) >= 1)
    wait_until_consumed(settings, port, "predictions", len(stream))
    events = drift.settle()

    assert [(e.kind, e.subject, e.model_version) for e in events] == [("data", "amount", None)]
    assert events[0].magnitude is not None
    assert events[0].detector.startswith("KS") and 0.1 < events[0].magnitude <= 1.0


def test_malformed_messages_go_to_the_dlq_and_monitoring_keeps_going(
    settings: Settings, start_service: StartService, reader: OpenReader
) -> None:
    start_monitoring(start_service)
    produce(settings, "training_examples", [(KEY, b'{"event_id": ')])
    produce(settings, "predictions", [(KEY, b'{"event_id": "x"}')])
    produce(settings, "training_examples", examples(JUMP))

    letters = reader("dlq", DeadLetter).read_until(lambda items: len(items) >= 2)
    events = reader("drift", DriftEvent).read_until(lambda items: len(items) >= 1)

    assert sorted((d.reason, d.source_topic) for d in letters) == [
        ("invalid_json", Topics(settings.topic_prefix)("training_examples")),
        ("missing_field", Topics(settings.topic_prefix)("predictions")),
    ]
    assert all(d.service == "monitoring" for d in letters)
    assert [e.kind for e in events] == ["concept"], "examples after a bad one were not watched"


def test_the_rolling_accuracy_is_exported_on_the_metrics_endpoint(
    settings: Settings, start_service: StartService
) -> None:
    port = start_monitoring(start_service)
    now = datetime.now(UTC)
    stream = [
        (
            KEY,
            TrainingExample(
                event_id=f"kpi-{i}",
                entity_id=KEY.decode(),
                ts=now,
                features={},
                label="phish",
                prediction="legit" if i % 5 == 0 else "phish",  # every fifth is wrong
                model_version=1,
            )
            .model_dump_json()
            .encode(),
        )
        for i in range(500)
    ]
    produce(settings, "training_examples", stream)

    wait_until_consumed(settings, port, "training_examples", len(stream))
    labels = {"service": "monitoring", "model": settings.model_name, "kpi": "accuracy"}
    accuracy = wait_for_sample(port, "eddy_kpi", labels, lambda value: True)
    assert accuracy == 0.8


def predictions(
    shares: list[tuple[int, float]],
    version: int = 2,
    seed: int = 3,
    event_time: datetime | None = None,
) -> list[tuple[bytes, bytes]]:
    """Predictions of one version, ``(count, share of True)`` segments in order."""
    rng = random.Random(seed)
    ts = event_time or datetime.now(UTC)
    out = []
    for count, share in shares:
        for _ in range(count):
            prediction = Prediction(
                event_id=f"pr-{len(out)}",
                entity_id=KEY.decode(),
                ts=ts,
                features={"x": 1.0},
                model_name="default",
                model_version=version,
                prediction=rng.random() < share,
            )
            out.append((KEY, prediction.model_dump_json().encode()))
    return out


def test_a_shift_in_the_predicted_class_mix_gives_one_prediction_drift_event(
    settings: Settings, start_service: StartService, reader: OpenReader
) -> None:
    start_monitoring(start_service)
    produce(settings, "predictions", predictions([(3000, 0.3), (3000, 0.7)]))
    drift = reader("drift", DriftEvent)
    drift.read_until(lambda items: len(items) >= 1)
    events = drift.settle()
    assert [(e.kind, e.subject, e.model_version) for e in events] == [
        ("prediction", "prediction", 2)
    ]
    assert events[0].detector.startswith("PSI") and (events[0].magnitude or 0) > 0.2


def test_a_stable_class_mix_gives_no_prediction_drift_event(
    settings: Settings, start_service: StartService, reader: OpenReader
) -> None:
    port = start_monitoring(start_service)
    produce(settings, "predictions", predictions([(6000, 0.3)]))
    wait_until_consumed(settings, port, "predictions", 6000)
    assert reader("drift", DriftEvent).settle() == []


def test_predictions_whose_labels_never_come_give_a_label_coverage_event(
    settings: Settings, start_service: StartService, reader: OpenReader
) -> None:
    start_service(
        "monitoring",
        EDDY_MONITORING__COVERAGE_HORIZON_S="60",
        EDDY_MONITORING__COVERAGE_WINDOW_S="7200",
    )
    # events an hour old, then fresh ones: the old ones have matured, and none got a label
    old = predictions([(500, 0.5)], event_time=datetime.now(UTC) - timedelta(hours=1))
    produce(settings, "predictions", old + predictions([(10, 0.5)], seed=4))
    events = reader("drift", DriftEvent).read_until(lambda items: len(items) >= 1)
    assert [(e.kind, e.subject) for e in events] == [("label_coverage", "label_coverage")]
    assert events[0].magnitude == 0.5, "a coverage of 0 against a minimum of 0.5"


def test_accuracy_below_its_threshold_fires_one_alert_and_recovering_resolves_it(
    settings: Settings, start_service: StartService, reader: OpenReader
) -> None:
    port = start_monitoring(start_service)
    # accuracy 0.95, then 0.6 (below the shipped rule's 0.8), then 0.95 again
    produce(
        settings, "training_examples", examples([(1000, 0.05, 1), (2000, 0.4, 2), (3000, 0.05, 3)])
    )
    alerts = reader("alerts", Alert)
    alerts.read_until(lambda items: len(items) >= 2)
    out = alerts.settle()
    assert [(a.kpi, a.state) for a in out] == [("accuracy", "firing"), ("accuracy", "resolved")]
    assert out[0].value < 0.8 <= out[1].value and out[0].bound == ">= 0.8"
    labels = {"kpi": "accuracy", "state": "firing"}
    assert wait_for_sample(port, "eddy_alerts_total", labels, lambda v: v >= 1) == 1
    assert metric_sample(port, "eddy_kpi_breach", {"kpi": "accuracy"}) == 0


def wait_for_checkpoint(settings: Settings, role: TopicRole, covering: int) -> None:
    """Block until monitoring saved a checkpoint past ``covering`` messages of ``role``."""
    client = connect_redis(settings)
    key = f"eddy:{settings.topic_prefix}monitoring:{settings.model_name}:checkpoint"
    topic = Topics(settings.topic_prefix)(role)

    def covered() -> int:
        raw = client.hget(key, "positions")
        positions = json.loads(raw) if raw else []
        return sum(offset for name, _partition, offset in positions if name == topic)

    def enough() -> int | None:
        seen = covered()
        return seen if seen >= covering else None

    seen = poll_until(enough, timeout_s=60)
    assert seen is not None, f"the checkpoint covers {covered()} of {covering} {role} messages"


def test_monitoring_killed_as_a_change_begins_reports_it_once_after_its_restart(
    settings: Settings, start_service: StartService, reader: OpenReader
) -> None:
    stream = examples(JUMP)
    head = 3010  # the error rate rose at 3,000; it is detected some 40 examples later
    env = {"EDDY_MONITORING__CHECKPOINT_INTERVAL_S": "0.2"}
    monitoring = start_service("monitoring", EDDY_METRICS_PORT=str(free_port()), **env)
    produce(settings, "training_examples", stream[:head])
    wait_for_checkpoint(settings, "training_examples", covering=head)
    drift = reader("drift", DriftEvent)
    assert drift.settle(quiet_s=1) == [], "the change was reported before the crash"

    monitoring.kill()
    produce(settings, "training_examples", stream[head:])
    start_service("monitoring", EDDY_METRICS_PORT=str(free_port()), **env)
    drift.read_until(lambda items: len(items) >= 1)
    events = [e for e in drift.settle(quiet_s=3) if isinstance(e, DriftEvent)]

    # a restart that forgot the 3,000 good examples would see no rise in the error rate at all
    assert {(e.kind, e.model_version) for e in events} == {("concept", 4)}
    assert len({e.drift_id for e in events}) == 1, "the change was reported more than once"
