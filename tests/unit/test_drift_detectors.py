"""Drift watches and KPIs on synthetic, seeded streams: when they fire, and when they must not.

Measured with the default settings (MonitoringSettings) when these tests were written, seeds
0-49: an error rate jump 0.05 -> 0.40 is found 39 to 103 events after the change (median 39); a
3 std shift of a feature's mean 7 to 39 events after it (median 7); no false alarm in 50 x 20,000
stationary events for either watch. The bounds asserted below leave room around those figures.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from river.datasets import synth
from river.tree import HoeffdingTreeClassifier

from services.core.settings import MonitoringSettings
from services.monitoring.detectors import DriftWatch, Finding, RollingAccuracy

DEFAULTS = MonitoringSettings()
SEEDS = range(5)
#: The detection delay the concept watch must meet after an abrupt jump of the error rate.
CONCEPT_DELAY_BOUND = 300
#: The detection delay the data watch must meet after a 3 std shift of a feature's mean.
DATA_DELAY_BOUND = 100


def concept_watch(
    min_events: int = DEFAULTS.min_events, cooldown_events: int = DEFAULTS.concept_cooldown_events
) -> DriftWatch:
    """The watch the service puts on the error stream, with the default settings."""
    return DriftWatch(
        "error",
        DEFAULTS.concept_delta,
        min_events=min_events,
        cooldown_events=cooldown_events,
        direction="up",
    )


def data_watch(
    min_events: int = DEFAULTS.min_events, cooldown_events: int = DEFAULTS.concept_cooldown_events
) -> DriftWatch:
    """The watch the service puts on each numeric feature, with the default settings."""
    return DriftWatch(
        "amount",
        DEFAULTS.data_delta,
        min_events=min_events,
        cooldown_events=cooldown_events,
        direction="both",
        scale="std",
    )


def errors(seed: int, *segments: tuple[int, float]) -> list[float]:
    """A 0/1 error stream: ``(length, error rate)`` segments, one after the other."""
    rng = random.Random(seed)
    return [float(rng.random() < rate) for length, rate in segments for _ in range(length)]


def gaussian(seed: int, *segments: tuple[int, float, float]) -> list[float]:
    """A feature stream: ``(length, mean, std)`` segments, one after the other."""
    rng = random.Random(seed)
    return [rng.gauss(mean, std) for length, mean, std in segments for _ in range(length)]


def findings(watch: DriftWatch, stream: Iterable[float]) -> list[tuple[int, Finding]]:
    """(index in the stream, finding) for every finding the watch gives."""
    return [(i, found) for i, x in enumerate(stream) if (found := watch.update(x)) is not None]


@pytest.mark.parametrize("seed", SEEDS)
def test_an_error_rate_jump_from_5_to_40_percent_fires_one_concept_finding_within_300_events(
    seed: int,
) -> None:
    stream = errors(seed, (3000, 0.05), (3000, 0.40))
    found = findings(concept_watch(), stream)
    assert len(found) == 1, found
    index, finding = found[0]
    assert 3000 <= index <= 3000 + CONCEPT_DELAY_BOUND
    assert finding.subject == "error" and finding.detector.startswith("ADWIN")
    assert finding.before == pytest.approx(0.05, abs=0.03)
    assert finding.after == pytest.approx(0.40, abs=0.15)
    assert finding.magnitude == pytest.approx(finding.after - finding.before)
    assert finding.window > 0 and finding.recent <= index - 3000 + 50


@pytest.mark.parametrize("seed", SEEDS)
def test_a_stationary_10_percent_error_stream_gives_no_false_alarm_in_20000_events(
    seed: int,
) -> None:
    assert findings(concept_watch(), errors(seed, (20_000, 0.10))) == []


@pytest.mark.parametrize("seed", SEEDS)
def test_an_error_rate_drop_after_a_retrain_is_not_an_alarm(seed: int) -> None:
    stream = errors(seed, (3000, 0.40), (3000, 0.05))
    assert findings(concept_watch(), stream) == []
    either_way = DriftWatch(
        "error", DEFAULTS.concept_delta, min_events=200, cooldown_events=1000, direction="both"
    )
    dropped = findings(either_way, stream)
    assert len(dropped) == 1 and dropped[0][1].after < dropped[0][1].before, (
        "the drop must be detected, so that only the direction rule keeps it quiet"
    )


def test_a_model_on_agrawal_whose_concept_changes_fires_one_concept_finding_after_the_change() -> (
    None
):
    change_at = 5000
    stream = synth.ConceptDriftStream(
        stream=synth.Agrawal(classification_function=0, seed=7),
        drift_stream=synth.Agrawal(classification_function=2, seed=7),
        position=change_at,
        width=100,  # River overflows math.exp when position / width is much above 170
        seed=7,
    )
    model: Any = HoeffdingTreeClassifier()  # River ships no annotations
    watch = concept_watch()
    fired = []
    for i, (x, y) in enumerate(stream.take(8000)):
        if (found := watch.update(float(model.predict_one(x) != y))) is not None:
            fired.append((i, found))
        model.learn_one(x, y)
    assert [i for i, _ in fired] and len(fired) == 1, fired
    index, finding = fired[0]
    assert change_at - 100 <= index <= change_at + CONCEPT_DELAY_BOUND
    assert finding.after > finding.before


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shift", [3.0, -3.0])
def test_a_3_std_shift_of_a_feature_mean_fires_one_data_finding_within_100_events_in_std_units(
    seed: int, shift: float
) -> None:
    stream = gaussian(seed, (3000, 50.0, 10.0), (3000, 50.0 + shift * 10.0, 10.0))
    found = findings(data_watch(), stream)
    assert len(found) == 1, found
    index, finding = found[0]
    assert 3000 <= index <= 3000 + DATA_DELAY_BOUND
    assert finding.magnitude == pytest.approx(shift, abs=1.0)


STATIONARY_FEATURES: dict[str, Callable[[random.Random], float]] = {
    "gaussian": lambda rng: rng.gauss(50.0, 10.0),
    "large and narrow": lambda rng: rng.gauss(1e6, 0.5),
    "skewed": lambda rng: rng.expovariate(0.1),
    "counts": lambda rng: float(rng.randint(0, 5)),
    "flag": lambda rng: float(rng.random() < 0.3),
}


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape", sorted(STATIONARY_FEATURES))
def test_a_stationary_feature_gives_no_false_alarm_in_20000_events(seed: int, shape: str) -> None:
    rng = random.Random(seed)
    draw = STATIONARY_FEATURES[shape]
    assert findings(data_watch(), (draw(rng) for _ in range(20_000))) == []


def test_the_cooldown_suppresses_a_second_finding_for_the_same_subject() -> None:
    # Two worsening steps 400 events apart: each is found on its own without a cool-down.
    stream = errors(0, (3000, 0.05), (400, 0.40), (2600, 0.90))
    without = findings(concept_watch(cooldown_events=0), stream)
    assert len(without) == 2, "the second step must be detectable for this test to mean anything"
    with_cooldown = findings(concept_watch(cooldown_events=1000), stream)
    assert [i for i, _ in with_cooldown] == [without[0][0]]


def test_a_subject_may_fire_again_once_its_cooldown_is_over() -> None:
    stream = errors(0, (3000, 0.05), (3000, 0.40), (3000, 0.90))
    found = findings(concept_watch(cooldown_events=1000), stream)
    assert len(found) == 2 and found[1][0] - found[0][0] > 1000


def test_no_finding_before_min_events() -> None:
    stream = errors(1, (100, 0.0), (400, 0.9))
    early = findings(concept_watch(min_events=0), stream)
    assert early and early[0][0] < 200, "the change must be detectable before event 200"
    assert findings(concept_watch(min_events=200), stream) == []


def test_the_watch_mirrors_adwins_window_between_detections() -> None:
    # The change point search relies on River's ADWIN keeping everything since it started over.
    watch = data_watch(min_events=0, cooldown_events=0)
    for x in gaussian(3, (2000, 0.0, 1.0), (2000, 5.0, 1.0), (2000, -5.0, 2.0)):
        if watch.update(x) is None and not watch.detector.drift_detected:
            assert watch.window_size == watch.detector.width
            assert watch.window_mean * watch.window_size == pytest.approx(watch.detector.total)


def test_rolling_accuracy_counts_only_the_last_window_of_labelled_predictions() -> None:
    accuracy = RollingAccuracy(window=10)
    assert accuracy.value is None
    for _ in range(10):
        accuracy.update(False)
    for _ in range(8):
        accuracy.update(True)
    assert len(accuracy) == 10 and accuracy.value == pytest.approx(0.8)
