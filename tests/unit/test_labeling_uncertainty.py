"""Which predictions are worth a person's label: uncertainty is 1 - the highest probability."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from schemas import Prediction
from services.labeling.uncertainty import uncertainty, uncertainty_worth_asking


def _prediction(probabilities: dict[str, float] | None, label: bool | None = False) -> Prediction:
    return Prediction(
        event_id="ev-1",
        entity_id="page-1",
        ts=datetime.now(UTC),
        features={"x": 1.0},
        model_name="default",
        model_version=2,
        prediction=label,
        probabilities=probabilities,
    )


@pytest.mark.parametrize(
    ("probabilities", "expected"),
    [
        ({"False": 0.55, "True": 0.45}, 0.45),
        ({"False": 0.9, "True": 0.1}, 0.1),
        ({"a": 0.2, "b": 0.3, "c": 0.5}, 0.5),
        ({"only": 1.0}, 0.0),
    ],
)
def test_uncertainty_is_one_minus_the_highest_class_probability(
    probabilities: dict[str, float], expected: float
) -> None:
    assert uncertainty(probabilities) == expected


def test_uncertainty_stays_within_zero_and_one_whatever_the_model_reports() -> None:
    assert uncertainty({"a": 1.2}) == 0.0
    assert uncertainty({"a": -0.5}) == 1.0


def test_there_is_no_uncertainty_without_class_probabilities() -> None:
    assert uncertainty(None) is None
    assert uncertainty({}) is None


def test_an_unsure_prediction_is_worth_asking_and_a_confident_one_is_not() -> None:
    assert uncertainty_worth_asking(_prediction({"False": 0.55, "True": 0.45}), 0.4) == 0.45
    assert uncertainty_worth_asking(_prediction({"False": 0.9, "True": 0.1}), 0.4) is None


def test_an_uncertainty_equal_to_the_threshold_is_worth_asking_despite_float_rounding() -> None:
    # 1 - 0.55 is 0.44999999999999996 in binary floating point
    assert uncertainty_worth_asking(_prediction({"False": 0.55, "True": 0.45}), 0.45) == 0.45


def test_a_prediction_without_a_class_or_probabilities_is_never_worth_asking() -> None:
    assert uncertainty_worth_asking(_prediction({"False": 0.5, "True": 0.5}, None), 0.0) is None
    assert uncertainty_worth_asking(_prediction(None), 0.0) is None
