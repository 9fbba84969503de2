"""training on the real broker: initial, scheduled and drift versions, and crash safety."""

from __future__ import annotations

import itertools
import json
import time
from datetime import UTC, datetime

from river.datasets import synth

from schemas import DeadLetter, DriftEvent, ModelVersion, TrainingExample
from services.core.embedded import free_port
from services.core.settings import Settings
from services.core.state import connect_redis
from services.core.topics import Topics
from tests.integration.support import OpenReader, StartService, produce, wait_for_metric

EVERY = 200


def sea_examples(variant: int, count: int, seed: int, start: int = 0) -> list[TrainingExample]:
    """Labelled examples from River's SEA stream, ids ``sea-{i}``."""
    rows = itertools.islice(synth.SEA(variant=variant, seed=seed), count)
    return [
        TrainingExample(
            event_id=f"sea-{start + i}",
            entity_id=f"e{(start + i) % 5}",
            ts=datetime.now(UTC),
            features={str(k): v for k, v in x.items()},
            label=y,
        )
        for i, (x, y) in enumerate(rows)
    ]


def send(settings: Settings, examples: list[TrainingExample]) -> None:
    produce(
        settings,
        "training_examples",
        [(e.entity_id.encode(), e.model_dump_json().encode()) for e in examples],
    )


def drift_event(drift_id: str, window: int = 400) -> DriftEvent:
    return DriftEvent(
        drift_id=drift_id,
        kind="concept",
        subject="error",
        detector="ADWIN",
        magnitude=0.2,
        window=window,
        model_name="default",
        model_version=1,
    )


def _env() -> dict[str, str]:
    # no warm-up: versions exactly every EVERY examples, so the tests can count them
    return {
        "EDDY_TRAINING__PUBLISH_EVERY": str(EVERY),
        "EDDY_TRAINING__FIRST_INTERVAL": "0",
        "EDDY_TRAINING__VALIDATION_WINDOW": "100",
        "EDDY_TRAINING__PUBLISH_INTERVAL_S": "0",
        "EDDY_TRAINING__SMALL_MODEL_BYTES": "0",
        "EDDY_TRAINING__VERSION_TIME_SHARE": "1",
    }


def test_training_publishes_an_initial_then_a_scheduled_version_with_lineage(
    settings: Settings, start_service: StartService, reader: OpenReader
) -> None:
    start_service("training", **_env())
    send(settings, sea_examples(0, 2 * EVERY + 50, seed=1))
    versions = reader("models", ModelVersion).read_until(lambda items: len(items) >= 3)
    assert [(v.version, v.trigger, v.parent_version) for v in versions] == [
        (1, "initial", None),
        (2, "scheduled", 1),
        (3, "scheduled", 2),
    ]
    learned = sum(span.last - span.first + 1 for v in versions for span in v.lineage)
    assert learned == 2 * EVERY
    assert versions[2].metrics["accuracy"] > 0.8
    assert versions[2].spec is not None and versions[2].task == "binary"


def test_a_drift_event_yields_one_validated_version_even_if_delivered_twice(
    settings: Settings, start_service: StartService, reader: OpenReader
) -> None:
    # the champion (v2) learned the old concept; the drift event comes once training has
    # learned 400 examples of the new one (its metrics show how many it learned)
    port = free_port()
    env = {**_env(), "EDDY_TRAINING__PUBLISH_EVERY": "1500", "EDDY_METRICS_PORT": str(port)}
    start_service("training", **env)
    send(settings, sea_examples(2, 1500, seed=1))
    models = reader("models", ModelVersion)
    models.read_until(lambda items: len(items) >= 2)
    send(settings, sea_examples(3, 400, seed=2, start=1500))
    wait_for_metric(port, "eddy_examples_learned_total", 1900)
    event = drift_event("drift-1")
    produce(settings, "drift", [(b"default", event.model_dump_json().encode())] * 2)
    versions = models.read_until(lambda items: any(v.trigger == "drift" for v in items))
    versions = models.settle()
    drift_versions = [v for v in versions if v.trigger == "drift"]
    assert len(drift_versions) == 1, "the same drift event gave two versions"
    version = drift_versions[0]
    assert version.drift_event_id == "drift-1" and version.parent_version == 2
    assert version.metrics["validation_loss_saved"] > 0 and version.metrics["validation_z"] > 1.64


def test_a_drift_candidate_that_does_not_beat_the_champion_is_not_published(
    settings: Settings, start_service: StartService, reader: OpenReader
) -> None:
    start_service("training", **{**_env(), "EDDY_TRAINING__MIN_GAIN": "1.0"})
    send(settings, sea_examples(0, 150, seed=1))
    produce(settings, "drift", [(b"default", drift_event("drift-2").model_dump_json().encode())])
    versions = reader("models", ModelVersion).settle(quiet_s=4)
    assert [v.trigger for v in versions] == ["initial"]


