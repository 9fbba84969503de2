"""A training example is the label joined to the features and, when seen, the prediction."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from schemas import FeatureEvent, Label, Prediction
from services.labeling.examples import training_example

FEATURES = FeatureEvent(
    event_id="ev-1",
    entity_id="page-1",
    ts=datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
    features={"https": 1.0, "age_of_domain": 3},
    feature_schema="phishing",
)
LABEL = Label(event_id="ev-1", label=True, source="analyst")
PREDICTION = Prediction(
    event_id="ev-1",
    entity_id="page-1",
    ts=FEATURES.ts,
    model_name="default",
    model_version=7,
    prediction=False,
    probabilities={"False": 0.6, "True": 0.4},
)


def test_an_example_carries_the_features_the_label_and_the_served_prediction() -> None:
    example = training_example(FEATURES, LABEL, PREDICTION)
    assert (example.event_id, example.entity_id, example.ts) == ("ev-1", "page-1", FEATURES.ts)
    assert example.features == FEATURES.features
    assert (example.label, example.label_source) == (True, "analyst")
    assert (example.prediction, example.model_version) == (False, 7)


def test_an_example_made_before_the_prediction_came_has_no_prediction_or_version() -> None:
    example = training_example(FEATURES, LABEL, None)
    assert (example.prediction, example.model_version) == (None, None)
    assert example.label is True


def test_an_example_keeps_the_event_time_not_the_time_of_the_label() -> None:
    late = Label(event_id="ev-1", label=False, ts=FEATURES.ts + timedelta(days=3))
    assert training_example(FEATURES, late, PREDICTION).ts == FEATURES.ts
