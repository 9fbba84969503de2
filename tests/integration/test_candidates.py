"""Any target, candidates racing, online selection, labels that do not fit: on the real stack."""

from __future__ import annotations

import itertools
import json
import os
import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

from river.datasets import synth

from schemas import DeadLetter, ModelVersion, TrainingExample
from services.core.embedded import free_port
from services.core.kafka import make_producer
from services.core.settings import Settings
from services.core.state import connect_redis, leaderboard_key
from services.core.topics import Topics
from tests.integration.support import (
    OpenReader,
    StartService,
    poll_until,
    produce,
    wait_for_metric,
)

UPDOWN_SCHEMA = """
name = "updown"

[features.x0]
type = "float"

[features.x1]
type = "float"

[features.x2]
type = "float"

[target]
type = "binary"
classes = ["DOWN", "UP"]
"""


def sea_examples(count: int, label: object = None, start: int = 0) -> list[TrainingExample]:
    """SEA rows as examples; the label True/False becomes ``UP``/``DOWN`` unless given."""
    rows = itertools.islice(synth.SEA(variant=2, seed=7), start, start + count)
    return [
        TrainingExample(
            event_id=f"sea-{start + i}",
            entity_id=f"e{i % 5}",
            ts=datetime.now(UTC),
            features={f"x{k}": v for k, v in x.items()},
            label=("UP" if y else "DOWN") if label is None else label,  # type: ignore[arg-type]
        )
        for i, (x, y) in enumerate(rows)
    ]


def send(settings: Settings, examples: list[TrainingExample]) -> None:
    produce(
        settings,
        "training_examples",
        [(e.entity_id.encode(), e.model_dump_json().encode()) for e in examples],
    )


def _env(schema: Path, **more: str) -> dict[str, str]:
    return {
        "EDDY_INGEST__FEATURE_SCHEMA": str(schema),
        "EDDY_TRAINING__PUBLISH_EVERY": "200",
        "EDDY_TRAINING__FIRST_INTERVAL": "0",
        "EDDY_TRAINING__PUBLISH_INTERVAL_S": "0",
        "EDDY_TRAINING__SMALL_MODEL_BYTES": "0",
        "EDDY_TRAINING__VERSION_TIME_SHARE": "1",
        **more,
    }


def test_string_labels_are_learned_and_a_label_that_does_not_fit_is_a_dead_letter(
    settings: Settings, start_service: StartService, reader: OpenReader, tmp_path: Path
) -> None:
    schema = tmp_path / "updown.toml"
    schema.write_text(UPDOWN_SCHEMA)
    port = free_port()
    start_service("training", **_env(schema, EDDY_METRICS_PORT=str(port)))
    poison = [
        *sea_examples(1, label="SIDEWAYS", start=1000),
        *sea_examples(1, label=True, start=1001),
        *sea_examples(1, label=2.5, start=1002),
    ]
    send(settings, [*sea_examples(100), *poison, *sea_examples(300, start=100)])
    wait_for_metric(port, "eddy_examples_learned_total", 400)
    letters = reader("dlq", DeadLetter).read_until(lambda items: len(items) >= 3)
    assert sorted((d.event_id, d.reason) for d in letters) == [
        ("sea-1000", "invalid_value"),
        ("sea-1001", "invalid_value"),
        ("sea-1002", "invalid_value"),
    ]
    assert all(
        d.source_topic == Topics(settings.topic_prefix)("training_examples") for d in letters
    )
    versions = reader("models", ModelVersion).read_until(lambda items: len(items) >= 3)
    assert versions[-1].classes == ["DOWN", "UP"] and versions[-1].task == "binary"
    assert versions[-1].metrics["accuracy"] > 0.8, "it did not learn the string classes"


