"""Data drift (KS against a reference window) and prediction drift (PSI), on seeded streams.

Bounds stated by the tests: a 3-std mean shift is found within 300 values, a doubling of the
spread within 600, a class mix moving from 30% to 60% positives within 600 predictions; over
50,000 stationary values (and predictions) there is no false alarm with the default settings.
"""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest

from services.core.settings import MonitoringSettings
from services.monitoring.reference import CategoryWatch, DistributionWatch, ks_statistic, psi

DEFAULTS = MonitoringSettings()


def feature_watch() -> DistributionWatch:
    d = DEFAULTS
    return DistributionWatch(
        "amount",
        d.data_reference_size,
        d.data_window_size,
        d.data_check_every,
        d.data_cooldown_events,
        d.data_alpha,
    )


def class_watch() -> CategoryWatch:
    d = DEFAULTS
    return CategoryWatch(
        "prediction",
        d.prediction_reference_size,
        d.prediction_window_size,
        d.prediction_check_every,
        d.prediction_cooldown_events,
        d.prediction_psi,
    )


def first_finding(watch: DistributionWatch | CategoryWatch, values: list) -> int | None:  # type: ignore[type-arg]
    for i, value in enumerate(values):
        if watch.update(value) is not None:
            return i
    return None


def test_ks_statistic_is_zero_for_equal_samples_and_one_for_disjoint_ones() -> None:
    same = np.arange(100.0)
    assert ks_statistic(same, same) == 0.0
    assert ks_statistic(same, same + 1000) == 1.0


def test_psi_is_zero_for_equal_mixes_and_grows_with_the_shift() -> None:
    base = Counter({"a": 50, "b": 50})
    assert psi(base, base) == pytest.approx(0.0)
    assert psi(base, Counter({"a": 70, "b": 30})) < psi(base, Counter({"a": 90, "b": 10}))


@pytest.mark.parametrize("seed", range(5))
def test_a_three_std_mean_shift_is_found_within_300_values(seed: int) -> None:
    rng = random.Random(seed)
    before = [rng.gauss(50, 10) for _ in range(3000)]
    after = [rng.gauss(80, 10) for _ in range(3000)]
    at = first_finding(feature_watch(), before + after)
    assert at is not None and 3000 <= at <= 3300


@pytest.mark.parametrize("seed", range(5))
def test_a_doubled_spread_with_the_same_mean_is_found_within_600_values(seed: int) -> None:
    rng = random.Random(seed)
    before = [rng.gauss(50, 10) for _ in range(3000)]
    after = [rng.gauss(50, 20) for _ in range(3000)]
    at = first_finding(feature_watch(), before + after)
    assert at is not None and 3000 <= at <= 3600


@pytest.mark.parametrize("seed", range(5))
def test_no_false_alarm_over_50000_stationary_values(seed: int) -> None:
    rng = random.Random(seed)
    assert first_finding(feature_watch(), [rng.gauss(50, 10) for _ in range(50_000)]) is None


def test_one_change_gives_one_finding_then_the_new_regime_is_the_reference() -> None:
    rng = random.Random(9)
    values = [rng.gauss(0, 1) for _ in range(3000)] + [rng.gauss(5, 1) for _ in range(20_000)]
    watch = feature_watch()
    findings = [f for f in map(watch.update, values) if f is not None]
    assert len(findings) == 1
    assert findings[0].before == pytest.approx(0, abs=0.2)
    assert not watch.reference or min(watch.reference) > 1, "the new reference is the new regime"


@pytest.mark.parametrize("seed", range(5))
def test_a_class_mix_moving_from_30_to_60_percent_is_found_within_600_predictions(
    seed: int,
) -> None:
    rng = random.Random(seed)
    before = [str(rng.random() < 0.3) for _ in range(3000)]
    after = [str(rng.random() < 0.6) for _ in range(3000)]
    watch = class_watch()
    at = first_finding(watch, before + after)
    assert at is not None and 3000 <= at <= 3600


@pytest.mark.parametrize("seed", range(5))
def test_no_prediction_drift_over_50000_predictions_of_a_stable_mix(seed: int) -> None:
    rng = random.Random(seed)
    values = [str(rng.random() < 0.3) for _ in range(50_000)]
    assert first_finding(class_watch(), values) is None


def test_the_cooldown_holds_a_second_finding_back() -> None:
    watch = DistributionWatch("x", 100, 100, 10, cooldown=1000, alpha=1e-6)
    rng = random.Random(1)
    values = (
        [rng.gauss(0, 1) for _ in range(300)]
        + [rng.gauss(10, 1) for _ in range(300)]
        + [rng.gauss(-10, 1) for _ in range(300)]
    )
    found = [i for i, v in enumerate(values) if watch.update(v) is not None]
    assert len(found) == 1, "the second change came within the cool-down"
