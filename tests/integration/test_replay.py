"""``eddy replay``: a user's own file through the whole loop, for each kind of target."""

from __future__ import annotations

import csv
import json
from itertools import islice
from pathlib import Path

from click.testing import CliRunner
from river import datasets

from eddy.cli import main
from eddy.replay import Replay, run_replay
from services.core.settings import Settings
from services.core.supervisor import service_env


def test_replay_of_a_multiclass_csv_serves_predictions_and_reports_them_as_json(
    settings: Settings, tmp_path: Path
) -> None:
    source = tmp_path / "segments.csv"
    rows = [{**x, "segment": y} for x, y in islice(datasets.ImageSegments(), 1200)]
    with open(source, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    out = tmp_path / "summary.json"
    result = CliRunner().invoke(
        main,
        # 400 events/s: at 800 the 1.5 s stream was once mostly served by the untrained first
        # version on a busy machine (served accuracy 0.24), before training's first versions came
        ["replay", str(source), "--target", "segment", "--rate", "400", "--summary-json", str(out)],
        env=service_env(settings),
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(out.read_text())
    assert summary["task"] == "multiclass" and summary["events"] == 1200
    assert summary["events_without_prediction"] == 0
    # seven classes: a model that learned nothing would be right about one time in seven
    assert summary["served_accuracy"] > 0.5 and summary["in_process_accuracy"] > 0.5
    assert summary["versions_by_trigger"]["initial"] == 1
    assert summary["versions_by_trigger"]["scheduled"] >= 2
    assert {row["candidate"] for row in summary["leaderboard"]} == {"softmaxregression", "baseline"}
    schema = (tmp_path / "segments.schema.toml").read_text()
    assert 'type = "multiclass"' in schema and '[features."hue-mean"]' in schema
    assert "served accuracy" not in result.output or "summary of" in result.output
    assert "leaderboard" in result.output
    page = (tmp_path / "segments.report.html").read_text(encoding="utf-8")
    assert page.count('class="chart"') == 6 and "1,200" in page  # predictions served


def test_replay_of_a_regression_json_lines_file_scores_the_mean_absolute_error(
    settings: Settings, tmp_path: Path
) -> None:
    source = tmp_path / "approval.jsonl"
    source.write_text(
        "".join(json.dumps({**x, "approval": y}) + "\n" for x, y in datasets.TrumpApproval())
    )
    lines: list[str] = []
    summary = run_replay(
        settings, lines.append, Replay(source, "approval", rate=800, label_delay=20)
    ).as_json()
    assert summary["task"] == "regression" and summary["events"] == 1001
    assert summary["events_without_prediction"] == 0
    assert summary["served_mae"] is not None and summary["in_process_mae"] is not None
    board = {row["candidate"]: row for row in summary["leaderboard"]}
    assert set(board) == {"linearregression", "baseline"}
    assert "ordinal_date" in (tmp_path / "approval.schema.toml").read_text()
    assert any("time_like = true" in line for line in (tmp_path / "approval.schema.toml").open())