def test_three_candidates_race_and_the_champion_switches_by_selection(
    settings: Settings, start_service: StartService, reader: OpenReader, tmp_path: Path
) -> None:
    schema = tmp_path / "updown.toml"
    schema.write_text(UPDOWN_SCHEMA)
    models = tmp_path / "models.toml"
    # the first candidate starts as champion: a weak one, so a better one must overtake it
    models.write_text(
        '[[candidates]]\nname = "prior"\nfactory = "river.dummy:PriorClassifier"\n'
        '[[candidates]]\nname = "logistic"\nestimator = "river.linear_model.LogisticRegression"\n'
        '[[candidates]]\nname = "tree"\nestimator = "river.tree.HoeffdingTreeClassifier"\n'
    )
    port = free_port()
    env = _env(
        schema,
        EDDY_METRICS_PORT=str(port),
        EDDY_TRAINING__MODELS=str(models),
        EDDY_TRAINING__SELECTION_MIN_EXAMPLES="300",
        EDDY_TRAINING__PUBLISH_EVERY="1000",
    )
    start_service("training", **env)
    send(settings, sea_examples(1200))
    wait_for_metric(port, "eddy_examples_learned_total", 1200)
    versions = reader("models", ModelVersion).read_until(
        lambda items: any(v.trigger == "selection" for v in items)
    )
    selection = next(v for v in versions if v.trigger == "selection")
    assert selection.spec is not None and selection.spec.name != "prior"
    assert "overtook prior on accuracy" in selection.description
    assert selection.metrics["chosen_accuracy"] > selection.metrics["previous_accuracy"]
    redis = connect_redis(settings)
    key = leaderboard_key(settings.topic_prefix, settings.model_name)

    def board_at_the_end() -> dict[str, dict[str, object]] | None:
        board = json.loads(redis.get(key) or b'{"examples": 0}')
        if board["examples"] < 1200:
            return None  # exported at most once a second: the last batch comes next
        return {row["candidate"]: row for row in board["candidates"]}

    rows = poll_until(board_at_the_end, timeout_s=10)
    assert rows is not None, "the leaderboard never showed every example learned"
    assert set(rows) == {"prior", "logistic", "tree", "baseline"}
    assert all(row["examples"] == 1200 for row in rows.values())
    assert rows[selection.spec.name]["champion"]


def _race(settings: Settings) -> dict[str, dict[str, object]]:
    board = json.loads(
        connect_redis(settings).get(leaderboard_key(settings.topic_prefix, settings.model_name))
        or b'{"candidates": []}'
    )
    return {row["candidate"]: row for row in board["candidates"]}


def test_a_candidate_in_its_own_process_killed_mid_stream_loses_no_example(
    settings: Settings, start_service: StartService, reader: OpenReader, tmp_path: Path
) -> None:
    schema = tmp_path / "updown.toml"
    schema.write_text(UPDOWN_SCHEMA)
    models = tmp_path / "models.toml"
    # the weak prior starts as champion; the tree, in its own process, must overtake it
    models.write_text(
        '[[candidates]]\nname = "prior"\nfactory = "river.dummy:PriorClassifier"\n'
        '[[candidates]]\nname = "tree"\nestimator = "river.tree.HoeffdingTreeClassifier"\n'
        'process = "own"\n'
    )
    env = _env(
        schema,
        EDDY_TRAINING__MODELS=str(models),
        EDDY_TRAINING__SELECTION_MIN_EXAMPLES="300",
        EDDY_TRAINING__WORKER_CHECKPOINT_S="0.5",
    )
    start_service("training", **env)
    send(settings, sea_examples(600))
    first = poll_until(
        lambda: ((row := _race(settings).get("tree")) and row["examples"] >= 300 and row) or None,
        timeout_s=60,
    )
    assert first is not None, "the tree's process never reported"
    assert first["process"] == "own"
    killed = _pid(settings, "tree")
    os.kill(killed, signal.SIGKILL)
    send(settings, sea_examples(600, start=600))

    def caught_up() -> dict[str, object] | None:
        row = _race(settings).get("tree")
        return row if row and row["examples"] == 1200 and row["behind"] == 0 else None

    settled = poll_until(caught_up, timeout_s=90)
    assert settled is not None, (
        f"the restarted tree did not learn each example once: {_race(settings)}"
    )
    assert _pid(settings, "tree") != killed, "training did not restart the tree's process"
    versions = reader("models", ModelVersion).read_until(
        lambda items: any(v.trigger == "selection" for v in items)
    )
    chosen = next(v for v in versions if v.trigger == "selection")
    assert chosen.spec is not None and chosen.spec.name == "tree"
    numbers = [v.version for v in versions]
    assert numbers == sorted(set(numbers)), f"a version was published twice: {numbers}"


