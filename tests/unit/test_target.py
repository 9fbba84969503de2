"""A label fits the declared target or is refused with a reason: never an exception later."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.core.feature_schema import FeatureSchema
from services.core.rejection import Rejection
from services.core.target import TargetSpec


def reason(target: TargetSpec, value: object) -> str | None:
    checked = target.check(value)
    return checked.reason if isinstance(checked, Rejection) else None


def test_a_binary_target_takes_booleans_and_0_or_1_as_booleans() -> None:
    binary = TargetSpec()
    assert binary.check(True) is True and binary.check(0) is False and binary.check(1) is True


@pytest.mark.parametrize("value", ["UP", 2, -5, 1e308, 0.5, None, [1], {"a": 1}])
def test_a_binary_target_refuses_anything_else(value: object) -> None:
    assert reason(TargetSpec(), value) == "wrong_type"


def test_a_binary_target_with_declared_classes_takes_exactly_those() -> None:
    updown = TargetSpec(classes=["DOWN", "UP"])
    assert updown.check("UP") == "UP" and updown.positive == "UP"
    assert reason(updown, "up") == "invalid_value"
    assert reason(updown, True) == "invalid_value"


def test_a_multiclass_target_discovers_classes_of_any_label_type() -> None:
    open_classes = TargetSpec(type="multiclass")
    assert [open_classes.check(v) for v in ("cat", 3, False)] == ["cat", 3, False]
    assert reason(open_classes, 2.5) == "wrong_type"
    assert reason(open_classes, "x" * 201) == "out_of_range"


def test_a_multiclass_target_with_known_classes_refuses_others_and_other_types() -> None:
    digits = TargetSpec(type="multiclass", classes=[0, 1, 2])
    assert digits.check(2) == 2
    assert reason(digits, 3) == "invalid_value"
    assert reason(digits, True) == "invalid_value"  # True is not the class 1
    assert reason(digits, "2") == "invalid_value"


def test_a_regression_target_takes_finite_numbers_within_its_range() -> None:
    price = TargetSpec(type="regression", min=0, max=100)
    assert price.check(3) == 3.0 and isinstance(price.check(3), float)
    assert reason(price, -1) == "out_of_range"
    assert reason(price, True) == "wrong_type"
    assert reason(price, "3") == "wrong_type"
    assert reason(price, 10**400) == "out_of_range"


@pytest.mark.parametrize(
    "declared",
    [
        {"type": "binary", "classes": ["a", "b", "c"]},
        {"type": "regression", "classes": [1, 2]},
        {"type": "binary", "min": 0},
        {"type": "multiclass", "classes": []},
        {"type": "multiclass", "classes": ["a", "a"]},
        {"type": "ordinal"},
    ],
)
def test_an_inconsistent_target_is_refused_when_the_schema_loads(
    declared: dict[str, object],
) -> None:
    with pytest.raises(ValidationError):
        FeatureSchema.model_validate({"name": "s", "features": {}, "target": declared})


def test_a_schema_without_a_target_table_has_a_binary_target() -> None:
    assert FeatureSchema.load("sea").target == TargetSpec(type="binary")
