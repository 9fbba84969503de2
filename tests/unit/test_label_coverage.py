"""Label coverage: judged in event time over matured predictions, at most once per cool-down."""

from __future__ import annotations

from itertools import pairwise

from services.monitoring.coverage import LabelCoverage


def coverage() -> LabelCoverage:
    return LabelCoverage(horizon_s=60, window_s=300, minimum=0.5, cooldown_s=600)


def test_nothing_is_judged_before_predictions_mature() -> None:
    watch = coverage()
    for t in range(0, 50):
        watch.predicted_at(1000.0 + t)
    assert watch.value() is None and watch.check() is None


def test_full_coverage_raises_nothing() -> None:
    watch = coverage()
    for t in range(0, 400):
        watch.predicted_at(1000.0 + t)
        watch.labeled_at(1000.0 + t)
    value = watch.value()
    assert value is not None and value[0] == 1.0
    assert watch.check() is None


def test_labels_that_stop_coming_raise_one_finding_per_cooldown() -> None:
    watch = coverage()
    found = []
    for t in range(0, 2000):
        watch.predicted_at(1000.0 + t)
        if t < 500:
            watch.labeled_at(1000.0 + t)
        finding = watch.check()
        if finding is not None:
            found.append((t, finding))
    assert [t for t, _f in found][:1] and found[0][1].after < 0.5
    times = [t for t, _f in found]
    assert all(b - a >= 600 for a, b in pairwise(times))


def test_event_time_not_wall_time_decides_maturity() -> None:
    watch = coverage()
    for t in range(0, 400):  # events from long ago, replayed now, all labelled
        watch.predicted_at(10.0 + t)
        watch.labeled_at(10.0 + t)
    assert watch.check() is None
