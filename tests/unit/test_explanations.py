"""Explanations: exact contributions for linear models, path contributions for trees."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
from river import forest, linear_model, preprocessing, tree

from schemas import LabelingTask
from services.core.datasets import stream
from services.labeling.pages import View, board
from services.serving import explain
from services.serving.explain import LinearExplainer, TreeExplainer, explainer_for

ROWS = list(itertools.islice(stream("phishing"), 1100))
NAMES = sorted(ROWS[0][0])


def learned(model: Any) -> Any:
    for features, label in ROWS[:1000]:
        model.learn_one(features, label)
    return model


@pytest.fixture
def every_feature(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(explain, "TOP", 100)


def test_linear_contributions_and_the_intercept_add_up_to_the_logit(every_feature: None) -> None:
    model = learned(preprocessing.StandardScaler() | linear_model.LogisticRegression())
    explainer = explainer_for(model, NAMES)
    assert isinstance(explainer, LinearExplainer)
    rows = [features for features, _ in ROWS[1000:1050]]

    for row, why in zip(rows, explainer.explain_many(rows, [True] * len(rows)), strict=True):
        p = model.predict_proba_one(row)[True]
        intercept = model["LogisticRegression"].intercept
        assert why is not None
        assert sum(why.values()) + intercept == pytest.approx(math.log(p / (1 - p)), abs=1e-6)


def test_only_the_largest_contributions_are_kept_largest_first() -> None:
    model = learned(preprocessing.StandardScaler() | linear_model.LogisticRegression())
    (why,) = explainer_for(model, NAMES).explain_many([ROWS[1000][0]], [True])  # type: ignore[union-attr]

    assert why is not None and len(why) <= explain.TOP
    sizes = [abs(v) for v in why.values()]
    assert sizes == sorted(sizes, reverse=True)


def test_a_missing_feature_contributes_nothing(every_feature: None) -> None:
    model = learned(preprocessing.StandardScaler() | linear_model.LogisticRegression())
    row = {k: v for k, v in ROWS[1000][0].items() if k != NAMES[0]}

    (why,) = explainer_for(model, NAMES).explain_many([row], [True])  # type: ignore[union-attr]

    assert why is not None and NAMES[0] not in why


def test_a_softmax_is_explained_toward_the_class_it_answered(every_feature: None) -> None:
    model = preprocessing.StandardScaler() | linear_model.SoftmaxRegression()
    for x in range(60):
        model.learn_one({"a": float(x % 3), "b": 1.0}, f"c{x % 3}")
    explainer = explainer_for(model, ["a", "b"])
    assert explainer is not None

    toward_c0, toward_c2 = explainer.explain_many([{"a": 2.0, "b": 1.0}] * 2, ["c0", "c2"])

    assert toward_c0 and toward_c2 and toward_c0["a"] * toward_c2["a"] < 0


@pytest.mark.parametrize(
    "model",
    [tree.HoeffdingTreeClassifier(grace_period=50), forest.ARFClassifier(n_models=5, seed=2)],
    ids=["tree", "forest"],
)
def test_tree_paths_add_up_to_the_leaf_share_less_the_root_share(
    model: Any, every_feature: None
) -> None:
    learned(model)
    explainer = explainer_for(model, NAMES)
    assert isinstance(explainer, TreeExplainer)
    row = ROWS[1000][0]

    why = explainer.explain(row, True)

    assert why, "the trees should have split"
    expected = 0.0
    for member, weight in explainer.trees:
        leaf = member._root.traverse(row)
        root_share = member._root.stats.get(True, 0) / sum(member._root.stats.values())
        expected += weight * (leaf.stats.get(True, 0) / sum(leaf.stats.values()) - root_share)
    assert sum(why.values()) == pytest.approx(expected, abs=1e-9)


def test_a_model_without_an_explainer_gets_none() -> None:
    assert explainer_for(tree.HoeffdingAdaptiveTreeClassifier(), NAMES) is None


def test_the_label_page_shows_why_beside_the_guess_escaped() -> None:
    task = LabelingTask(
        event_id="e1",
        entity_id="u1",
        features={"<b>amount</b>": 3.0},
        prediction=True,
        uncertainty=0.45,
        explanation={"<b>amount</b>": 0.42, "age": -0.1},
        model_version=2,
    )

    page = board([task], View("ann", "token", 1, 0), None)

    assert "why:" in page
    assert "<code>&lt;b&gt;amount&lt;/b&gt;</code> <span class='up'>+0.42</span>" in page
    assert "<span class='down'>-0.1</span>" in page
    assert "<b>amount</b>" not in page
