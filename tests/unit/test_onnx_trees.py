"""Hoeffding trees and adaptive random forests compiled to ONNX answer what River answers."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
from river import forest, tree

from services.core.datasets import stream
from services.core.onnx_compile import TOLERANCE, NotCompilable, compile_model
from services.core.onnx_trees import compile_trees
from services.serving.model import OnnxPredictor, RiverPredictor, compiled


def learned(model: Any, name: str, rows: int) -> tuple[Any, list[dict[str, Any]], list[str]]:
    """``model`` after learning ``rows`` rows of a dataset; 200 more, a seventh lacking one."""
    data = list(itertools.islice(stream(name), rows + 200))
    for features, label in data[:rows]:
        model.learn_one(features, label)
    names = sorted(data[0][0])
    rest = [
        {k: v for k, v in f.items() if i % 7 or k != names[0]}
        for i, (f, _) in enumerate(data[rows:])
    ]
    return model, rest, names


def assert_same_answers(model: Any, rows: list[dict[str, Any]], names: list[str]) -> None:
    graph, classes = compile_trees(model, names)
    onnx = OnnxPredictor(graph, names, classes, missing=math.nan)
    river = RiverPredictor(model)
    for row, (label, proba) in zip(rows, onnx.predict_many(rows), strict=True):
        expected_label, expected = river.predict(row)
        assert proba is not None and expected is not None
        assert proba.keys() == expected.keys()
        assert max(abs(proba[k] - expected[k]) for k in proba) <= TOLERANCE
        assert label == expected_label


@pytest.mark.parametrize("leaves", ["nba", "nb", "mc"])
@pytest.mark.parametrize(("dataset", "rows"), [("phishing", 1000), ("segments", 1500)])
def test_a_hoeffding_tree_answers_as_in_river(dataset: str, rows: int, leaves: str) -> None:
    model, rest, names = learned(
        # tau 0.5: split on the few hundred rows a test affords (seven classes need thousands)
        tree.HoeffdingTreeClassifier(grace_period=50, tau=0.5, leaf_prediction=leaves),
        dataset,
        rows,
    )
    assert model.n_nodes > 1, "the tree should have split"

    assert_same_answers(model, rest, names)


@pytest.mark.parametrize(("dataset", "rows"), [("phishing", 1000), ("segments", 1500)])
def test_an_adaptive_random_forest_answers_as_in_river(dataset: str, rows: int) -> None:
    model, rest, names = learned(forest.ARFClassifier(n_models=10, seed=3), dataset, rows)

    assert_same_answers(model, rest, names)


def test_a_forest_that_votes_unweighted_answers_as_in_river() -> None:
    model, rest, names = learned(
        forest.ARFClassifier(n_models=4, seed=1, disable_weighted_vote=True), "phishing", 800
    )

    assert_same_answers(model, rest, names)


@pytest.mark.parametrize(
    ("model", "says"),
    [
        (tree.HoeffdingAdaptiveTreeClassifier(), "HoeffdingAdaptiveTreeClassifier"),
        (tree.HoeffdingTreeRegressor(), "HoeffdingTreeRegressor"),
        (forest.ARFClassifier(n_models=2), "no trees yet"),
        (tree.HoeffdingTreeClassifier(), "not learned anything"),
    ],
    ids=["adaptive tree", "regression tree", "untrained forest", "untrained tree"],
)
def test_what_is_not_compiled_says_why(model: Any, says: str) -> None:
    with pytest.raises(NotCompilable, match=says):
        compile_model(model, ["a", "b"])


def test_serving_compiles_a_tree_and_checks_it_on_probe_rows() -> None:
    model, rest, names = learned(tree.HoeffdingTreeClassifier(grace_period=50), "phishing", 600)

    onnx = compiled(RiverPredictor(model), names)

    assert onnx is not None and onnx.runtime == "onnx"
    river = [RiverPredictor(model).predict(row)[0] for row in rest]
    assert [label for label, _ in onnx.predict_many(rest)] == river
