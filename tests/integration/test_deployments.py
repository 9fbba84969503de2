"""Shadow and canary on the real broker and Redis: serving splits, monitoring judges."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from click.testing import CliRunner

from eddy.cli import main
from schemas import Deployment, FeatureEvent, Label, ModelVersion, Prediction, ShadowAnswers
from services.core import registry
from services.core.datasets import default_classifier, stream
from services.core.settings import Settings
from services.core.state import connect_redis, deployment_status_key
from services.core.supervisor import service_env
from tests.integration.support import (
    OpenReader,
    StartService,
    poll_until,
    produce,
    produce_features,
)

ROWS = list(stream("phishing"))
#: monitoring decides on this many labelled events a side at least (MIN_LABELS)
FAST = {"EDDY_MONITORING__CANARY_STEP_LABELS": "60", "EDDY_MONITORING__FETCH_WAIT_MS": "20"}


def publish(settings: Settings, flipped: bool, hold: bool = False) -> ModelVersion:
    """A scaled logistic regression that learned 300 rows of Phishing; flipped: a bad one."""
    model = default_classifier()
    for features, label in ROWS[:300]:
        model.learn_one(features, (not label) if flipped else label)
    return registry.publish(
        settings,
        settings.model_name,
        registry.serialize_river(model),
        feature_names=list(ROWS[0][0]),
        hold=hold,
        description="flipped" if flipped else "good",
    )


def events(start: int, count: int) -> list[FeatureEvent]:
    """Feature events of Phishing rows, spread over 60 entities."""
    now = datetime.now(UTC)
    return [
        FeatureEvent(
            event_id=f"ev-{i}",
            entity_id=f"user-{i % 60}",
            ts=now,
            features=ROWS[i][0],
            feature_schema="phishing",
        )
        for i in range(start, start + count)
    ]


def send_labels(settings: Settings, batch: list[FeatureEvent]) -> None:
    labels = [Label(event_id=e.event_id, label=ROWS[int(e.event_id[3:])][1]) for e in batch]
    produce(
        settings, "labels", [(lb.event_id.encode(), lb.model_dump_json().encode()) for lb in labels]
    )


def eddy(settings: Settings, *args: str) -> str:
    result = CliRunner().invoke(main, list(args), env=service_env(settings))
    assert result.exit_code == 0, result.output
    return result.output


def start_loop(start_service: StartService) -> None:
    start_service("serving")
    start_service("labeling")
    start_service("monitoring", **FAST)


def stream_until_decided(
    settings: Settings, reader: OpenReader, seq: int
) -> tuple[Deployment, list[FeatureEvent], list[Deployment]]:
    """Send labelled events in rounds until a record after ``seq`` ends the canary."""
    records = reader("deployments", Deployment)
    sent: list[FeatureEvent] = []
    for _ in range(10):
        batch = events(len(sent), 100)
        produce_features(settings, batch)
        send_labels(settings, batch)
        sent += batch
        found = records.read_until(
            lambda items: any(r.seq > seq and r.action != "step" for r in items), 8
        )
        decided = [r for r in found if r.seq > seq and r.action != "step"]  # type: ignore[attr-defined]
        if decided:
            return decided[0], sent, found  # type: ignore[return-value]
    raise AssertionError(f"no decision after {len(sent)} labelled events: {found}")


def test_a_worse_challenger_on_canary_is_rolled_back_with_its_figures(
    settings: Settings, start_service: StartService, reader: OpenReader
) -> None:
    good = publish(settings, flipped=False)
    bad = publish(settings, flipped=True, hold=True)
    start_loop(start_service)
    eddy(settings, "models", "deploy", "default", str(bad.version), "--canary", "50", "--steps", "")

    record, _, _ = stream_until_decided(settings, reader, seq=1)

    assert (record.action, record.decided_by, record.mode) == ("rollback", "rule", "none")
    assert record.champion_version == good.version and record.challenger_version is None
    assert record.figures["difference"] < 0 and record.figures["challenger_labels"] >= 100
    assert "worse" in record.reason
    # from then on, the champion answers every entity
    after = events(1_100, 60)
    produce_features(settings, after)
    ids = {e.event_id for e in after}
    served = reader("predictions", Prediction).read_until(
        lambda items: ids <= {p.event_id for p in items}  # type: ignore[attr-defined]
    )
    assert {p.model_version for p in served if p.event_id in ids} == {good.version}  # type: ignore[attr-defined]


def test_a_better_challenger_on_canary_is_promoted_and_each_entity_saw_one_variant(
    settings: Settings, start_service: StartService, reader: OpenReader
) -> None:
    bad = publish(settings, flipped=True)
    good = publish(settings, flipped=False, hold=True)
    start_loop(start_service)
    eddy(settings, "models", "deploy", "default", str(good.version), "--canary", "30")

    record, sent, records = stream_until_decided(settings, reader, seq=1)

    assert (record.action, record.champion_version) == ("promote", good.version)
    assert record.figures["difference"] > 0
    served = reader("predictions", Prediction).read_until(lambda items: len(items) >= len(sent))
    by_entity: dict[str, set[tuple[str, int]]] = defaultdict(set)
    first_change = min(r.created_at for r in records if r.seq > 1)
    for p in served:
        if p.served_at < first_change:  # type: ignore[attr-defined]
            by_entity[p.entity_id].add((p.variant, p.model_version))  # type: ignore[attr-defined]
    assert by_entity and all(len(variants) == 1 for variants in by_entity.values())
    assert {v for variants in by_entity.values() for v in variants} == {
        ("champion", bad.version),
        ("canary", good.version),
    }


def test_a_shadow_is_never_served_and_is_scored_on_the_same_events(
    settings: Settings, start_service: StartService, reader: OpenReader
) -> None:
    good = publish(settings, flipped=False)
    shadow = publish(settings, flipped=True, hold=True)
    start_loop(start_service)
    eddy(settings, "models", "deploy", "default", str(shadow.version), "--shadow")
    batch = events(0, 300)

    produce_features(settings, batch)
    send_labels(settings, batch)

    ids = {e.event_id for e in batch}
    served = reader("predictions", Prediction).read_until(lambda items: len(items) >= 300)
    batches = reader("shadow_predictions", ShadowAnswers).read_until(
        lambda items: sum(len(b.answers) for b in items) >= 300  # type: ignore[attr-defined]
    )
    shadowed = [a for b in batches for a in b.answers]  # type: ignore[attr-defined]
    assert {(p.variant, p.model_version) for p in served} == {("champion", good.version)}  # type: ignore[attr-defined]
    assert {b.model_version for b in batches} == {shadow.version}  # type: ignore[attr-defined]
    assert {p.event_id for p in shadowed} == ids  # type: ignore[attr-defined]
    key = deployment_status_key(settings.topic_prefix, settings.model_name)

    def scored() -> dict[str, Any] | None:
        raw = connect_redis(settings).get(key)
        status = json.loads(raw) if raw else None
        return status if status and status["challenger_labels"] >= 250 else None

    status = poll_until(scored, 60)
    last = connect_redis(settings).get(key)
    assert status is not None, f"monitoring never scored the shadow: {last!r}"
    assert status["champion_labels"] == status["challenger_labels"], "paired: the same events"
    assert status["champion"] > 0.8 > 0.2 > status["challenger"]
    shown = eddy(settings, "models", "status")
    assert f"champion v{good.version} (holds); v{shadow.version} in shadow" in shown
    assert "live accuracy: champion" in shown
    assert "waiting to pair: " in shown
    as_json = json.loads(eddy(settings, "models", "status", "--json"))
    assert as_json["mode"] == "shadow" and as_json["live"]["challenger_labels"] >= 250


def test_a_version_held_back_is_not_served_until_deployed(
    settings: Settings, start_service: StartService, reader: OpenReader
) -> None:
    good = publish(settings, flipped=False)
    publish(settings, flipped=True, hold=True)
    start_service("serving")

    produce_features(settings, events(0, 50))

    served = reader("predictions", Prediction).read_until(lambda items: len(items) >= 50)
    assert {p.model_version for p in served} == {good.version}  # type: ignore[attr-defined]
