"""A training example is the label joined to the served prediction and its features."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from schemas import Label, Prediction, TrainingExample
from services.labeling.examples import training_example_json

LABEL = Label(event_id="ev-1", label=True, source="analyst")
PREDICTION = Prediction(
    event_id="ev-1",
    entity_id="page-1",
    ts=datetime(2024, 5, 1, 12, 0, 0, 250_000, tzinfo=UTC),
    features={"https": 1.0, "age_of_domain": 3, "secure": True, "tld": "com", "tiny": 1e-300},
    model_name="default",
    model_version=7,
    prediction=False,
    probabilities={"False": 0.6, "True": 0.4},
)


def _example(prediction: Prediction | bytes, label: Label | bytes) -> tuple[str, TrainingExample]:
    def raw(part: Label | Prediction | bytes) -> bytes:
        return part if isinstance(part, bytes) else part.model_dump_json().encode()

    key, value = training_example_json(raw(prediction), raw(label))
    return key, TrainingExample.model_validate_json(value)


def test_an_example_carries_the_features_served_the_label_and_the_prediction() -> None:
    key, example = _example(PREDICTION, LABEL)

    assert key == "page-1"
    assert example == TrainingExample(
        event_id="ev-1",
        entity_id="page-1",
        ts=PREDICTION.ts,
        features=PREDICTION.features,
        label=True,
        prediction=False,
        model_version=7,
        label_source="analyst",
    )


def test_each_feature_keeps_its_type() -> None:
    _key, example = _example(PREDICTION, LABEL)

    assert [type(v) for v in example.features.values()] == [float, int, bool, str, float]


def test_an_example_keeps_the_event_time_not_the_time_of_the_label() -> None:
    late = Label(event_id="ev-1", label=False, ts=PREDICTION.ts + timedelta(days=3))

    assert _example(PREDICTION, late)[1].ts == PREDICTION.ts


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
    _key, example = _example(PREDICTION, label_json)

    assert (example.label, example.label_source) == expected


def test_a_prediction_as_another_producer_wrote_it_keeps_its_values() -> None:
    written = (
        b'{"event_id":"ev-1","entity_id":"page-1","ts":1714564800,"features":{"x":0.1,"n":2},'
        b'"model_name":"m","model_version":2,"prediction":null}'
    )

    _key, example = _example(written, LABEL)

    assert example.ts == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert example.features == {"x": 0.1, "n": 2}
    assert (example.prediction, example.model_version) == (None, 2)
