"""Active learning: how unsure a served prediction is, and whether a person should label it."""

from __future__ import annotations

from collections.abc import Mapping

from schemas import Prediction

#: Digits kept of an uncertainty: ``1 - 0.55`` is 0.44999999999999996 in floating point, which
#: would fall below a threshold of 0.45 that an operator reads as "0.55 or less is unsure".
_DIGITS = 12


def uncertainty(probabilities: Mapping[str, float] | None) -> float | None:
    """1 - the highest class probability, in [0, 1]; None without class probabilities.

    >>> uncertainty({"False": 0.55, "True": 0.45})
    0.45
    >>> uncertainty({"a": 1.0, "b": 0.0})
    0.0
    >>> uncertainty(None) is None  # a regressor: nothing to measure
    True
    """
    if not probabilities:
        return None
    return min(1.0, max(0.0, round(1.0 - max(probabilities.values()), _DIGITS)))


def uncertainty_worth_asking(prediction: Prediction, threshold: float) -> float | None:
    """The prediction's uncertainty if it is at least ``threshold``, else None.

    A prediction without a class (the model could not answer) or without probabilities is
    never worth a task: a task shows a person what the model predicted.
    """
    if prediction.prediction is None:
        return None
    unsure = uncertainty(prediction.probabilities)
    return unsure if unsure is not None and unsure >= threshold else None
