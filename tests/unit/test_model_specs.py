"""Model specs are data: checked at start-up with an error that names what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest
from river import compose, linear_model, tree

from schemas.models import ModelSpec
from services.core.estimators import BinaryClasses
from services.core.exceptions import ConfigurationError
from services.core.feature_schema import FeatureSchema
from services.core.model_specs import baseline_spec, build_model, default_specs, load_specs


def schema(target: dict[str, object], categories: bool = False) -> FeatureSchema:
    features: dict[str, object] = {"x": {"type": "float"}}
    if categories:
        features["colour"] = {"type": "category", "values": ["red", "blue"]}
    return FeatureSchema.model_validate({"name": "s", "features": features, "target": target})


BINARY = schema({"type": "binary"})
MULTICLASS = schema({"type": "multiclass"})
REGRESSION = schema({"type": "regression"})


def test_each_target_has_a_linear_default_and_a_no_change_baseline() -> None:
    assert [s.estimator for s in default_specs(BINARY)] == ["river.linear_model.LogisticRegression"]
    assert [s.estimator for s in default_specs(MULTICLASS)] == [
        "river.linear_model.SoftmaxRegression"
    ]
    assert [s.estimator for s in default_specs(REGRESSION)] == [
        "river.linear_model.LinearRegression"
    ]
    assert type(build_model(baseline_spec(REGRESSION), REGRESSION)).__name__ == "StatisticRegressor"
    assert type(build_model(baseline_spec(BINARY), BINARY)).__name__ == "NoChangeClassifier"


def test_auto_preprocessing_scales_numbers_and_one_hot_encodes_categories_for_linear_models() -> (
    None
):
    mixed = schema({"type": "binary"}, categories=True)
    model = build_model(default_specs(mixed)[0], mixed)
    assert isinstance(model, compose.Pipeline)
    model.learn_one({"x": 1.0, "colour": "red"}, True)
    assert set(model.predict_proba_one({"x": 2.0, "colour": "blue"})) == {False, True}
    trees = ModelSpec(name="t", estimator="river.tree.HoeffdingTreeClassifier")
    assert isinstance(build_model(trees, mixed), tree.HoeffdingTreeClassifier)  # raw features


@pytest.mark.parametrize(
    "estimator", ["river.tree.HoeffdingAdaptiveTreeRegressor", "river.forest.ARFRegressor"]
)
def test_auto_preprocessing_scales_for_tree_regressors_whose_leaves_are_linear(
    estimator: str,
) -> None:
    """Unscaled, a leaf's linear model diverges on large inputs; scaled, it learns the target."""
    spec = ModelSpec(name="t", estimator=estimator, params={"seed": 1})
    model = build_model(spec, REGRESSION)
    assert isinstance(model, compose.Pipeline)
    errors = []
    for i in range(600):
        x = 50_000.0 + 1_000.0 * (i % 10)  # a date-like number, far from 0
        y = 40.0 + (i % 10)
        errors.append(abs((model.predict_one({"x": x}) or 0.0) - y))
        model.learn_one({"x": x}, y)
    assert sum(errors[-100:]) / 100 < 5.0


def test_a_binary_learner_speaks_the_targets_own_classes() -> None:
    updown = schema({"type": "binary", "classes": ["DOWN", "UP"]})
    model = build_model(default_specs(updown)[0], updown)
    assert isinstance(model, BinaryClasses)
    for i in range(50):
        model.learn_one({"x": float(i % 2)}, "UP" if i % 2 else "DOWN")
    assert model.predict_one({"x": 1.0}) == "UP" and model.predict_one({"x": 0.0}) == "DOWN"


def test_nested_estimators_and_explicit_preprocessing_are_built() -> None:
    spec = ModelSpec.model_validate(
        {
            "name": "ovr",
            "estimator": "river.multiclass.OneVsRestClassifier",
            "params": {"classifier": {"estimator": "river.linear_model.LogisticRegression"}},
            "preprocessing": ["river.preprocessing.StandardScaler"],
        }
    )
    model = build_model(spec, MULTICLASS)
    assert isinstance(model, compose.Pipeline)
    assert isinstance(
        model.steps["OneVsRestClassifier"].classifier, linear_model.LogisticRegression
    )


@pytest.mark.parametrize(
    ("spec", "target", "expected"),
    [
        ({"estimator": "river.linear_model.LogisticRegression"}, MULTICLASS, "binary only"),
        ({"estimator": "river.linear_model.LogisticRegression"}, REGRESSION, "is a classifier"),
        ({"estimator": "river.linear_model.LinearRegression"}, BINARY, "not a classifier"),
        ({"estimator": "river.linear_model.Nope"}, BINARY, "has no 'Nope'"),
        ({"estimator": "nowhere.Model"}, BINARY, "cannot import 'nowhere'"),
        (
            {"estimator": "river.tree.HoeffdingTreeClassifier", "params": {"grace": 1}},
            BINARY,
            "grace",
        ),
        ({"factory": "services.core.estimators:nothing_here"}, BINARY, "has no 'nothing_here'"),
    ],
)
def test_a_bad_spec_is_refused_with_what_is_wrong(
    spec: dict[str, object], target: FeatureSchema, expected: str
) -> None:
    with pytest.raises(ConfigurationError, match=expected):
        build_model(ModelSpec.model_validate({"name": "m", **spec}), target)


def test_a_models_file_is_checked_candidate_by_candidate(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(
        '[[candidates]]\nname = "lr"\nestimator = "river.linear_model.LogisticRegression"\n'
        '[[candidates]]\nname = "tree"\nestimator = "river.tree.HoeffdingAdaptiveTreeClassifier"\n'
        "params = { grace_period = 50 }\n"
    )
    assert [s.name for s in load_specs(str(good), BINARY)] == ["lr", "tree"]
    bad = tmp_path / "bad.toml"
    bad.write_text('[[candidates]]\nname = "lr"\nestimater = "river.linear_model.X"\n')
    with pytest.raises(ConfigurationError, match=r"candidate 1: estimater: Extra inputs"):
        load_specs(str(bad), BINARY)
    twice = tmp_path / "twice.toml"
    twice.write_text(good.read_text().replace('"tree"', '"lr"'))
    with pytest.raises(ConfigurationError, match="two candidates are named 'lr'"):
        load_specs(str(twice), BINARY)
    with pytest.raises(ConfigurationError, match="not found"):
        load_specs(str(tmp_path / "missing.toml"), BINARY)
    baseline = tmp_path / "baseline.toml"
    baseline.write_text('[[candidates]]\nname = "baseline"\nfactory = "m:f"\n')
    with pytest.raises(ConfigurationError, match="built-in baseline"):
        load_specs(str(baseline), BINARY)


def test_the_candidates_in_the_docs_are_valid_specs() -> None:
    import re
    import tomllib
    from pathlib import Path

    from schemas.models import ModelSpec

    docs = (Path(__file__).resolve().parents[2] / "docs" / "models.md").read_text()
    (block,) = re.findall(r"```toml\n(.*?)```", docs, re.S)
    specs = [ModelSpec.model_validate(c) for c in tomllib.loads(block)["candidates"]]
    assert [s.name for s in specs] == ["logistic", "forest", "mine"]
    assert specs[1].process == "own" and specs[2].factory == "my_package.models:make_model"
