"""What the served-accuracy and drift-reaction scenarios share: the whole loop played per stream.

Each stream runs through the five service processes with ``LoopRun`` (as ``eddy demo`` does):
events at a fixed rate, each label fed back a fixed number of events late, no malformed events.
Its reports are kept for the rest of the bench run, so that the drift-reaction scenario reads
the same runs the served-accuracy scenario made instead of playing every stream twice. The
baseline is River in this process: the same default model, test-then-train on the same rows
in the same order (prequential).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from bench.harness import Context
from services.core.datasets import default_classifier, loop_stream
from services.core.demo import LoopReport, LoopRun, Scenario, loop_settings

#: Events per second of every loop run (the demo's rate).
RATE = 400.0


@dataclass(frozen=True)
class LoopStream:
    """One stream played through the loop, and the cadence a user would choose for it."""

    label: str
    scenario: Scenario
    publish_every: int
    validation_window: int = 100

    @property
    def cadence(self) -> str:
        """How it was played, for a figure's note."""
        s = self.scenario
        return (
            f"{s.events:,} events at {s.rate:.0f}/s, labels {s.label_delay} events late, "
            f"a version every {self.publish_every} examples"
        )


def loop_streams(quick: bool) -> list[LoopStream]:
    """The streams, drifting ones first (their drift is halfway, gradual ones over 1,000 events)."""
    events = 6000 if quick else 8000
    drifting = [
        LoopStream(
            f"{title} {kind}",
            Scenario(
                events=events,
                drift_at=events // 2,
                drift_width=width,
                rate=RATE,
                label_delay=100,
                bad_every=0,
                stream=name,
            ),
            publish_every=500,
        )
        for name, title in (("sea", "SEA"), ("agrawal", "Agrawal"))
        for kind, width in (("abrupt", 0), ("gradual", 1000))
    ]
    # The real datasets are short: versions come more often, so that little of the stream is
    # served by a model far behind the labels it could have learned.
    real = [
        LoopStream(
            "Bananas",
            Scenario(
                events=5300, drift_at=None, rate=RATE, label_delay=50, bad_every=0, stream="bananas"
            ),
            publish_every=200,
        ),
        LoopStream(
            "Phishing",
            Scenario(
                events=1250,
                drift_at=None,
                rate=RATE,
                label_delay=20,
                bad_every=0,
                stream="phishing",
            ),
            publish_every=50,
        ),
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
                settings = loop_settings(
                    ctx.settings(model_name=stream.scenario.stream),
                    feature_schema=stream.scenario.stream,
                    publish_every=stream.publish_every,
                    validation_window=stream.validation_window,
                )
                workdir = ctx.workdir / f"loop-{uuid.uuid4().hex[:6]}"
                workdir.mkdir(parents=True)
                report = LoopRun(settings, stream.scenario, workdir, _quiet).run()
            reports.append(report)
            ctx.progress(
                f"   {stream.label} run {i + 1}: {len(report.predictions):,} predictions, "
                f"served accuracy {served_accuracy(report):.3f}, "
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


def prequential_hits(stream: LoopStream) -> list[bool]:
    """Per event: whether River's default model, test-then-train in this process, was right."""
    s = stream.scenario
    model = default_classifier()
    hits = []
    for features, label in loop_stream(s.stream, s.events, s.drift_at, s.drift_width, s.seed):
        hits.append(model.predict_one(features) == label)
        model.learn_one(features, label)
    return hits
