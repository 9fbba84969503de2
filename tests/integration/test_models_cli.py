"""`eddy models list|show|promote|rollback` over the registry, with serving following along."""

from __future__ import annotations

import json
import pickle
import time

import pytest
from click.testing import CliRunner

from eddy.cli import main
from schemas import ModelVersion, Prediction
from services.core import registry
from services.core.exceptions import ArtifactError
from services.core.settings import Settings
from services.core.supervisor import service_env
from services.serving.model import RiverPredictor
from tests.integration.support import (
    OpenReader,
    StartService,
    feature_events,
    produce_features,
    publish_model,
    trained_model,
)


def eddy(settings: Settings, *args: str) -> str:
    result = CliRunner().invoke(main, list(args), env=service_env(settings))
    assert result.exit_code == 0, result.output
    return result.output


def test_list_and_show_give_trigger_parent_lineage_and_ancestry(settings: Settings) -> None:
    publish_model(settings, rows=50)
    publish_model(settings, rows=100, parent_version=1)
    listing = eddy(settings, "models", "list")
    assert "v1" in listing and "v2" in listing and "parent v1" in listing
    shown = eddy(settings, "models", "show", "default", "2")
    assert '"sha256"' in shown and "ancestry: v2 <- v1" in shown
    records = json.loads(eddy(settings, "models", "list", "--json"))
    assert [(r["version"], r["parent_version"]) for r in records] == [(1, None), (2, 1)]
    assert json.loads(eddy(settings, "models", "list", "--name", "other", "--json")) == []


def test_topics_list_and_create_say_the_same_as_json(settings: Settings) -> None:
    listed = json.loads(eddy(settings, "topics", "list", "--json"))
    assert {t["role"] for t in listed} >= {"raw", "features", "predictions", "models"}
    assert all(t["partitions"] >= 1 and t["name"].startswith(settings.topic_prefix) for t in listed)
    again = json.loads(eddy(settings, "topics", "create", "--json"))
    assert again["created"] == [] and len(again["existing"]) == len(listed)


def test_rollback_then_promote_switch_what_serving_answers_with(
    settings: Settings, start_service: StartService, reader: OpenReader
) -> None:
    publish_model(settings, rows=30)
    publish_model(settings, rows=600, parent_version=1)
    start_service("serving")
    predictions = reader("predictions", Prediction)
    produce_features(settings, feature_events(50, prefix="a"))
    predictions.read_until(lambda items: len(items) >= 50)

    assert "v3 serves the artifact of v1" in eddy(settings, "models", "rollback", "default")
    produce_features(settings, feature_events(400, prefix="b"))
    served = predictions.read_until(lambda items: any(p.model_version == 3 for p in items))
    v1 = RiverPredictor(pickle.loads(trained_model(rows=30)))
    by_v3 = [p for p in served if p.model_version == 3]
    assert by_v3, "serving never switched to the rollback version"
    events = {e.event_id: e for e in feature_events(400, prefix="b")}
    for p in by_v3:
        assert p.prediction == v1.predict(events[p.event_id].features)[0]

    assert "v4 serves the artifact of v2" in eddy(settings, "models", "promote", "default", "2")
    versions = reader("models", ModelVersion).read_until(lambda items: len(items) >= 4)
    assert [(v.version, v.trigger, v.parent_version) for v in versions] == [
        (1, "manual", None),
        (2, "manual", 1),
        (3, "rollback", 1),
        (4, "promote", 2),
    ]


def test_promoting_a_version_that_does_not_exist_is_a_clear_error(settings: Settings) -> None:
    publish_model(settings)
    result = CliRunner().invoke(
        main, ["models", "promote", "default", "9"], env=service_env(settings)
    )
    assert result.exit_code == 1
    assert "no version 9 of model 'default' (known: [1])" in result.output


def test_an_announcer_lands_versions_in_order_without_waiting_for_each(
    settings: Settings,
) -> None:
    announcer = registry.Announcer(settings)
    artifact = trained_model(20)
    for version in range(1, 21):
        registry.publish(settings, "default", artifact, version=version, announcer=announcer)
    announcer.close()
    landed = [v.version for v in registry.read_versions(settings) if v.model_name == "default"]
    assert landed == list(range(1, 21))


def test_a_version_the_broker_refuses_stops_the_announcer_with_a_clear_error(
    settings: Settings,
) -> None:
    announcer = registry.Announcer(settings)
    announcer.topic = "not a topic!"  # a name the broker cannot have: every message refused
    artifact = trained_model(20)
    registry.publish(settings, "default", artifact, version=1, announcer=announcer)
    with pytest.raises(ArtifactError, match="refused a model version message"):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the refusal comes back asynchronously
            registry.publish(settings, "default", artifact, version=2, announcer=announcer)
            time.sleep(0.1)
