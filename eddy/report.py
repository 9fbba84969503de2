"""``eddy report``: how the loop did over the stream, as one HTML file that opens offline.

Everything comes from what the services left on their topics (predictions, features, training
examples, drift events, model versions, dead letters) and from training's leaderboard history
in Redis, so it works for a demo, a replay or a running stack. The x-axis of the stream charts is
the prediction's position in the stream; a drift event is placed at the first prediction served
after it was detected, a version at the first prediction it served.
"""

from __future__ import annotations

import bisect
import json
import statistics
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from html import escape
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from eddy.charts import Marker, bar_chart, line_chart
from schemas import DeadLetter, DriftEvent, FeatureEvent, ModelVersion, Prediction, TrainingExample
from services.core.feature_schema import FeatureSchema
from services.core.settings import Settings
from services.core.state import connect_redis, leaderboard_history_key
from services.core.tailing import follow_messages
from services.core.topics import TopicRole, Topics

#: Points a stream chart draws at most (windows of the stream, evenly spaced).
POINTS = 200


@dataclass
class ReportData:
    """What the report shows, ready to draw (also ``eddy report --json``)."""

    model_name: str
    task: str
    score_name: str
    predictions: int = 0
    labelled: int = 0
    overall_score: float | None = None
    served: list[tuple[int, float]] = field(default_factory=list)
    drift: list[tuple[int, str]] = field(default_factory=list)
    versions: list[tuple[int, str]] = field(default_factory=list)
    leaderboard_metric: str = ""
    leaderboard: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    coverage: list[tuple[int, float]] = field(default_factory=list)
    label_delay_s: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    latency_ms: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    dead_letters: dict[str, int] = field(default_factory=dict)
    generated_at: str = ""
    #: predictions on the topic for other model names (a report of the wrong model is empty)
    other_models: dict[str, int] = field(default_factory=dict)


def read_topic(
    settings: Settings, role: TopicRole, payload: type[BaseModel], idle_s: float = 1.0
) -> Iterator[tuple[float, Any]]:
    """(message time in seconds, payload) of each message on a topic, until it is quiet.

    A message that is not the payload is skipped. Quiet, not the end offsets: the embedded
    broker's reported high watermark can lag behind what it holds.
    """
    topic = Topics(settings.topic_prefix)(role)
    for at, value in follow_messages(settings, topic, from_beginning=True, idle_exit_s=idle_s):
        try:
            yield at, payload.model_validate_json(value)
        except ValidationError:
            continue


