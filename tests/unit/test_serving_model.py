"""Serving's model layer: River predictions, and refusing artifacts that are not what they claim."""

from __future__ import annotations

import itertools
import math
import pickle
from pathlib import Path
from typing import Any

import pytest
from river import linear_model, tree

from schemas import ModelVersion
from schemas.models import Flavour
from services.core.datasets import default_classifier, stream
from services.core.exceptions import ArtifactError
from services.core.registry import ArtifactStore, serialize_river, sha256_hex, signed
from services.core.signing import Keyring
from services.serving.model import RiverPredictor, load_model

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
    uri = ArtifactStore(tmp_path).save("phishing", 1, data)
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
