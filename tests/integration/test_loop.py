"""The whole loop, five service processes on the real embedded broker and Redis.

A stream with an abrupt concept drift must produce a drift event, a drift-triggered version
that serving switches to, and served accuracy back within 5 points of its pre-drift level; a
stationary stream of the same length must produce no drift event.
"""

from __future__ import annotations

from pathlib import Path

from eddy.demo import LoopRun, Scenario, loop_settings
from services.core.settings import Settings

EVENTS, DRIFT_AT = 6000, 3000


def test_an_abrupt_concept_drift_is_detected_retrained_for_and_served_around(
    settings: Settings, tmp_path: Path
) -> None:
    scenario = Scenario(events=EVENTS, drift_at=DRIFT_AT, rate=400, bad_every=0)
    report = LoopRun(loop_settings(settings), scenario, tmp_path, print).run()
    print("\n".join(report.summary()))

    assert len(report.predictions) == EVENTS, "an event got no prediction"
    kinds = [(event.kind, event.subject) for _at, event in report.drift_events]
    assert ("concept", "error") in kinds
    assert all(at >= DRIFT_AT for at, _event in report.drift_events), (
        "a drift event before the drift"
    )
    version = report.drift_version()
    assert version is not None, "no version was published in reaction to the drift event"
    assert version.drift_event_id == report.drift_events[0][1].drift_id
    assert report.first_served_by(version.version) is not None, "serving never switched to it"
    before = report.accuracy(DRIFT_AT - 1000, DRIFT_AT)
    recovered = report.recovered_accuracy()
    assert before is not None and recovered is not None
    assert recovered >= before - 0.05, f"served accuracy {recovered:.3f} vs {before:.3f} before"


def test_a_stationary_stream_of_the_same_length_raises_no_drift_event(
    settings: Settings, tmp_path: Path
) -> None:
    scenario = Scenario(events=EVENTS, drift_at=None, rate=400, bad_every=0)
    report = LoopRun(loop_settings(settings), scenario, tmp_path, print).run()
    print("\n".join(report.summary()))

    assert len(report.predictions) == EVENTS
    assert report.drift_events == []
    assert all(v.trigger in ("initial", "scheduled") for _at, v in report.versions)


def test_a_multiclass_stream_with_a_drift_is_served_joined_and_retrained_for(
    settings: Settings, tmp_path: Path
) -> None:
    # LED digits: ten classes; at the drift seven attributes swap roles
    scenario = Scenario(events=EVENTS, drift_at=DRIFT_AT, rate=400, bad_every=0, stream="led")
    configured = loop_settings(settings, feature_schema="led")
    report = LoopRun(configured, scenario, tmp_path, print).run()
    print("\n".join(report.summary()))

    assert len(report.predictions) == EVENTS
    trained = {p.prediction for p in report.predictions.values() if p.model_version > 1}
    assert trained <= set(range(10))  # the untrained first version answers None
    concept = [at for at, e in report.drift_events if e.kind == "concept"]
    assert concept and min(concept) >= DRIFT_AT, f"concept drift events at {concept}"
    version = report.drift_version()
    assert version is not None, f"no drift version among {[v.trigger for _a, v in report.versions]}"
    assert version.task == "multiclass"
    assert report.first_served_by(version.version) is not None, "serving never switched to it"
    assert (report.accuracy(DRIFT_AT - 1000, DRIFT_AT) or 0) > 0.5  # ten classes: 0.1 by chance


def test_a_regression_stream_with_a_drift_is_served_joined_and_watched(
    settings: Settings, tmp_path: Path
) -> None:
    # Friedman #1: a number; at the drift its function changes
    scenario = Scenario(events=EVENTS, drift_at=DRIFT_AT, rate=400, bad_every=0, stream="friedman")
    configured = loop_settings(settings, feature_schema="friedman")
    # a false alarm just before the change must not hold back the detection after it: the
    # detector rests 200 labelled events after an event here instead of 1,000
    monitoring = configured.monitoring.model_copy(update={"concept_cooldown_events": 200})
    configured = configured.model_copy(update={"monitoring": monitoring})
    report = LoopRun(configured, scenario, tmp_path, print).run()

    assert len(report.predictions) == EVENTS
    errors = [
        abs(float(p.prediction) - float(report.labels[e]))  # type: ignore[arg-type]
        for e, p in report.predictions.items()
        if DRIFT_AT - 1000 <= report.index[e] < DRIFT_AT
    ]
    assert sum(errors) / len(errors) < 3.5  # the labels spread over about 0-30
    concept = [at for at, e in report.drift_events if e.kind == "concept"]
    # The served error moves as versions swap in, at points the loop's timing decides, and a
    # regression error is heavy-tailed: false alarms just before the change were seen (at events
    # 2,949 and 2,964 of a change at 3,000). One is tolerated; a detection after the change is
    # required.
    assert [at for at in concept if at >= DRIFT_AT], f"concept drift events at {concept}"
    assert len([at for at in concept if at < DRIFT_AT]) <= 1, f"concept drift events at {concept}"
    assert all(v.task == "regression" for _at, v in report.versions)
