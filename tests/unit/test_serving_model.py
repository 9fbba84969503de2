"""Serving's model layer: River predictions, and refusing artifacts that are not what they claim."""

from __future__ import annotations

import itertools
import math
import pickle
from pathlib import Path
from typing import Any

import pytest
from river import linear_model, preprocessing, tree

from schemas import ModelVersion
from schemas.models import Flavour
from services.core.artifacts import LocalStore
from services.core.datasets import default_classifier, stream
from services.core.exceptions import ArtifactError
from services.core.onnx_compile import TOLERANCE
from services.core.registry import serialize_river, sha256_hex, signed
from services.core.signing import Keyring
from services.serving.model import RiverPredictor, answer_all, compiled, load_model

KEY = b"serving-test-key"
KEYS = Keyring(hmac_key=KEY)


@pytest.fixture(scope="module")
def trained_classifier() -> Any:
    model = default_classifier()
    for features, label in itertools.islice(stream("phishing"), 300):
        model.learn_one(features, label)
    return model


@pytest.fixture(scope="module")
def phishing_rows() -> list[tuple[dict[str, Any], Any]]:
    return list(itertools.islice(stream("phishing"), 300, 320))


def signed_version(tmp_path: Path, data: bytes, flavour: Flavour, **changes: Any) -> ModelVersion:
    uri = LocalStore(tmp_path).save("phishing", 1, data)
    fields: dict[str, Any] = {
        "model_name": "phishing",
        "version": 1,
        "flavour": flavour,
        "artifact_uri": uri,
        "sha256": sha256_hex(data),
        "key_id": "hmac:0000000000000000",
        "signature": "0" * 64,
        "trigger": "initial",
    }
    fields.update(changes)
    return signed(ModelVersion.model_validate(fields), KEYS)


def test_trained_classifier_predicts_one_of_its_classes(
    trained_classifier: Any, phishing_rows: list[tuple[dict[str, Any], Any]]
) -> None:
    predictor = RiverPredictor(trained_classifier)

    for features, _ in phishing_rows:
        label, proba = predictor.predict(features)
        assert label in (True, False)
        assert proba is not None
        assert set(proba) == {"True", "False"}
        assert math.isclose(sum(proba.values()), 1.0, rel_tol=1e-9)
        assert proba[str(label)] == max(proba.values())


def test_trained_classifier_beats_chance_on_unseen_rows(
    trained_classifier: Any, phishing_rows: list[tuple[dict[str, Any], Any]]
) -> None:
    predictor = RiverPredictor(trained_classifier)

    correct = sum(predictor.predict(x)[0] == y for x, y in phishing_rows)

    assert correct > len(phishing_rows) // 2


def test_pipeline_ending_in_a_classifier_is_treated_as_a_classifier() -> None:
    assert RiverPredictor(default_classifier()).is_classifier is True


def test_untrained_default_classifier_answers_with_even_odds() -> None:
    label, proba = RiverPredictor(default_classifier()).predict({"x": 1.0})

    assert label in (True, False)
    assert proba == {"False": 0.5, "True": 0.5}


def test_classifier_with_no_classes_yet_predicts_nothing() -> None:
    assert RiverPredictor(tree.HoeffdingTreeClassifier()).predict({"x": 1.0}) == (None, None)


def test_regressor_predicts_a_value_without_probabilities() -> None:
    model = linear_model.LinearRegression()
    for x in range(20):
        model.learn_one({"x": float(x)}, 2.0 * x)
    predictor = RiverPredictor(model)

    value, proba = predictor.predict({"x": 3.0})

    assert predictor.is_classifier is False
    assert isinstance(value, float)
    assert proba is None


def test_signed_river_model_loads_and_predicts(tmp_path: Path, trained_classifier: Any) -> None:
    version = signed_version(tmp_path, serialize_river(trained_classifier), "river")

    loaded = load_model(version, KEYS, tmp_path)

    assert loaded.version == version
    features = next(iter(stream("phishing")))[0]
    assert loaded.predictor.predict(features) == RiverPredictor(trained_classifier).predict(
        features
    )


@pytest.mark.parametrize(
    "obj",
    [
        pytest.param({"weights": [0.1, 0.2]}, id="dict"),
        pytest.param([1, 2, 3], id="list"),
        pytest.param("predict_one", id="string"),
    ],
)
def test_signed_pickle_that_is_not_a_river_model_is_refused(tmp_path: Path, obj: Any) -> None:
    version = signed_version(tmp_path, pickle.dumps(obj), "river")

    with pytest.raises(ArtifactError, match="not a River estimator"):
        load_model(version, KEYS, tmp_path)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\x00\x01garbage\xff", id="garbage"),
        pytest.param(b"", id="empty"),
        pytest.param(b"{}", id="json"),
    ],
)
def test_signed_garbage_as_onnx_is_refused(tmp_path: Path, data: bytes) -> None:
    version = signed_version(tmp_path, data, "onnx", feature_names=["x"], classes=[False, True])

    with pytest.raises(ArtifactError, match="invalid ONNX"):
        load_model(version, KEYS, tmp_path)


