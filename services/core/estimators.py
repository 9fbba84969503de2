"""Small River estimators Eddy builds models from: class mapping and the no-change baselines.

They live here, not in training, because their instances travel in artifacts that serving
unpickles: the import path is part of the artifact format.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from river import base, dummy, stats


class BinaryClasses(base.Wrapper[Any], base.Classifier):
    """A binary classifier (true/false) that speaks a target's own two classes.

    River's binary learners (logistic regression, say) take booleans; a target declared with
    ``classes = ["DOWN", "UP"]`` gives strings. This maps ``positive`` to True and back.

    >>> from river import linear_model
    >>> model = BinaryClasses(linear_model.LogisticRegression(), "DOWN", "UP")
    >>> model.learn_one({"x": 1.0}, "UP")
    >>> sorted(model.predict_proba_one({"x": 1.0}))
    ['DOWN', 'UP']
    """

    def __init__(self, classifier: Any, negative: Any, positive: Any) -> None:
        self.classifier = classifier
        self.negative = negative
        self.positive = positive

    @property
    def _wrapped_model(self) -> Any:
        return self.classifier

    @property
    def _multiclass(self) -> bool:
        return False

    def learn_one(self, x: dict[Hashable, Any], y: Any, **kwargs: Any) -> None:
        """Learn ``y`` as True when it is the positive class."""
        self.classifier.learn_one(x, type(y) is type(self.positive) and y == self.positive)

    def predict_proba_one(self, x: dict[Hashable, Any], **kwargs: Any) -> dict[Any, float]:
        """Probabilities keyed by the target's classes."""
        proba = self.classifier.predict_proba_one(x)
        if not proba:
            return {}
        positive = float(proba.get(True, 0.0))
        return {self.negative: 1.0 - positive, self.positive: positive}


def no_change_classifier() -> Any:
    """The baseline that repeats the last label seen (strong on streams with runs)."""
    return dummy.NoChangeClassifier()


def mean_regressor() -> Any:
    """The baseline that predicts the mean of the labels so far."""
    return dummy.StatisticRegressor(stats.Mean())
