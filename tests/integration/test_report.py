"""``eddy report`` on the real broker and Redis, drawn in a real headless Chromium."""

from __future__ import annotations

import base64
import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from eddy.cli import main
from eddy.report import collect, render
from schemas import DeadLetter, DriftEvent, FeatureEvent, Prediction, TrainingExample
from services.core.settings import Settings
from services.core.state import connect_redis, leaderboard_history_key
from services.core.supervisor import service_env
from tests.integration.support import produce, publish_model

EVENTS = 600


def _loop_output(settings: Settings) -> None:
    """What a run of the loop leaves: two versions, a drift between them, late labels, rejects."""
    publish_model(settings)
    rng = random.Random(3)
    start = datetime.now(UTC) - timedelta(minutes=5)
    features, predictions, examples = [], [], []
    for i in range(EVENTS):
        ingested = start + timedelta(milliseconds=200 * i)
        version = 1 if i < EVENTS // 2 else 2
        label = rng.random() < 0.5
        right = rng.random() < (0.9 if i < 250 or i > 400 else 0.6)
        event = {"event_id": f"e{i}", "entity_id": f"c{i % 7}", "ts": ingested, "features": {}}
        features.append(FeatureEvent(**event, feature_schema="t", ingested_at=ingested))
        prediction = Prediction(
            **event,
            model_name=settings.model_name,
            model_version=version,
            prediction=label if right else not label,
            served_at=ingested + timedelta(milliseconds=5 + rng.random() * 20),
        )
        predictions.append(prediction)
        if rng.random() < 0.8:
            examples.append(TrainingExample(**event, label=label, prediction=prediction.prediction))
    publish_model(settings)  # version 2
    produce(settings, "features", [(None, f.model_dump_json().encode()) for f in features])
    produce(settings, "predictions", [(None, p.model_dump_json().encode()) for p in predictions])
    produce(settings, "training_examples", [(None, e.model_dump_json().encode()) for e in examples])
    drift = DriftEvent(
        drift_id="d1",
        kind="concept",
        subject="error",
        detector="ADWIN",
        window=100,
        model_name=settings.model_name,
        detected_at=predictions[260].served_at,
    )
    produce(settings, "drift", [(None, drift.model_dump_json().encode())])
    letters = [
        DeadLetter(
            reason=reason,
            detail="x",
            service="ingest",
            source_topic="events.raw",
            source_partition=0,
            source_offset=n,
            original=base64.b64encode(b"<script>alert(1)</script>").decode(),
            original_size=25,
        )
        for n, reason in enumerate(["wrong_type"] * 5 + ["invalid_json"] * 2 + ["oversized"])
    ]
    produce(settings, "dlq", [(None, d.model_dump_json().encode()) for d in letters])
    history = leaderboard_history_key(settings.topic_prefix, settings.model_name)
    client = connect_redis(settings)
    for n in range(0, EVENTS, 20):
        scores = {"logistic": 0.7 + n / 6000, "<b>tree</b>": 0.6 + n / 3000}
        client.rpush(history, json.dumps({"examples": n, "metric": "accuracy", "scores": scores}))


def test_the_report_draws_every_chart_in_chromium_from_what_the_loop_left(
    settings: Settings, browser: Any, tmp_path: Path, artifacts: Path
) -> None:
    _loop_output(settings)
    data = collect(settings, idle_s=1.0)
    assert (data.predictions, len(data.versions), len(data.drift)) == (EVENTS, 2, 1)
    assert 0.75 < (data.labelled / EVENTS) < 0.85
    assert data.drift[0][0] == 260 and [x for x, _ in data.versions] == [0, EVENTS // 2]
    assert data.dead_letters == {"wrong_type": 5, "invalid_json": 2, "oversized": 1}
    page_file = tmp_path / "report.html"
    page_file.write_text(render(data), encoding="utf-8")

    page = browser.new_page(viewport={"width": 900, "height": 1200})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(page_file.as_uri())
    charts = page.evaluate(
        """() => [...document.querySelectorAll('svg.chart')].map(svg => ({
            title: svg.getAttribute('aria-label'),
            drawn: [...svg.querySelectorAll('.series')].map(s =>
                s.tagName === 'path' ? s.getTotalLength() : s.getBBox().width),
            width: svg.getBoundingClientRect().width,
        }))"""
    )
    page.screenshot(path=str(artifacts / "report.png"), full_page=True)

    assert [c["title"] for c in charts] == [
        "Served accuracy over the stream",
        "Leaderboard over time",
        "Label coverage",
        "Label delay",
        "Latency, ingest to prediction",
        "Dead letters by reason",
    ]
    for chart in charts:  # every chart drew something, on a page as wide as the screen
        assert chart["drawn"] and all(length > 10 for length in chart["drawn"]), chart
        assert chart["width"] > 700, chart
    assert len(charts[1]["drawn"]) == 2 and len(charts[3]["drawn"]) == 2
    assert page.locator("text=<b>tree</b>").count() >= 1  # a name shows as text, not markup
    assert errors == [] and requests == [page_file.as_uri()]  # no script, nothing fetched


def test_eddy_report_writes_the_page_and_says_what_it_holds_as_json(
    settings: Settings, tmp_path: Path
) -> None:
    _loop_output(settings)
    out = tmp_path / "r.html"
    result = CliRunner().invoke(
        main, ["report", "--out", str(out), "--json"], env=service_env(settings)
    )
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["predictions"] == EVENTS and shown["dead_letters"]["wrong_type"] == 5
    assert out.read_text(encoding="utf-8").count('class="chart"') == 6


def test_a_report_of_a_model_with_no_predictions_names_the_models_that_have_some(
    settings: Settings, tmp_path: Path
) -> None:
    _loop_output(settings)
    env = {**service_env(settings), "EDDY_MODEL_NAME": "nobody"}
    result = CliRunner().invoke(main, ["report", "--out", str(tmp_path / "r.html")], env=env)
    assert result.exit_code == 0
    said = result.output + (result.stderr or "")
    assert "no predictions of model 'nobody'" in said and "['default']" in said
