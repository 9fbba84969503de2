"""Model specs: models declared as data, checked against the target, and built into River models.

A models file (``infra/models/<name>.toml`` or a path) lists candidates::

    [[candidates]]
    name = "logistic"
    estimator = "river.linear_model.LogisticRegression"
    params = { l2 = 0.001 }

    [[candidates]]
    name = "tree"
    estimator = "river.tree.HoeffdingAdaptiveTreeClassifier"
    params = { grace_period = 50 }

"auto" gives one default model for the target (logistic, softmax or linear regression). The
``baseline`` candidate (repeat the last label; the mean for regression) always runs beside them.
"""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from river import base as river_base

from schemas.models import ModelSpec, Step
from services.core.estimators import BinaryClasses
from services.core.exceptions import ConfigurationError
from services.core.feature_schema import FeatureSchema
from services.core.topics import infra_path

#: The name of the baseline candidate; no declared candidate may take it.
BASELINE = "baseline"
#: Modules whose estimators get scaled numbers and one-hot categories under "auto".
_SCALED = ("river.linear_model.", "river.neighbors.", "river.neural_net.")
#: Tree regressors whose leaves are linear models by default (``leaf_prediction="adaptive"``):
#: on raw features those diverge (TrumpApproval, labels 100 late: a Hoeffding adaptive tree's
#: MAE 474,130,902 raw, 14.8 scaled; an adaptive random forest's 1.4e9 raw, 5.4 scaled).
_LINEAR_LEAVES = frozenset(
    f"river.{name}"
    for name in (
        "tree.HoeffdingTreeRegressor",
        "tree.HoeffdingAdaptiveTreeRegressor",
        "tree.ISOUPTreeRegressor",
        "forest.ARFRegressor",
        "forest.OXTRegressor",
    )
)

_DEFAULT_ESTIMATORS = {
    "binary": "river.linear_model.LogisticRegression",
    "multiclass": "river.linear_model.SoftmaxRegression",
    "regression": "river.linear_model.LinearRegression",
}


def default_specs(schema: FeatureSchema) -> list[ModelSpec]:
    """One linear model for the schema's target.

    The regression's intercept learns ten times faster than River's default (0.1, as River's
    own TrumpApproval example has it): labels are rarely centred on 0, and with the default a
    young model is off by the labels' mean for thousands of examples.
    """
    estimator = _DEFAULT_ESTIMATORS[schema.target.type]
    params = {"intercept_lr": 0.1} if schema.target.type == "regression" else {}
    return [ModelSpec(name=estimator.rsplit(".", 1)[1].lower(), estimator=estimator, params=params)]


def baseline_spec(schema: FeatureSchema) -> ModelSpec:
    """The no-change baseline for the schema's target."""
    function = "mean_regressor" if schema.target.type == "regression" else "no_change_classifier"
    return ModelSpec(name=BASELINE, factory=f"services.core.estimators:{function}")


def load_specs(name_or_path: str, schema: FeatureSchema) -> list[ModelSpec]:
    """The candidates of a models file ("auto": the default), each built once as a check.

    Raises ConfigurationError naming the file, the candidate and what is wrong with it.
    """
    if name_or_path == "auto":
        specs = default_specs(schema)
    else:
        path = Path(name_or_path)
        if not path.suffix:
            path = infra_path("models", f"{name_or_path}.toml")
        try:
            with open(path, "rb") as file:
                raw = tomllib.load(file)
        except FileNotFoundError:
            raise ConfigurationError(
                f"models file {name_or_path!r} not found (looked at {path}); set "
                "EDDY_TRAINING__MODELS to 'auto', a name in infra/models/ or a TOML path"
            ) from None
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigurationError(f"models file {path} cannot be read: {exc}") from exc
        specs = parse_specs(raw, str(path))
    for spec in specs:
        build_model(spec, schema)
    return specs


def parse_specs(raw: dict[str, Any], source: str) -> list[ModelSpec]:
    """The ``[[candidates]]`` of a parsed models file, validated."""
    unknown = set(raw) - {"candidates"}
    if unknown:
        raise ConfigurationError(f"{source}: unknown tables {sorted(unknown)}; expected candidates")
    entries = raw.get("candidates")
    if not isinstance(entries, list) or not entries:
        raise ConfigurationError(f"{source}: declare at least one [[candidates]] table")
    specs = []
    for i, entry in enumerate(entries):
        try:
            specs.append(ModelSpec.model_validate(entry))
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'candidate'}: {e['msg']}"
                for e in error.errors()
            )
            raise ConfigurationError(f"{source}: candidate {i + 1}: {problems}") from None
    names = [spec.name for spec in specs]
    for name in names:
        if name == BASELINE:
            raise ConfigurationError(f"{source}: {BASELINE!r} is the built-in baseline's name")
        if names.count(name) > 1:
            raise ConfigurationError(f"{source}: two candidates are named {name!r}")
    return specs


