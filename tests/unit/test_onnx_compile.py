"""River linear models compiled to ONNX predict what River predicts, a whole batch in one run."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import onnxruntime
import pytest
from river import compose, linear_model, preprocessing, tree

from services.core.datasets import stream
from services.core.onnx_compile import TOLERANCE, NotCompilable, compile_river
from services.serving.model import OnnxPredictor


def learned(model: Any, name: str, rows: int) -> tuple[Any, list[tuple[dict[str, Any], Any]]]:
    """``model`` after test-then-train on the first ``rows`` of a dataset, and the next 300."""
    data = list(itertools.islice(stream(name), rows + 300))
    for features, label in data[:rows]:
        model.learn_one(features, label)
    return model, data[rows:]


def run_batch(graph: bytes, output: str, names: list[str], rows: list[dict[str, Any]]) -> Any:
    session = onnxruntime.InferenceSession(graph, providers=["CPUExecutionProvider"])
    matrix = np.array([[float(r[n]) for n in names] for r in rows], np.float32)
    return session.run([output], {"features": matrix})[0]


def test_scaled_logistic_regression_matches_river_on_a_batch() -> None:
    model, rest = learned(preprocessing.StandardScaler() | linear_model.LogisticRegression(),
                          "phishing", 900)  # fmt: skip
    names = sorted(rest[0][0])

    out = run_batch(compile_river(model, names), "probabilities", names, [f for f, _ in rest])

    river = np.array([[model.predict_proba_one(f)[c] for c in (False, True)] for f, _ in rest])
    assert out.shape == (300, 2)
    assert np.abs(out - river).max() <= TOLERANCE


def test_softmax_regression_matches_river_and_a_class_never_seen_gets_zero() -> None:
    model, rest = learned(preprocessing.StandardScaler() | linear_model.SoftmaxRegression(),
                          "segments", 1500)  # fmt: skip
    names = sorted(rest[0][0])
    seen = sorted(model["SoftmaxRegression"].weights)
    classes = [*seen, "never-seen"]

    out = run_batch(compile_river(model, names, classes), "probabilities", names,
                    [f for f, _ in rest])  # fmt: skip

    river = np.array([[model.predict_proba_one(f).get(c, 0.0) for c in classes] for f, _ in rest])
    assert np.abs(out - river).max() <= TOLERANCE
    assert out[:, -1].max() == 0.0


def test_scaled_linear_regression_matches_river() -> None:
    model, rest = learned(preprocessing.StandardScaler() | linear_model.LinearRegression(),
                          "trump", 600)  # fmt: skip
    names = sorted(rest[0][0])

    out = run_batch(compile_river(model, names), "value", names, [f for f, _ in rest])

    river = np.array([model.predict_one(f) for f, _ in rest])
    assert np.allclose(out[:, 0], river, rtol=TOLERANCE, atol=TOLERANCE)


def test_serving_runs_a_compiled_graph_as_it_runs_any_onnx_model() -> None:
    model, rest = learned(preprocessing.StandardScaler() | linear_model.LogisticRegression(),
                          "phishing", 500)  # fmt: skip
    names = sorted(rest[0][0])
    predictor = OnnxPredictor(compile_river(model, names), names, [False, True])

    for features, _label in rest[:50]:
        label, proba = predictor.predict(features)
        assert label == model.predict_one(features)
        assert proba is not None
        assert abs(proba["True"] - model.predict_proba_one(features)[True]) <= TOLERANCE


@pytest.mark.parametrize(
    ("model", "says"),
    [
        (tree.HoeffdingTreeClassifier(), "HoeffdingTreeClassifier is not a linear model"),
        (preprocessing.StandardScaler(window_size=10) | linear_model.LogisticRegression(),
         "over a window"),
        (preprocessing.MinMaxScaler() | linear_model.LogisticRegression(), "pipeline steps"),
        (compose.Select("a") | preprocessing.StandardScaler() | linear_model.LinearRegression(),
         "pipeline steps"),
    ],
    ids=["tree", "windowed scaler", "other scaler", "three steps"],
)  # fmt: skip
def test_what_is_not_compiled_says_why(model: Any, says: str) -> None:
    with pytest.raises(NotCompilable, match=says):
        compile_river(model, ["a", "b"])


def test_a_binary_model_with_other_classes_is_not_compiled() -> None:
    with pytest.raises(NotCompilable, match="False, True"):
        compile_river(linear_model.LogisticRegression(), ["a"], ["DOWN", "UP"])


def test_a_missing_feature_sent_as_nan_adds_nothing_as_in_river() -> None:
    model, rest = learned(preprocessing.StandardScaler() | linear_model.LogisticRegression(),
                          "phishing", 900)  # fmt: skip
    names = sorted(rest[0][0])
    session = onnxruntime.InferenceSession(
        compile_river(model, names), providers=["CPUExecutionProvider"]
    )
    partial = [{n: v for n, v in f.items() if n != names[0]} for f, _ in rest[:50]]
    matrix = np.array([[float(r.get(n, np.nan)) for n in names] for r in partial], np.float32)

    out = session.run(["probabilities"], {"features": matrix})[0]

    river = np.array([model.predict_proba_one(r)[True] for r in partial])
    assert np.abs(out[:, 1] - river).max() <= TOLERANCE