def _spacing(count: int) -> tuple[int, int]:
    """(step, window): a point every ``step`` predictions, over the ``window`` before it.

    The window is a twentieth of the stream (50 to 500 predictions), so a point stands on
    enough labels not to be noise, and a change still shows where it happened.
    """
    step = max(1, -(-count // POINTS))
    return step, max(step, min(500, max(50, count // 20)))


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def collect(settings: Settings, idle_s: float = 1.0) -> ReportData:
    """Read the topics and the leaderboard history into what the report draws."""
    try:
        task = FeatureSchema.load(settings.ingest.feature_schema).target.type
    except Exception:
        task = "binary"
    regression = task == "regression"
    data = ReportData(
        settings.model_name,
        task,
        "mean absolute error" if regression else "accuracy",
        generated_at=datetime.now().astimezone().isoformat(timespec="seconds"),
    )
    served: dict[str, tuple[int, Prediction]] = {}
    others: Counter[str] = Counter()
    for _at, prediction in read_topic(settings, "predictions", Prediction, idle_s):
        if prediction.model_name != settings.model_name:
            others[prediction.model_name] += 1
        elif prediction.event_id not in served:
            served[prediction.event_id] = (len(served), prediction)
    data.other_models = dict(others)
    data.predictions = len(served)
    by_time = sorted((p.served_at.timestamp(), i) for i, p in served.values())

    def position(moment: float) -> int:
        """The first prediction served at or after ``moment`` (the end if none)."""
        at = bisect.bisect_left(by_time, (moment, -1))
        return by_time[at][1] if at < len(by_time) else len(served)

    ingested = {
        event.event_id: event.ingested_at.timestamp()
        for _at, event in read_topic(settings, "features", FeatureEvent, idle_s)
        if event.event_id in served
    }
    examples: list[tuple[int, float, float]] = []  # (position, score, label delay s)
    for arrived, example in read_topic(settings, "training_examples", TrainingExample, idle_s):
        found = served.get(example.event_id)
        if found is None or found[1].prediction is None:
            continue
        index, prediction = found
        if regression:
            guess: Any = prediction.prediction
            score = abs(float(guess) - float(example.label))
        else:
            score = float(prediction.prediction == example.label)
        examples.append((index, score, max(arrived - prediction.served_at.timestamp(), 0.0)))
    examples.sort()
    data.labelled = len({i for i, _, _ in examples})
    if examples:
        data.overall_score = statistics.fmean(s for _, s, _ in examples)
    step, window = _spacing(data.predictions)
    ends = [e for e in range(min(window, data.predictions), data.predictions + 1, step) if e]
    data.served = [
        (end, statistics.fmean(scores))
        for end, scores in _trailing([(i, s) for i, s, _ in examples], ends, window)
        if scores
    ]
    labelled = sorted({(i, 1.0) for i, _, _ in examples})
    data.coverage = [
        (end, len(hits) / min(window, end)) for end, hits in _trailing(labelled, ends, window)
    ]
    data.label_delay_s = _percentiles([(i, d) for i, _, d in examples], ends, window, (50, 90))
    latencies = [
        (i, (p.served_at.timestamp() - ingested[e]) * 1000)
        for e, (i, p) in served.items()
        if e in ingested
    ]
    data.latency_ms = _percentiles(sorted(latencies), ends, window, (50, 95, 99))
    first_by_version: dict[int, int] = {}
    for index, prediction in served.values():
        first_by_version.setdefault(prediction.model_version, index)
    for _at, version in read_topic(settings, "models", ModelVersion, idle_s):
        if version.model_name == settings.model_name and version.version in first_by_version:
            data.versions.append(
                (first_by_version[version.version], f"v{version.version} {version.trigger}")
            )
    data.versions.sort()
    for _at, event in read_topic(settings, "drift", DriftEvent, idle_s):
        if event.model_name == settings.model_name:
            data.drift.append((position(event.detected_at.timestamp()), f"{event.kind} drift"))
    data.dead_letters = dict(
        Counter(letter.reason for _at, letter in read_topic(settings, "dlq", DeadLetter, idle_s))
    )
    data.leaderboard_metric, data.leaderboard = _leaderboard(settings)
    return data


def _trailing(
    values: list[tuple[int, float]], ends: list[int], window: int
) -> Iterator[tuple[int, list[float]]]:
    """For each end, the values at positions in [end - window, end); ``values`` sorted."""
    positions = [i for i, _ in values]
    for end in ends:
        low = bisect.bisect_left(positions, end - window)
        high = bisect.bisect_left(positions, end)
        yield end, [v for _, v in values[low:high]]


def _percentiles(
    values: list[tuple[int, float]], ends: list[int], window: int, quantiles: Sequence[int]
) -> dict[str, list[tuple[int, float]]]:
    """Percentiles of the values over each trailing window, by name (``p50``)."""
    windows = [(end, chunk) for end, chunk in _trailing(values, ends, window) if chunk]
    return {f"p{q}": [(end, _percentile(chunk, q)) for end, chunk in windows] for q in quantiles}


def _leaderboard(settings: Settings) -> tuple[str, dict[str, list[tuple[int, float]]]]:
    """Each candidate's score by examples learned, from training's history in Redis."""
    key = leaderboard_history_key(settings.topic_prefix, settings.model_name)
    try:
        raw = connect_redis(settings).lrange(key, 0, -1)
    except Exception:
        return "", {}
    metric = ""
    board: dict[str, list[tuple[int, float]]] = {}
    for item in raw:
        point = json.loads(item)
        metric = point.get("metric", metric)
        for name, score in point["scores"].items():
            if score is not None:
                board.setdefault(name, []).append((int(point["examples"]), float(score)))
    return metric, board


STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 800px; color: #222;
       padding: 0 1rem; }
h1 { font-size: 1.5rem; margin-bottom: .2rem; } .sub { color: #666; margin-top: 0; }
table.facts { border-collapse: collapse; margin: 1rem 0 1.5rem; }
table.facts td { padding: .15rem 1.2rem .15rem 0; } table.facts td:first-child { color: #666; }
figure { margin: 0 0 1.6rem; } figcaption { color: #555; font-size: .9rem; }
svg.chart { width: 100%; height: auto; background: #fff; }
svg text { font: 11px system-ui, sans-serif; fill: #444; }
svg text.title { font-size: 13px; font-weight: 600; fill: #222; }
svg line.grid { stroke: #e6e6e6; } svg text.empty { fill: #888; }
"""


def render(data: ReportData) -> str:
    """The report as one self-contained HTML page."""
    percent = data.score_name == "accuracy"
    # scheduled versions come every few hundred examples: marking each would hide the curve
    marked = [(x, label) for x, label in data.versions if not label.endswith(" scheduled")]
    markers = [Marker(x, label, "version") for x, label in marked] + [
        Marker(x, label, "drift") for x, label in data.drift
    ]
    scheduled = len(data.versions) - len(marked)

    def fmt(value: float | None) -> str:
        if value is None:
            return "-"
        return f"{value * 100:.1f}%" if percent else f"{value:.4g}"

    facts = [
        ("model", data.model_name),
        ("target", data.task),
        ("predictions served", f"{data.predictions:,}"),
        ("with a label", f"{data.labelled:,}"),
        (f"served {data.score_name}", fmt(data.overall_score)),
        ("versions served", f"{len(data.versions):,} ({scheduled:,} scheduled)"),
        ("drift events", f"{len(data.drift):,}"),
        ("dead letters", f"{sum(data.dead_letters.values()):,}"),
    ]
    charts = [
        (
            line_chart(
                f"Served {data.score_name} over the stream",
                {data.score_name: data.served},
                markers,
                "predictions served",
                data.score_name,
                y_percent=percent,
                y_from_zero=True,
            ),
            "Over the predictions before each point, against the labels that came back; dashed "
            "lines mark drift events (orange) and the first prediction of each version that was "
            "not a scheduled one (grey: initial, drift, selection, promote, rollback...).",
        ),
        (
            line_chart(
                "Leaderboard over time",
                data.leaderboard,
                (),
                "examples learned",
                data.leaderboard_metric,
                y_percent=data.leaderboard_metric in ("accuracy", "macro_f1"),
            ),
            "Each candidate's score over training's recent window (test-then-train).",
        ),
        (
            line_chart(
                "Label coverage",
                {"labelled": data.coverage},
                (),
                "predictions served",
                "share labelled",
                y_percent=True,
            ),
            "The share of each window's predictions whose label came back and was joined.",
        ),
        (
            line_chart(
                "Label delay",
                data.label_delay_s,
                (),
                "predictions served",
                "seconds",
                y_from_zero=True,
            ),
            "From the prediction to its training example, over the predictions before each point.",
        ),
        (
            line_chart(
                "Latency, ingest to prediction",
                data.latency_ms,
                (),
                "predictions served",
                "ms",
                y_from_zero=True,
            ),
            "From the moment ingest accepted the event to the moment serving answered.",
        ),
        (
            bar_chart("Dead letters by reason", data.dead_letters),
            "Inputs refused on events.dlq; `eddy dlq list` shows them, `eddy dlq replay` "
            "sends them back after a fix.",
        ),
    ]
    rows = "".join(f"<tr><td>{escape(k)}</td><td>{escape(v)}</td></tr>" for k, v in facts)
    figures = "".join(
        f"<figure>{svg}<figcaption>{escape(caption)}</figcaption></figure>"
        for svg, caption in charts
    )
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>Eddy report: {escape(data.model_name)}</title><style>{STYLE}</style></head>"
        f"<body><h1>Eddy report: {escape(data.model_name)}</h1>"
        f"<p class='sub'>{escape(data.generated_at)}</p>"
        f"<table class='facts'>{rows}</table>{figures}</body></html>"
    )


def write_report(settings: Settings, path: Path, idle_s: float = 1.0) -> ReportData:
    """Collect, render and write the report to ``path``; what it shows."""
    data = collect(settings, idle_s)
    path.write_text(render(data), encoding="utf-8")
    return data


def as_json(data: ReportData) -> str:
    """The report's data as JSON (``eddy report --json``)."""
    return json.dumps(asdict(data), indent=2)
