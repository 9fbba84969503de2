"""``eddy replay``: your own file through the whole loop, the same model in process beside it.

The file (CSV or JSON lines) is streamed as raw events at a steady rate, each label sent a fixed
number of events late, on the embedded stack or the configured one. The feature schema is
inferred (numbers, booleans, categories, time-like columns; written out for review) unless one
is given. At the end the served score is set against the score of the champion's first model,
learned in this process test-then-train with the same label delay: what the loop costs in
served quality, if anything.
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eddy.demo import Echo, LoopReport, Scenario, loop_environment, run_loop
from eddy.report import write_report
from schemas.base import Features, Target
from schemas.models import ModelSpec
from services.core.exceptions import ConfigurationError
from services.core.feature_schema import FeatureSchema
from services.core.model_specs import build_model, load_specs
from services.core.rejection import Rejection
from services.core.schema_inference import infer_schema, parse_cell, schema_toml
from services.core.settings import Settings
from services.core.state import connect_redis, leaderboard_key

#: Largest file line read, so a file that is not line-oriented fails fast with a clear error.
MAX_LINE_BYTES = 1_000_000


@dataclass(frozen=True)
class Replay:
    """What to replay and how."""

    path: Path
    target: str
    rate: float = 500.0
    label_delay: int = 100
    events: int | None = None
    #: a feature schema to use instead of inferring one
    schema: Path | None = None
    #: candidates: "auto" or a models file (EDDY_TRAINING__MODELS)
    models: str = "auto"
    windows: int = 5
    #: where the HTML report goes (None: no report)
    report: Path | None = None


def read_rows(path: Path, limit: int | None = None) -> list[dict[str, Any]]:
    """The rows of a CSV file (by its header) or a JSON-lines file (one object a line)."""
    if not path.is_file():
        raise ConfigurationError(f"{path}: no such file")
    rows: list[dict[str, Any]] = []
    with open(path, encoding="utf-8", newline="") as file:
        if path.suffix.lower() == ".csv":
            reader = csv.DictReader(file)
            for row in reader:
                if None in row:
                    raise ConfigurationError(
                        f"{path}, line {reader.line_num}: more cells than the header has columns"
                    )
                rows.append({k: parse_cell(v or "") for k, v in row.items()})
                if limit is not None and len(rows) >= limit:
                    break
        else:
            for number, line in enumerate(file, start=1):
                if not line.strip():
                    continue
                if len(line) > MAX_LINE_BYTES:
                    raise ConfigurationError(f"{path}, line {number}: longer than 1 MB")
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ConfigurationError(
                        f"{path}, line {number}: not JSON ({exc.msg}); replay reads CSV (.csv) "
                        "or JSON lines (one object a line)"
                    ) from None
                if not isinstance(row, dict):
                    raise ConfigurationError(f"{path}, line {number}: not a JSON object")
                rows.append(row)
                if limit is not None and len(rows) >= limit:
                    break
    if not rows:
        raise ConfigurationError(f"{path}: no rows")
    return rows


def split_rows(rows: Sequence[dict[str, Any]], schema: FeatureSchema) -> list[tuple[Features, Any]]:
    """(features, label) per row; empty cells left out, so optional features take defaults."""
    target = schema.target.name
    return [
        ({k: v for k, v in row.items() if k != target and v is not None}, row.get(target))
        for row in rows
    ]


def in_process_predictions(
    rows: Sequence[tuple[Features, Any]], schema: FeatureSchema, spec: ModelSpec, label_delay: int
) -> list[Target | None]:
    """A model's test-then-train predictions, each label learned ``label_delay`` events late.

    What the loop would serve with no cost of its own: the same model, the same order, the same
    label delay, in one process. Rows whose label does not fit the target are not learned (the
    loop dead-letters them).
    """
    model = build_model(spec, schema)
    classifier = schema.target.is_classification
    waiting: deque[tuple[Features, Target]] = deque()
    predictions: list[Target | None] = []
    for features, label in rows:
        if classifier:
            proba = model.predict_proba_one(features)
            predictions.append(max(proba, key=proba.get) if proba else None)
        else:
            predictions.append(model.predict_one(features))
        checked = schema.target.check(label)
        if not isinstance(checked, Rejection):
            waiting.append((features, checked))
        if len(waiting) > label_delay:
            model.learn_one(*waiting.popleft())
    return predictions


def score(task_is_classification: bool, pairs: Sequence[tuple[Any, Any]]) -> float | None:
    """Accuracy (classes) or mean absolute error (numbers) of (prediction, label) pairs."""
    if not pairs:
        return None
    if task_is_classification:
        hits = sum(1 for p, y in pairs if p is not None and type(p) is type(y) and p == y)
        return hits / len(pairs)
    errors = [abs(float(p) - float(y)) for p, y in pairs if p is not None]
    return sum(errors) / len(errors) if errors else None


@dataclass
class ReplaySummary:
    """The closing report of a replay, for people (``lines``) and scripts (``as_json``)."""

    file: str
    schema_path: str
    task: str
    metric: str
    events: int
    predicted: int
    served: float | None
    in_process: float | None
    windows: list[dict[str, Any]]
    versions_by_trigger: dict[str, int]
    versions: list[dict[str, Any]]
    drift_events_by_kind: dict[str, int]
    dead_letters: dict[str, int]
    leaderboard: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """Flat, self-explaining keys: ``served_accuracy``, ``in_process_accuracy``, ..."""
        ratio = None
        if self.served is not None and self.in_process:
            ratio = self.served / self.in_process
        return {
            "file": self.file,
            "schema_path": self.schema_path,
            "task": self.task,
            "metric": self.metric,
            "events": self.events,
            "predicted": self.predicted,
            "events_without_prediction": self.events - self.predicted,
            f"served_{self.metric}": self.served,
            f"in_process_{self.metric}": self.in_process,
            f"served_vs_in_process_{self.metric}": ratio,
            "windows": self.windows,
            "versions": len(self.versions),
            "versions_by_trigger": self.versions_by_trigger,
            "version_history": self.versions,
            "drift_events": sum(self.drift_events_by_kind.values()),
            "drift_events_by_kind": self.drift_events_by_kind,
            "dead_letters": self.dead_letters,
            "leaderboard": self.leaderboard,
        }

    def lines(self) -> list[str]:
        """The summary as people read it."""
        out = ["", f"summary of {self.file} ({self.task}, schema {self.schema_path})"]
        out.append(
            f"  events          {self.events} streamed, {self.predicted} predicted "
            f"({self.events - self.predicted} without a prediction)"
        )
        out.append(
            f"  {self.metric:<15} served {_fmt(self.served)}, the same model in process with "
            f"the same label delay {_fmt(self.in_process)}"
        )
        for window in self.windows:
            out.append(
                f"    events {window['first']:>6}-{window['last']:<6} served "
                f"{_fmt(window['served'])}  in process {_fmt(window['in_process'])}"
            )
        triggers = ", ".join(f"{k} {n}" for k, n in sorted(self.versions_by_trigger.items()))
        out.append(f"  versions        {len(self.versions)} ({triggers or 'none'})")
        for version in self.versions:
            if version["trigger"] in ("selection", "drift"):
                out.append(
                    f"    v{version['version']} {version['trigger']}: {version['description']}"
                )
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.drift_events_by_kind.items()))
        out.append(
            f"  drift events    {sum(self.drift_events_by_kind.values())} ({kinds or 'none'})"
        )
        reasons = ", ".join(f"{k} {n}" for k, n in sorted(self.dead_letters.items()))
        out.append(f"  dead letters    {sum(self.dead_letters.values())} ({reasons or 'none'})")
        if self.leaderboard:
            out.append("  leaderboard")
            for row in self.leaderboard:
                mark = "*" if row.get("champion") else " "
                out.append(
                    f"   {mark}{row['rank']:>2}. {row['candidate']:<24} {row['metric']} "
                    f"{_fmt(row.get('score'))}  {row['examples']} examples, "
                    f"{row['examples_per_s']:.0f}/s"
                    + (f", {row['behind']} behind" if row.get("behind") else "")
                    + (" (own process)" if row.get("process") == "own" else "")
                )
        return out


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def summarise(
    replay: Replay,
    schema: FeatureSchema,
    schema_path: Path,
    rows: Sequence[tuple[Features, Any]],
    report: LoopReport,
    in_process: Sequence[Target | None],
    leaderboard: list[dict[str, Any]],
) -> ReplaySummary:
    """What the loop served, set against the same model in process, window by window."""
    classification = schema.target.is_classification
    metric = "accuracy" if classification else "mae"
    ids = {index: event_id for event_id, index in report.index.items()}

    def served_pairs(first: int, last: int) -> list[tuple[Any, Any]]:
        pairs = []
        for i in range(first, last):
            prediction = report.predictions.get(ids.get(i, ""))
            if prediction is not None:
                pairs.append((prediction.prediction, _label(schema, rows[i][1])))
        return pairs

    def in_process_pairs(first: int, last: int) -> list[tuple[Any, Any]]:
        return [(in_process[i], _label(schema, rows[i][1])) for i in range(first, last)]

    count = len(rows)
    size = max(1, -(-count // max(1, replay.windows)))
    windows = [
        {
            "first": first,
            "last": min(first + size, count) - 1,
            f"served_{metric}": score(
                classification, served_pairs(first, min(first + size, count))
            ),
            f"in_process_{metric}": score(
                classification, in_process_pairs(first, min(first + size, count))
            ),
        }
        for first in range(0, count, size)
    ]
    for window in windows:
        window["served"] = window[f"served_{metric}"]
        window["in_process"] = window[f"in_process_{metric}"]
    versions = [
        {
            "version": v.version,
            "trigger": v.trigger,
            "candidate": v.spec.name if v.spec else None,
            "seen_at_event": at,
            "description": v.description,
        }
        for at, v in report.versions
    ]
    return ReplaySummary(
        file=str(replay.path),
        schema_path=str(schema_path),
        task=schema.target.type,
        metric=metric,
        events=count,
        predicted=len(report.predictions),
        served=score(classification, served_pairs(0, count)),
        in_process=score(classification, in_process_pairs(0, count)),
        windows=windows,
        versions_by_trigger=dict(Counter(v.trigger for _at, v in report.versions)),
        versions=versions,
        drift_events_by_kind=dict(Counter(e.kind for _at, e in report.drift_events)),
        dead_letters=dict(report.dead_letters),
        leaderboard=leaderboard,
    )


def _label(schema: FeatureSchema, value: Any) -> Any:
    checked = schema.target.check(value)
    return None if isinstance(checked, Rejection) else checked


def prepare(replay: Replay, echo: Echo) -> tuple[FeatureSchema, Path, list[tuple[Features, Any]]]:
    """Read the file, and infer its schema (written beside it) unless one is given."""
    raw = read_rows(replay.path, replay.events)
    if replay.schema is not None:
        schema_path = replay.schema
        schema = FeatureSchema.load(str(schema_path))
        if schema.target.name != replay.target:
            raise ConfigurationError(
                f"{schema_path}: its [target] name is {schema.target.name!r}, not "
                f"{replay.target!r} (--target)"
            )
    else:
        name = re.sub(r"[^A-Za-z0-9_.-]", "-", replay.path.stem)[:100] or "replay"
        schema = infer_schema(name, raw, replay.target)
        schema_path = replay.path.with_name(f"{replay.path.stem}.schema.toml")
        schema_path.write_text(schema_toml(schema), encoding="utf-8")
        echo(
            f"schema: inferred from {len(raw)} rows ({schema.target.type} target "
            f"{replay.target!r}, {len(schema.features)} features), written to {schema_path}"
        )
    return schema, schema_path, split_rows(raw, schema)


def run_replay(settings: Settings, echo: Echo, replay: Replay) -> ReplaySummary:
    """Stream the file through the loop and set what it served against the model in process."""
    schema, schema_path, rows = prepare(replay, echo)
    load_specs(replay.models, schema)  # a bad spec fails now, not in a service's log
    scenario = Scenario(
        events=len(rows),
        drift_at=None,
        stream=schema.name,
        rate=replay.rate,
        label_delay=replay.label_delay,
        bad_every=0,
    )
    with loop_environment(settings, echo, schema.name) as base:
        configured = base.model_copy(
            update={
                "ingest": base.ingest.model_copy(
                    update={"feature_schema": str(schema_path.resolve())}
                ),
                "training": base.training.model_copy(update={"models": replay.models}),
            }
        )
        report = run_loop(configured, scenario, echo, rows)
        if replay.report is not None:
            write_report(configured, replay.report)
            echo(f"report written to {replay.report} (open it in a browser)")
        raw_board = connect_redis(configured).get(
            leaderboard_key(configured.topic_prefix, configured.model_name)
        )
    board = json.loads(raw_board)["candidates"] if raw_board else []
    echo("scoring the same model in process, with the same label delay...")
    first = load_specs(replay.models, schema)[0]
    in_process = in_process_predictions(rows, schema, first, replay.label_delay)
    return summarise(replay, schema, schema_path, rows, report, in_process, board)
