"""A training example is the label joined to the features and, when seen, the prediction."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from schemas import FeatureEvent, Label, Prediction, TrainingExample
from services.labeling.examples import training_example_json

FEATURES = FeatureEvent(
    event_id="ev-1",
    entity_id="page-1",
    ts=datetime(2024, 5, 1, 12, 0, 0, 250_000, tzinfo=UTC),
    features={"https": 1.0, "age_of_domain": 3, "secure": True, "tld": "com", "tiny": 1e-300},
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


def _example(
    features: FeatureEvent | bytes, label: Label | bytes, prediction: Prediction | None
) -> tuple[str, TrainingExample]:
    def raw(part: FeatureEvent | Label | Prediction | bytes) -> bytes:
        return part if isinstance(part, bytes) else part.model_dump_json().encode()

    key, value = training_example_json(
        raw(features), raw(label), None if prediction is None else raw(prediction)
    )
    return key, TrainingExample.model_validate_json(value)


def test_an_example_carries_the_features_the_label_and_the_served_prediction() -> None:
    key, example = _example(FEATURES, LABEL, PREDICTION)

    assert key == "page-1"
    assert example == TrainingExample(
        event_id="ev-1",
        entity_id="page-1",
        ts=FEATURES.ts,
        features=FEATURES.features,
        label=True,
        prediction=False,
        model_version=7,
        label_source="analyst",
    )


def test_each_feature_keeps_its_type() -> None:
    _key, example = _example(FEATURES, LABEL, PREDICTION)

    assert [type(v) for v in example.features.values()] == [float, int, bool, str, float]


def test_an_example_made_before_the_prediction_came_has_no_prediction_or_version() -> None:
    _key, example = _example(FEATURES, LABEL, None)

    assert (example.prediction, example.model_version) == (None, None)
    assert example.label is True


def test_an_example_keeps_the_event_time_not_the_time_of_the_label() -> None:
    late = Label(event_id="ev-1", label=False, ts=FEATURES.ts + timedelta(days=3))

    assert _example(FEATURES, late, PREDICTION)[1].ts == FEATURES.ts


@pytest.mark.parametrize(
    ("label_json", "expected"),
    [
        (b'{"event_id": "ev-1", "label": 2.5}', (2.5, "system")),
        (b'{"event_id":"ev-1","label":"spam","source":"alice"}', ("spam", "alice")),
    ],
)
def test_a_label_as_another_producer_wrote_it_is_taken_with_the_model_defaults(
    label_json: bytes, expected: tuple[object, str]
) -> None:
    _key, example = _example(FEATURES, label_json, PREDICTION)

    assert (example.label, example.label_source) == expected


def test_features_as_another_producer_wrote_them_keep_their_values() -> None:
    written = (
        b'{"event_id":"ev-1","entity_id":"page-1","ts":1714564800,'
        b'"features":{"x":0.1,"n":2},"feature_schema":"s"}'
    )

    _key, example = _example(written, LABEL, None)

    assert example.ts == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert example.features == {"x": 0.1, "n": 2}
