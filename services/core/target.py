"""What a deployment predicts (binary, multi-class or regression) and the check of one label.

A label that does not fit the declared target is a dead letter with a reason, never an
exception inside a learner: every service that takes labels checks them here first.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.base import Target
from services.core.rejection import Rejection

TargetType = Literal["binary", "multiclass", "regression"]
#: Longest class name accepted: classes become Prometheus label values and JSON keys.
MAX_CLASS_LENGTH = 200


def same_value(a: object, b: object) -> bool:
    """Equal and of the same JSON type: ``True`` is not the class ``1``, nor ``1`` is ``1.0``.

    >>> same_value(True, 1), same_value("UP", "UP"), same_value(2, 2)
    (False, True, True)
    """
    return type(a) is type(b) and a == b


class TargetSpec(BaseModel):
    """The ``[target]`` table of a feature schema: what the labels are.

    ``classes`` of a binary target are ``[negative, positive]``; without them its labels are
    booleans (or 0 and 1). A multi-class target with ``classes`` refuses other labels; without
    them, classes are discovered as they come. A regression target takes finite numbers within
    ``min`` and ``max``.

    >>> TargetSpec(type="binary", classes=["DOWN", "UP"]).check("UP")
    'UP'
    >>> TargetSpec(type="binary").check(1)
    True
    >>> TargetSpec(type="regression", min=0).check(-1).reason
    'out_of_range'
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field("label", min_length=1, description="The label's column in your data.")
    type: TargetType = "binary"
    classes: list[bool | int | str] | None = Field(
        None, description="Known classes; binary: [negative, positive]."
    )
    min: float | None = Field(None, description="Smallest regression label accepted.")
    max: float | None = Field(None, description="Largest regression label accepted.")

    @model_validator(mode="after")
    def _consistent(self) -> TargetSpec:
        if self.type == "regression" and self.classes is not None:
            raise ValueError("a regression target has no classes")
        if self.type != "regression" and (self.min is not None or self.max is not None):
            raise ValueError(f"a {self.type} target has no min or max (they are for regression)")
        if self.classes is not None:
            if self.type == "binary" and len(self.classes) != 2:
                raise ValueError(
                    f"a binary target has two classes, [negative, positive]: got {self.classes}"
                )
            if not self.classes:
                raise ValueError("classes is empty: list them, or leave it out to discover them")
            for i, cls in enumerate(self.classes):
                if any(same_value(cls, other) for other in self.classes[:i]):
                    raise ValueError(f"class {cls!r} is listed twice")
                if isinstance(cls, str) and not 0 < len(cls) <= MAX_CLASS_LENGTH:
                    raise ValueError(f"class names are 1 to {MAX_CLASS_LENGTH} characters")
        return self

    @property
    def is_classification(self) -> bool:
        """True for binary and multi-class targets."""
        return self.type != "regression"

    @property
    def positive(self) -> bool | int | str:
        """The positive class of a binary target."""
        return True if self.classes is None else self.classes[1]

    def check(self, value: Any) -> Target | Rejection:
        """The label in its canonical form, or why it does not fit this target."""
        if self.type == "regression":
            return self._number(value)
        if self.classes is not None:
            if any(same_value(value, cls) for cls in self.classes):
                return value  # type: ignore[no-any-return]
            if self.type == "binary" and self.classes == [False, True]:
                return self._boolean(value)
            return Rejection("invalid_value", f"label {_shown(value)} is not one of {self.classes}")
        if self.type == "binary":
            return self._boolean(value)
        if isinstance(value, bool | int):
            return value
        if isinstance(value, str):
            if 0 < len(value) <= MAX_CLASS_LENGTH:
                return value
            return Rejection("out_of_range", f"class names are 1 to {MAX_CLASS_LENGTH} characters")
        return Rejection(
            "wrong_type", f"a multiclass label is a string, integer or boolean, not {_shown(value)}"
        )

    def _boolean(self, value: Any) -> Target | Rejection:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        return Rejection(
            "wrong_type",
            f"a binary label is true/false (or 0/1), not {_shown(value)}; for other classes "
            "declare them in the schema's [target]: classes = [negative, positive]",
        )

    def _number(self, value: Any) -> Target | Rejection:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return Rejection("wrong_type", f"a regression label is a number, not {_shown(value)}")
        try:
            number = float(value)
        except OverflowError:
            return Rejection("out_of_range", "label: integer too large")
        if not math.isfinite(number):
            return Rejection("invalid_value", f"label {value} is not a finite number")
        if (self.min is not None and number < self.min) or (
            self.max is not None and number > self.max
        ):
            return Rejection("out_of_range", f"label {number} outside [{self.min}, {self.max}]")
        return number


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