def test_training_killed_mid_stream_loses_no_example_and_repeats_no_version(
    settings: Settings, start_service: StartService, reader: OpenReader
) -> None:
    total = 10 * EVERY
    examples = sea_examples(0, total, seed=3)
    training = start_service("training", **_env())
    models = reader("models", ModelVersion)
    send(settings, examples[: total // 2])
    models.read_until(lambda items: len(items) >= 3)
    training.kill()
    send(settings, examples[total // 2 :])
    start_service("training", **_env())
    versions = models.read_until(lambda items: len(items) >= 11, timeout_s=120)
    versions = models.settle()

    numbers = [v.version for v in versions]
    assert numbers == list(range(1, 12)), f"versions repeated or skipped: {numbers}"
    covered: dict[int, list[int]] = {}
    for v in versions:
        for span in v.lineage:
            covered.setdefault(span.partition, []).extend(range(span.first, span.last + 1))
    offsets = sorted((p, o) for p, os in covered.items() for o in os)
    assert len(offsets) == len(set(offsets)) == total, "an example was lost or learned twice"


def test_a_drift_event_waits_for_enough_post_change_examples_before_retraining(
    settings: Settings, start_service: StartService, reader: OpenReader
) -> None:
    start_service("training", **{**_env(), "EDDY_TRAINING__PUBLISH_EVERY": "1500"})
    send(settings, sea_examples(2, 1500, seed=1))
    models = reader("models", ModelVersion)
    models.read_until(lambda items: len(items) >= 2)
    # detected right at the change: no example of the new concept yet
    produce(
        settings,
        "drift",
        [(b"default", drift_event("drift-3", window=0).model_dump_json().encode())],
    )
    awaiting = connect_redis(settings)
    key = f"eddy:{settings.topic_prefix}training:awaiting-drifts"
    deadline = time.monotonic() + 30
    while not awaiting.hexists(key, "drift-3") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert awaiting.hexists(key, "drift-3"), "training did not accept the drift event"
    send(settings, sea_examples(3, 400, seed=2, start=1500))

    versions = models.read_until(lambda items: any(v.trigger == "drift" for v in items))
    (version,) = [v for v in versions if v.trigger == "drift"]
    retrained_on = sum(span.last - span.first + 1 for span in version.lineage)
    assert retrained_on == 2 * 100, "it retrained on other than the examples after the change"
    assert version.metrics["validation_loss_saved"] > 0
    assert not awaiting.hexists(key, "drift-3")


def test_malformed_examples_and_drift_events_reach_the_dlq_and_training_keeps_learning(
    settings: Settings, start_service: StartService, reader: OpenReader
) -> None:
    port = free_port()
    start_service("training", **{**_env(), "EDDY_METRICS_PORT": str(port)})
    good = sea_examples(0, 50, seed=4)
    wrong_label = good[0].model_dump(mode="json") | {"label": [1, 2]}
    nested_feature = good[0].model_dump(mode="json") | {"features": {"0": {"deep": 1}}}
    unknown_field = good[0].model_dump(mode="json") | {"admin": True}
    produce(
        settings,
        "training_examples",
        [
            (b"e0", b'{"event_id": '),
            (b"e0", b"\xff\xfe\x00binary"),
            (b"e0", json.dumps(wrong_label).encode()),
            (b"e0", json.dumps(nested_feature).encode()),
            (b"e0", json.dumps(unknown_field).encode()),
        ],
    )
    bad_drift = drift_event("drift-bad").model_dump(mode="json") | {"window": -5}
    produce(settings, "drift", [(b"default", b"[]"), (b"default", json.dumps(bad_drift).encode())])
    send(settings, good)

    wait_for_metric(port, "eddy_examples_learned_total", len(good))
    letters = reader("dlq", DeadLetter).read_until(lambda items: len(items) >= 7)
    topics = Topics(settings.topic_prefix)
    assert sorted((d.source_topic, d.reason) for d in letters) == sorted(
        [
            (topics("training_examples"), "invalid_json"),
            (topics("training_examples"), "invalid_json"),
            (topics("training_examples"), "wrong_type"),
            (topics("training_examples"), "wrong_type"),
            (topics("training_examples"), "unknown_field"),
            (topics("drift"), "wrong_type"),
            (topics("drift"), "out_of_range"),
        ]
    )
    assert all(d.service == "training" for d in letters)
    versions = reader("models", ModelVersion).settle(quiet_s=2)
    assert [v.trigger for v in versions] == ["initial"], "a bad drift event led to a version"
