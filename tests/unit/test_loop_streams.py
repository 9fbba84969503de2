"""The streams the loop plays: known drift positions, gradual mixing, and learnable concepts."""

from __future__ import annotations

import pytest

from services.core.datasets import LOOP_STREAMS, default_classifier, loop_stream
from services.core.feature_schema import FeatureSchema, check_features
from services.core.model_specs import build_model, default_specs
from services.core.rejection import Rejection
from services.training.scores import Prequential


def _errors(rows: list[tuple[dict, object]], model: object) -> float:
    return sum(model.predict_one(x) != y for x, y in rows) / len(rows)  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", ["sea", "agrawal"])
def test_a_drift_makes_the_old_concepts_model_much_more_wrong(name: str) -> None:
    rows = loop_stream(name, 4000, drift_at=3000)
    model = default_classifier()
    for x, y in rows[:3000]:
        model.learn_one(x, y)

    before, after = _errors(rows[2500:3000], model), _errors(rows[3000:], model)

    assert after > before + 0.1, f"{name}: errors {before:.2f} before, {after:.2f} after"


def test_a_gradual_drift_mixes_both_concepts_until_its_end() -> None:
    abrupt = loop_stream("sea", 2000, drift_at=1000)
    gradual = loop_stream("sea", 2000, drift_at=1000, drift_width=800)
    stationary = loop_stream("sea", 2000)

    assert gradual[:1000] == stationary[:1000] == abrupt[:1000]
    assert gradual[1000:1800] != abrupt[1000:1800]
    # the new concept's source is read in order, so the gradual drift ends on the abrupt rows
    assert gradual[-1] in abrupt[1000:]


@pytest.mark.parametrize("name", LOOP_STREAMS)
def test_every_loop_stream_has_a_feature_schema_its_rows_and_labels_pass(name: str) -> None:
    schema = FeatureSchema.load(name)
    rows = loop_stream(name, 1000)
    rejected = [
        check_features(schema, features)
        for features, _label in rows
        if isinstance(check_features(schema, features), Rejection)
    ]
    unfit = [
        label for _features, label in rows if isinstance(schema.target.check(label), Rejection)
    ]

    assert rejected == [] and unfit == []


@pytest.mark.parametrize("name", ["led", "friedman"])
def test_the_multiclass_and_regression_drifts_make_the_old_concepts_model_worse(name: str) -> None:
    schema = FeatureSchema.load(name)
    rows = loop_stream(name, 5000, drift_at=4000)
    model = build_model(default_specs(schema)[0], schema)
    for x, y in rows[:4000]:
        model.learn_one(x, y)
    score = Prequential(schema.target.type, 500)
    before = [score.loss(y, model.predict_one(x)) for x, y in rows[3500:4000]]
    after = [score.loss(y, model.predict_one(x)) for x, y in rows[4000:]]

    assert sum(after) / len(after) > 1.5 * sum(before) / len(before)


def test_a_real_dataset_refuses_a_drift_and_more_rows_than_it_has() -> None:
    with pytest.raises(ValueError, match="without a known drift"):
        loop_stream("phishing", 100, drift_at=50)
    with pytest.raises(ValueError, match="fewer than"):
        loop_stream("phishing", 5000)