def test_model_signed_with_another_key_is_refused(tmp_path: Path, trained_classifier: Any) -> None:
    version = signed_version(tmp_path, serialize_river(trained_classifier), "river")

    with pytest.raises(ArtifactError, match="signed by unknown key"):
        load_model(version, Keyring(hmac_key=b"not-the-serving-key"), tmp_path)


def phishing_names() -> list[str]:
    return sorted(next(iter(stream("phishing")))[0])


def test_a_linear_river_model_is_served_through_its_compiled_graph(
    tmp_path: Path, trained_classifier: Any, phishing_rows: list[tuple[dict[str, Any], Any]]
) -> None:
    version = signed_version(tmp_path, serialize_river(trained_classifier), "river")

    loaded = load_model(version, KEYS, tmp_path, compile_over=phishing_names())

    river = RiverPredictor(trained_classifier)
    rows = [features for features, _ in phishing_rows]
    assert loaded.predictor.runtime == "onnx"
    for (label, proba), row in zip(loaded.predictor.predict_many(rows), rows, strict=True):
        expected_label, expected_proba = river.predict(row)
        assert proba is not None and expected_proba is not None
        assert proba.keys() == expected_proba.keys()
        assert max(abs(proba[k] - expected_proba[k]) for k in proba) <= TOLERANCE
        assert label == expected_label


def test_a_batch_answers_what_each_row_answers_alone(
    trained_classifier: Any, phishing_rows: list[tuple[dict[str, Any], Any]]
) -> None:
    onnx = compiled(RiverPredictor(trained_classifier), phishing_names())
    assert onnx is not None
    rows = [features for features, _ in phishing_rows]

    assert onnx.predict_many(rows) == [onnx.predict(row) for row in rows]


def test_a_feature_an_event_lacks_adds_nothing_as_in_river(trained_classifier: Any) -> None:
    onnx = compiled(RiverPredictor(trained_classifier), phishing_names())
    assert onnx is not None
    row = dict(next(iter(stream("phishing")))[0])
    del row["https"]

    (_, proba), expected = onnx.predict(row), RiverPredictor(trained_classifier).predict(row)

    assert proba is not None and expected[1] is not None
    assert max(abs(proba[k] - expected[1][k]) for k in proba) <= TOLERANCE


def test_softmax_and_linear_regression_compile_and_adaptive_trees_stay_in_river() -> None:
    softmax = preprocessing.StandardScaler() | linear_model.SoftmaxRegression()
    regression = preprocessing.StandardScaler() | linear_model.LinearRegression()
    for x in range(30):
        softmax.learn_one({"x": float(x), "y": 1.0}, f"c{x % 3}")
        regression.learn_one({"x": float(x), "y": 1.0}, 2.0 * x)
    grown = tree.HoeffdingAdaptiveTreeClassifier()
    grown.learn_one({"x": 1.0, "y": 1.0}, True)

    assert compiled(RiverPredictor(softmax), ["x", "y"]) is not None
    assert compiled(RiverPredictor(regression), ["x", "y"]) is not None
    assert compiled(RiverPredictor(grown), ["x", "y"]) is None
    # a softmax that has seen no class yet answers None in River; no graph can say that
    empty = preprocessing.StandardScaler() | linear_model.SoftmaxRegression()
    assert compiled(RiverPredictor(empty), ["x", "y"]) is None


def test_without_features_to_compile_over_river_serves(
    tmp_path: Path, trained_classifier: Any
) -> None:
    version = signed_version(tmp_path, serialize_river(trained_classifier), "river")

    assert load_model(version, KEYS, tmp_path).predictor.runtime == "river"


def test_one_row_the_graph_cannot_take_costs_only_its_own_answer(
    trained_classifier: Any, phishing_rows: list[tuple[dict[str, Any], Any]]
) -> None:
    onnx = compiled(RiverPredictor(trained_classifier), phishing_names())
    assert onnx is not None
    rows = [features for features, _ in phishing_rows[:5]]
    rows[2] = {**rows[2], "https": "not a number"}

    answers = answer_all(onnx, rows)

    assert isinstance(answers[2], ValueError)
    assert [a for i, a in enumerate(answers) if i != 2] == onnx.predict_many(rows[:2] + rows[3:])
