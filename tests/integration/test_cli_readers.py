"""The commands that read what the loop produced: eddy tail, models leaderboard, models prune."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from eddy.cli import main
from services.core.feature_schema import FeatureSchema
from services.core.model_specs import baseline_spec, build_model, default_specs
from services.core.settings import Settings
from services.core.state import connect_redis
from services.core.supervisor import service_env
from services.training.leaderboard import Leaderboard
from services.training.learner import Candidate, Example, Race
from tests.integration.support import produce, publish_model


def eddy(settings: Settings, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), env=service_env(settings))
    return result.exit_code, result.output


def test_tail_prints_a_topics_messages_one_json_object_a_line(settings: Settings) -> None:
    sent = [{"n": i} for i in range(3)]
    produce(settings, "alerts", [(b"k", json.dumps(item).encode()) for item in sent])

    code, output = eddy(settings, "tail", "alerts", "--from-beginning", "--count", "3")

    assert code == 0, output
    assert [json.loads(line) for line in output.splitlines()] == sent


def test_tail_refuses_a_topic_that_is_not_one_of_eddys(settings: Settings) -> None:
    code, output = eddy(settings, "tail", "nowhere")
    assert code == 2 and "Invalid value" in output and "predictions" in output


def test_the_leaderboard_shows_what_training_exported_and_says_when_there_is_none(
    settings: Settings,
) -> None:
    code, output = eddy(settings, "models", "leaderboard")
    assert code == 1 and "no leaderboard" in output and "is training running" in output

    schema = FeatureSchema.load("sea")
    specs = [*default_specs(schema), baseline_spec(schema)]

    def build(spec: object) -> object:
        return build_model(spec, schema)  # type: ignore[arg-type]

    race = Race(
        [Candidate(s, build(s), "binary", 100, 100) for s in specs], specs[0].name, 100, build
    )
    for i in range(200):
        race.learn(Example({"x0": float(i % 10), "x1": 1.0, "x2": 0.0}, i % 10 < 5, 0, i))
    board = Leaderboard(
        connect_redis(settings), settings.topic_prefix, settings.model_name, "accuracy"
    )
    board.update(race, force=True)

    code, output = eddy(settings, "models", "leaderboard")
    assert code == 0, output
    assert "logisticregression" in output and "baseline" in output and "* serves" in output
    code, output = eddy(settings, "models", "leaderboard", "--json")
    rows = json.loads(output)["candidates"]
    assert [r["rank"] for r in rows] == [1, 2] and all(r["examples"] == 200 for r in rows)


def test_prune_removes_only_artifacts_no_version_names(settings: Settings) -> None:
    published = publish_model(settings, rows=50)
    orphan = Path(settings.registry_dir) / settings.model_name / "v9-deadbeef.bin"
    orphan.write_bytes(b"left by a stack that is gone")

    code, output = eddy(settings, "models", "prune", "--dry-run", "--json")
    assert code == 0, output
    assert json.loads(output)["removed"] == [str(orphan.resolve())] and orphan.exists()

    code, output = eddy(settings, "models", "prune")
    assert code == 0 and "removed 1 artifacts" in output
    assert not orphan.exists()
    assert Path(published.artifact_uri.removeprefix("file://")).exists()
