"""Drift reaction: how fast the loop notices a known drift and serves a model that fits again.

Reads the loop runs that the served-score scenario made (``bench.loop_runs``) for the
classification streams with a known drift position: SEA and Agrawal, abrupt and gradual, and
LED. Per stream:

- events from the drift to the first drift event the loop published at or after it, against
  the same detector (monitoring's ``DriftWatch`` with the default settings) watching the error
  stream of River's model test-then-train in this process, which sees each label at once;
- seconds from that drift event to the first prediction served by the version trained in
  reaction to it (no baseline: in-process there is nothing to ship);
- events from the drift until served accuracy over a trailing window is back within 2 points
  of the level the in-process model settles at on the new concept, against the events the
  in-process model itself needs to get there.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from bench.harness import Context, Figure, median_figure
from bench.loop_runs import (
    LoopStream,
    is_regression,
    loop_reports,
    loop_streams,
    prequential_hits,
    served_hits,
)
from eddy.demo import LoopReport
from services.core.settings import MonitoringSettings
from services.monitoring.detectors import DriftWatch
from services.monitoring.service import ERROR_SUBJECT

SCENARIO = "drift reaction"
#: Events in the trailing window whose accuracy must be back within ``TOLERANCE``.
WINDOW = 300
TOLERANCE = 0.02


def settled_accuracy(hits: Sequence[bool | None]) -> float:
    """Accuracy over the last quarter of a stream: the level a model settles at after a drift."""
    tail = hits[len(hits) * 3 // 4 :]
    return sum(bool(h) for h in tail) / len(tail)


def events_to_recover(hits: Sequence[bool | None], drift_at: int, level: float) -> int | None:
    """Events from ``drift_at`` until the trailing ``WINDOW`` is within ``TOLERANCE`` of ``level``.

    Only windows that lie wholly after the drift count, so the answer is at least ``WINDOW``;
    unserved events count as wrong. None if it never gets there.

    After 400 misses, the first window with at most 6 misses (2 points of 300) ends 694 events
    after the drift:

    >>> events_to_recover([True] * 10 + [False] * 400 + [True] * 600, 10, 1.0)
    694
    """
    correct = sum(bool(h) for h in hits[drift_at : drift_at + WINDOW])
    for end in range(drift_at + WINDOW, len(hits) + 1):
        if correct / WINDOW >= level - TOLERANCE:
            return end - drift_at
        if end < len(hits):
            correct += bool(hits[end]) - bool(hits[end - WINDOW])
    return None


def in_process_detection(hits: Sequence[bool], drift_at: int) -> int | None:
    """Events from ``drift_at`` until monitoring's concept detector fires on in-process errors."""
    config = MonitoringSettings()
    watch = DriftWatch(
        ERROR_SUBJECT,
        config.concept_delta,
        min_events=config.min_events,
        cooldown_events=config.concept_cooldown_events,
        direction="up",
    )
    for i, hit in enumerate(hits):
        if watch.update(0.0 if hit else 1.0) is not None and i >= drift_at:
            return i - drift_at
    return None


def served_detection(report: LoopReport, drift_at: int) -> int | None:
    """Events from ``drift_at`` to the first drift event the loop published at or after it."""
    return next((at - drift_at for at, _event in report.drift_events if at >= drift_at), None)


def seconds_to_serve(report: LoopReport, drift_at: int) -> float | None:
    """Seconds from the first drift event after the drift to its version's first prediction."""
    event = next((e for at, e in report.drift_events if at >= drift_at), None)
    if event is None:
        return None
    version = next((v for _at, v in report.versions if v.drift_event_id == event.drift_id), None)
    served_at = None if version is None else report.first_served_at(version.version)
    return None if served_at is None else (served_at - event.detected_at).total_seconds()


def _figure(
    stream: LoopStream,
    name: str,
    unit: str,
    runs: Sequence[float | None],
    baseline: float | None = None,
    note: str = "",
) -> Figure:
    """A median over the runs that reached the figure; the others are counted in the note."""
    reached = [r for r in runs if r is not None]
    missing = len(runs) - len(reached)
    note = "; ".join(
        part
        for part in (note, f"not reached in {missing} of {len(runs)} runs" if missing else "")
        if part
    )
    if not reached:
        return Figure(SCENARIO, f"{stream.label}: {name}", float("nan"), unit, note=note, met=False)
    return median_figure(
        SCENARIO,
        f"{stream.label}: {name}",
        unit,
        reached,
        None if baseline is None else [baseline],
        note=note,
    )


def run(ctx: Context) -> list[Figure]:
    """Per drifting stream: detection delay, time to serve the reaction, events to recover."""
    figures = []
    for stream in loop_streams(ctx.quick):
        drift_at = stream.scenario.drift_at
        if drift_at is None or is_regression(stream):
            continue
        reports = loop_reports(ctx, stream)
        in_process = prequential_hits(stream)
        level = settled_accuracy(in_process)
        baseline_recovery = events_to_recover(in_process, drift_at, level)
        served = [served_hits(report) for report in reports]
        early = statistics.median(
            sum(at < drift_at for at, _e in report.drift_events) for report in reports
        )
        figures += [
            _figure(
                stream,
                "events from drift to drift event",
                "events",
                [served_detection(report, drift_at) for report in reports],
                in_process_detection(in_process, drift_at),
                note=f"baseline: the same detector on in-process errors, which sees each label "
                f"at once (the loop: {stream.scenario.label_delay} events late); "
                f"median drift events before the drift: {early:g}",
            ),
            _figure(
                stream,
                "s from drift event to its version serving",
                "s",
                [seconds_to_serve(report, drift_at) for report in reports],
                note="training waits for twice the validation window of new examples first; "
                "a run whose candidate lost its validation has no such version",
            ),
            _figure(
                stream,
                f"events from drift to served accuracy within {TOLERANCE:.0%}",
                "events",
                [events_to_recover(hits, drift_at, level) for hits in served],
                baseline_recovery,
                note=f"level: in-process accuracy over the last quarter, {level:.1%}; "
                f"trailing window of {WINDOW}; baseline: the in-process model's own recovery",
            ),
        ]
    return figures
