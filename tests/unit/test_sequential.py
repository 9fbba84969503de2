"""The canary's sequential test: it finds real differences, and rarely invents one."""

from __future__ import annotations

import random

import pytest

from services.monitoring.sequential import (
    MIN_LABELS,
    Losses,
    PairedTest,
    SequentialTest,
    log_mixture_ratio,
    loss,
)


def run_canary(
    champion_accuracy: float, challenger_accuracy: float, seed: int, horizon: int = 40_000
) -> tuple[str, int]:
    """A simulated canary: a tenth of labelled events go to the challenger; checked after each."""
    rng = random.Random(seed)
    test = SequentialTest()
    for event in range(1, horizon + 1):
        if rng.random() < 0.1:
            test.challenger.add(0.0 if rng.random() < challenger_accuracy else 1.0)
        else:
            test.champion.add(0.0 if rng.random() < champion_accuracy else 1.0)
        verdict = test.verdict()
        if verdict.decision != "continue":
            return verdict.decision, event
    return "continue", horizon


def test_losses_count_mean_and_variance_like_the_textbook() -> None:
    values = [1.0, 0.0, 0.0, 1.0, 1.0, 3.5]
    stats = Losses()
    for value in values:
        stats.add(value)
    mean = sum(values) / len(values)

    assert stats.n == 6
    assert stats.mean == pytest.approx(mean)
    assert stats.variance == pytest.approx(sum((v - mean) ** 2 for v in values) / 5)


def test_loss_is_zero_one_for_classes_and_absolute_error_for_numbers() -> None:
    assert loss(True, True, regression=False) == 0.0
    assert loss("UP", "DOWN", regression=False) == 1.0
    assert loss(None, 2, regression=False) == 1.0
    assert loss(2.5, 4.0, regression=True) == 1.5
    assert loss(None, -3.0, regression=True) == 3.0


def test_no_decision_before_each_side_has_enough_labels() -> None:
    test = SequentialTest()
    for _ in range(MIN_LABELS - 1):
        test.champion.add(1.0)
        test.challenger.add(0.0)

    assert test.verdict().decision == "continue"


def test_no_evidence_without_spread() -> None:
    assert log_mixture_ratio(0.3, 0.0, 0.01) == 0.0


@pytest.mark.parametrize(("challenger", "expected"), [(0.85, "promote"), (0.75, "rollback")])
def test_a_challenger_five_points_apart_is_decided_the_right_way(
    challenger: float, expected: str
) -> None:
    outcomes = [run_canary(0.80, challenger, seed)[0] for seed in range(20)]

    assert outcomes.count(expected) >= 18
    assert outcomes.count("promote" if expected == "rollback" else "rollback") == 0


def test_an_identical_challenger_is_rarely_promoted_though_checked_after_every_label() -> None:
    promoted = sum(run_canary(0.8, 0.8, seed, 5_000)[0] == "promote" for seed in range(200))

    assert promoted <= 10  # at most alpha = 5% of 200


def test_pairing_decides_a_shadow_sooner_than_two_groups_would() -> None:
    rng = random.Random(7)
    paired = PairedTest()
    events = 0
    while paired.verdict().decision == "continue":
        events += 1
        hard = rng.random() < 0.3  # both models miss the hard events
        champion_wrong = hard or rng.random() < 0.05
        challenger_wrong = hard
        paired.add(float(champion_wrong), float(challenger_wrong))

    assert paired.verdict().decision == "promote"
    assert events < run_canary(0.665, 0.70, seed=7)[1]