def test_a_champion_in_its_own_process_is_published_once_per_checkpoint(
    settings: Settings, start_service: StartService, reader: OpenReader, tmp_path: Path
) -> None:
    # versions of a small model fall due every 50 examples, faster than its process saves
    # itself: each checkpoint is published once, never the same model under two numbers
    schema = tmp_path / "updown.toml"
    schema.write_text(UPDOWN_SCHEMA)
    models = tmp_path / "models.toml"
    models.write_text(
        '[[candidates]]\nname = "prior"\nfactory = "river.dummy:PriorClassifier"\n'
        '[[candidates]]\nname = "tree"\nestimator = "river.tree.HoeffdingTreeClassifier"\n'
        'process = "own"\n'
    )
    env = _env(
        schema, EDDY_TRAINING__MODELS=str(models), EDDY_TRAINING__SELECTION_MIN_EXAMPLES="300"
    )
    start_service("training", **env)
    models_topic = reader("models", ModelVersion)
    producer = make_producer(settings)
    topic = Topics(settings.topic_prefix)("training_examples")

    def stream(examples: list[TrainingExample]) -> None:  # 1,000 a second
        for i, example in enumerate(examples):
            producer.produce(topic, example.model_dump_json().encode(), example.entity_id.encode())
            if i % 20 == 19:
                producer.poll(0)
                time.sleep(0.02)
        assert producer.flush(30) == 0

    stream(sea_examples(1000))
    # its process may catch up after training learned the lot: the switch does not wait for
    # the next example
    switched = models_topic.read_until(lambda items: any(v.trigger == "selection" for v in items))
    assert any(v.trigger == "selection" for v in cast(list[ModelVersion], switched))
    stream(sea_examples(2000, start=1000))  # the tree serves: its versions fall due often
    versions = cast(list[ModelVersion], models_topic.settle(quiet_s=6.0))
    tree = [v for v in versions if v.spec is not None and v.spec.name == "tree"]
    assert tree and tree[0].trigger == "selection", [v.trigger for v in versions]
    digests = [v.sha256 for v in tree]
    print("TREE", len(tree), len(set(digests)))
    assert len(set(digests)) == len(digests), f"{len(digests) - len(set(digests))} repeats"


def _pid(settings: Settings, name: str) -> int:
    rows = connect_redis(settings).hgetall(
        f"eddy:{settings.topic_prefix}training:{settings.model_name}:candidates"
    )
    return int(json.loads(rows[name.encode()])["pid"])


def test_a_bad_spec_stops_training_at_start_with_one_line_that_names_it(
    settings: Settings, start_service: StartService, tmp_path: Path
) -> None:
    models = tmp_path / "models.toml"
    models.write_text(
        '[[candidates]]\nname = "softmax"\nestimator = "river.linear_model.SoftmaxRegresion"\n'
    )
    training = start_service("training", EDDY_TRAINING__MODELS=str(models))
    assert training.process is not None
    assert training.process.wait(60) == 1
    log = training.log_path.read_text()
    assert "model 'softmax': river.linear_model has no 'SoftmaxRegresion'" in log
    assert "Traceback" not in log