def build_model(spec: ModelSpec, schema: FeatureSchema) -> Any:
    """A fresh, untrained model for ``spec``, fit for the schema's target.

    Raises ConfigurationError when the spec cannot be built or does not fit the target (a
    binary-only learner for a multi-class target, a classifier for a regression one).
    """
    where = f"model {spec.name!r}"
    if spec.factory is not None:
        model = _call(spec.factory, where)
        estimator = model
    else:
        assert spec.estimator is not None
        estimator = _construct(Step(estimator=spec.estimator, params=spec.params), where)
        model = estimator
        steps = _preprocessing(spec, schema, where)
        if steps:
            from river import compose

            model = compose.Pipeline(*steps, estimator)
    _check_fits(estimator, schema, where)
    target = schema.target
    if (
        target.type == "binary"
        and target.classes is not None
        and target.classes != [False, True]
        and not getattr(estimator, "_multiclass", False)
    ):
        model = BinaryClasses(model, target.classes[0], target.classes[1])
    return model


def _check_fits(estimator: Any, schema: FeatureSchema, where: str) -> None:
    if not (hasattr(estimator, "learn_one") and hasattr(estimator, "predict_one")):
        raise ConfigurationError(
            f"{where}: {type(estimator).__name__} has no learn_one/predict_one"
        )
    task = schema.target.type
    if task == "regression":
        if isinstance(estimator, river_base.Classifier):
            raise ConfigurationError(
                f"{where}: {type(estimator).__name__} is a classifier; the target of schema "
                f"{schema.name!r} is a regression: use a regressor (river.linear_model."
                "LinearRegression, river.tree.HoeffdingTreeRegressor, ...)"
            )
        return
    if not isinstance(estimator, river_base.Classifier):
        raise ConfigurationError(
            f"{where}: {type(estimator).__name__} is not a classifier; the target of schema "
            f"{schema.name!r} is {task}"
        )
    if task == "multiclass" and not estimator._multiclass:
        raise ConfigurationError(
            f"{where}: {type(estimator).__name__} is binary only; the target of schema "
            f"{schema.name!r} is multiclass: use river.linear_model.SoftmaxRegression, a tree, "
            "or wrap it in river.multiclass.OneVsRestClassifier"
        )


def _preprocessing(spec: ModelSpec, schema: FeatureSchema, where: str) -> list[Any]:
    if spec.preprocessing == "none":
        return []
    if spec.preprocessing != "auto":
        return [_construct(step, where) for step in spec.preprocessing]
    assert spec.estimator is not None
    if not (spec.estimator.startswith(_SCALED) or spec.estimator in _LINEAR_LEAVES):
        return []
    from river import compose, preprocessing

    schema = schema.served()  # derived features are numbers
    seen = {n: schema.features[n] for n in schema.model_features()}  # dropped ones never come
    numbers = [n for n, f in seen.items() if f.type in ("float", "int", "bool")]
    categories = [n for n, f in seen.items() if f.type in ("category", "string")]
    if not categories:
        return [preprocessing.StandardScaler()]
    scaled = compose.Select(*numbers) | preprocessing.StandardScaler()
    encoded = compose.Select(*categories) | preprocessing.OneHotEncoder()
    return [scaled + encoded if numbers else encoded]


def _construct(step: Step, where: str) -> Any:
    cls = _import(step.estimator, where)
    params = {
        key: _construct(Step.model_validate(value), f"{where}, parameter {key!r}")
        if isinstance(value, dict) and "estimator" in value
        else value
        for key, value in step.params.items()
    }
    try:
        return cls(**params)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(
            f"{where}: {step.estimator}({_args(params)}) failed: {exc}"
        ) from None


def _call(factory: str, where: str) -> Any:
    module, function = factory.split(":")
    make = _import(f"{module}.{function}", where)
    try:
        return make()
    except Exception as exc:
        raise ConfigurationError(f"{where}: factory {factory} failed: {exc!r}") from None


def _import(path: str, where: str) -> Any:
    module_name, _, attribute = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"{where}: cannot import {module_name!r} ({exc})") from None
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise ConfigurationError(f"{where}: {module_name} has no {attribute!r}") from None


def _args(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in params.items())[:200]
