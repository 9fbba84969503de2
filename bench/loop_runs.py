"""What the served-score and drift-reaction scenarios share: the whole loop played per stream.

Each stream runs through the five service processes with ``LoopRun`` (as ``eddy demo`` does):
events at a fixed rate, each label fed back 100 events late, no malformed events, default
settings. Its reports are kept for the rest of the bench run, so that the drift-reaction
scenario reads the same runs the served-score scenario made instead of playing every stream
twice. The baselines are River in this process: the same model test-then-train on the same rows
in the same order, with the labels as late (``in_process_score``), or seeing each at once
(``prequential_hits``, for the drift reaction).
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass, replace

from bench.harness import Context
from eddy.demo import LoopReport, LoopRun, Scenario
from eddy.replay import in_process_predictions, score
from schemas.models import ModelSpec
from services.core.datasets import loop_stream, rows_available
from services.core.feature_schema import FeatureSchema
from services.core.model_specs import baseline_spec, build_model, load_specs

#: Events per second of every loop run (the demo's rate).
RATE = 400.0


@dataclass(frozen=True)
class LoopStream:
    """One stream played through the loop, with the candidates training races on it."""

    label: str
    scenario: Scenario
    #: EDDY_TRAINING__MODELS: "auto" (one default model) or a models file of candidates
    models: str = "auto"

    @property
    def cadence(self) -> str:
        """How it was played, for a figure's note."""
        s = self.scenario
        return (
            f"{s.events:,} events at {s.rate:.0f}/s, labels {s.label_delay} events late, "
            "default settings"
        )

    def with_candidates(self) -> LoopStream:
        """The same stream, training racing three candidates of its task (infra/models/)."""
        task = FeatureSchema.load(self.scenario.stream).target.type
        return replace(self, label=f"{self.label} (selection)", models=task)


def loop_streams(quick: bool) -> list[LoopStream]:
    """Every stream with one default model: drifting ones first (halfway; gradual over 1,000).

    Binary (SEA, Agrawal, Bananas, Phishing), multi-class (LED, ImageSegments) and regression
    (Friedman, TrumpApproval); every label 100 events late.
    """
    events = 6000 if quick else 8000

    def played(name: str, count: int, drift_at: int | None = None, width: int = 0) -> Scenario:
        return Scenario(
            events=count,
            drift_at=drift_at,
            drift_width=width,
            rate=RATE,
            label_delay=100,
            bad_every=0,
            stream=name,
        )

    drifting = [
        LoopStream(f"{title} {kind}", played(name, events, events // 2, width))
        for name, title in (("sea", "SEA"), ("agrawal", "Agrawal"))
        for kind, width in (("abrupt", 0), ("gradual", 1000))
    ]
    drifting += [
        LoopStream(f"{title} abrupt", played(name, events, events // 2))
        for name, title in (("led", "LED"), ("friedman", "Friedman"))
    ]
    real = [
        LoopStream(title, played(name, rows_available(name) or 0))
        for name, title in (
            ("bananas", "Bananas"),
            ("phishing", "Phishing"),
            ("segments", "ImageSegments"),
            ("trump", "TrumpApproval"),
        )
    ]
    return drifting + real


_reports: dict[int, tuple[Context, dict[str, list[LoopReport]]]] = {}


def loop_reports(ctx: Context, stream: LoopStream) -> list[LoopReport]:
    """``ctx.repeats`` runs of the loop on ``stream``, made once per bench run."""
    _ctx, cache = _reports.setdefault(id(ctx), (ctx, {}))
    if stream.label not in cache:
        reports = []
        for i in range(ctx.repeats):
            started = time.monotonic()
            with ctx.own_servers():
                base = ctx.settings(model_name=stream.scenario.stream)
                settings = base.model_copy(
                    update={
                        "ingest": base.ingest.model_copy(
                            update={"feature_schema": stream.scenario.stream}
                        ),
                        "training": base.training.model_copy(update={"models": stream.models}),
                    }
                )
                workdir = ctx.workdir / f"loop-{uuid.uuid4().hex[:6]}"
                workdir.mkdir(parents=True)
                report = LoopRun(settings, stream.scenario, workdir, _quiet).run()
            reports.append(report)
            ctx.progress(
                f"   {stream.label} run {i + 1}: {len(report.predictions):,} predictions, "
                f"served {served_score(report):.3f}, "
                f"{len(report.drift_events)} drift events, {len(report.versions)} versions "
                f"({time.monotonic() - started:.0f} s)"
            )
        cache[stream.label] = reports
    return cache[stream.label]


def _quiet(_line: str) -> None:
    """LoopRun's live lines are for people watching the demo, not for the bench log."""


def served_hits(report: LoopReport) -> list[bool | None]:
    """Per event index: whether the served prediction was right (None: nothing served)."""
    hits: list[bool | None] = [None] * report.scenario.events
    for event_id, prediction in report.predictions.items():
        hits[report.index[event_id]] = prediction.prediction == report.labels[event_id]
    return hits


def served_accuracy(report: LoopReport, first: int = 0) -> float:
    """Accuracy of the served predictions from event ``first`` on (unserved events count wrong)."""
    hits = served_hits(report)[first:]
    return sum(bool(h) for h in hits) / len(hits)


def is_regression(stream: LoopStream) -> bool:
    """True for a stream whose labels are numbers (scored by MAE, lower is better)."""
    return FeatureSchema.load(stream.scenario.stream).target.type == "regression"


def served_score(report: LoopReport) -> float:
    """Accuracy of what was served (an unserved event counts wrong), or its MAE for numbers."""
    labels = list(report.labels.values())
    if labels and isinstance(labels[0], float):
        errors = [
            abs(float(p.prediction) - float(report.labels[e]))
            for e, p in report.predictions.items()
            if p.prediction is not None
        ]
        return sum(errors) / len(errors) if errors else math.inf
    return served_accuracy(report)


def in_process_score(stream: LoopStream, spec: ModelSpec) -> float:
    """The spec's model test-then-train in this process on the same rows, labels as late.

    The same delay as the loop's: each label is learned ``label_delay`` events after its event
    was predicted, so the figure isolates what the loop itself costs.
    """
    s = stream.scenario
    schema = FeatureSchema.load(s.stream)
    rows = loop_stream(s.stream, s.events, s.drift_at, s.drift_width, s.seed)
    predictions = in_process_predictions(rows, schema, spec, s.label_delay)
    value = score(
        schema.target.is_classification, list(zip(predictions, [y for _x, y in rows], strict=True))
    )
    return math.inf if value is None else value


def candidate_specs(stream: LoopStream) -> list[ModelSpec]:
    """The candidates training races on ``stream``, the no-change baseline included."""
    schema = FeatureSchema.load(stream.scenario.stream)
    return [*load_specs(stream.models, schema), baseline_spec(schema)]


def prequential_hits(stream: LoopStream) -> list[bool]:
    """Per event: whether the default model, test-then-train in this process, was right."""
    s = stream.scenario
    schema = FeatureSchema.load(s.stream)
    model = build_model(load_specs("auto", schema)[0], schema)
    hits = []
    for features, label in loop_stream(s.stream, s.events, s.drift_at, s.drift_width, s.seed):
        hits.append(model.predict_one(features) == label)
        model.learn_one(features, label)
    return hits
