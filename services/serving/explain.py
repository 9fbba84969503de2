"""Why a model answered as it did: each prediction's largest feature contributions.

Linear models are explained exactly: a feature's contribution is its weight times its scaled
value, so the contributions and the intercept add up to the logit of the class answered (a
binary model's: of True) or to the number predicted. Trees and forests get path contributions
(Saabas): walking from the root to the row's leaf, each split moves the probability of the
answered class from its parent's class distribution to its child's, and that move is the split
feature's; a forest averages its trees' contributions with its voting weights. (What a leaf's
naive Bayes adds beyond its class distribution is no split's, and is left out.)

Only the ``TOP`` largest by size are kept, largest first. Linear models are explained a whole
batch at a time with numpy; trees walk River's own nodes, event by event.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from schemas.base import Features, Target

#: Contributions kept per prediction.
TOP = 5
Explanation = dict[str, float]


class Explainer(Protocol):
    """Explains a batch of answers of one model."""

    def explain_many(
        self, rows: Sequence[Features], answers: Sequence[Target | None]
    ) -> list[Explanation | None]:
        """Each row's top contributions toward its answer (None where there is none)."""
        ...


def explainer_for(model: Any, names: Sequence[str]) -> Explainer | None:
    """The explainer of a River model over numeric features, or None for a model it cannot."""
    from services.core.onnx_compile import NotCompilable, linear_parts

    if type(model).__name__ in ("HoeffdingTreeClassifier", "ARFClassifier"):
        try:
            return TreeExplainer(model)
        except NotCompilable:  # a forest with no trees yet
            return None
    try:
        scaler, estimator = linear_parts(model)
    except NotCompilable:
        return None
    return LinearExplainer(scaler, estimator, list(names))


class LinearExplainer:
    """Exact contributions of a scaled linear model, a batch at a time."""

    def __init__(self, scaler: Any, estimator: Any, names: list[str]) -> None:
        from services.core.onnx_compile import inverse_std

        self.names = names
        self.means = np.array(
            [scaler.means.get(n, 0.0) if scaler is not None else 0.0 for n in names]
        )
        self.scales = np.array(
            [inverse_std(scaler, n) if scaler is not None else 1.0 for n in names]
        )
        self.softmax = type(estimator).__name__ == "SoftmaxRegression"
        if self.softmax:
            self.weights = {
                c: np.array([w.get(n, 0.0) for n in names]) for c, w in estimator.weights.items()
            }
        else:
            self.weight = np.array([estimator._weights.get(n, 0.0) for n in names])

    def explain_many(
        self, rows: Sequence[Features], answers: Sequence[Target | None]
    ) -> list[Explanation | None]:
        """Weight times scaled value, per feature; a feature a row lacks adds nothing."""
        if not rows:
            return []
        names = self.names
        matrix = np.array([[row.get(n, np.nan) for n in names] for row in rows], np.float64)
        scaled = np.nan_to_num((matrix - self.means) * self.scales, nan=0.0)
        if self.softmax:
            weights = np.array(
                [self.weights.get(a, np.zeros(len(names))) for a in answers], np.float64
            )
            contributions = scaled * weights
        else:
            contributions = scaled * self.weight
        return [_top(names, row) for row in contributions.tolist()]


class TreeExplainer:
    """Path contributions of a Hoeffding tree or a forest of them, event by event."""

    def __init__(self, model: Any) -> None:
        from services.core.onnx_trees import voting_trees

        voting = voting_trees(model)
        total = sum(weight for _, weight in voting) or 1.0
        self.trees = [(tree, weight / total) for tree, weight in voting]

    def explain_many(
        self, rows: Sequence[Features], answers: Sequence[Target | None]
    ) -> list[Explanation | None]:
        """Each row's path contributions toward its answered class."""
        return [self.explain(row, answer) for row, answer in zip(rows, answers, strict=True)]

    def explain(self, row: Features, answer: Target | None) -> Explanation | None:
        """One row's path contributions (None without an answer)."""
        if answer is None:
            return None
        totals: dict[str, float] = {}
        for tree, weight in self.trees:
            node = tree._root
            while node is not None and hasattr(node, "children"):
                try:
                    child = node.next(row)
                except KeyError:  # a missing feature: River's most travelled path
                    child = node.most_common_path()[1]
                change = _share(child.stats, answer) - _share(node.stats, answer)
                totals[node.feature] = totals.get(node.feature, 0.0) + weight * change
                node = child
        return _top(list(totals), list(totals.values()))


def _share(stats: Any, answer: Target) -> float:
    if not isinstance(stats, dict):
        return 0.0
    total = sum(stats.values())
    return float(stats.get(answer, 0.0)) / total if total else 0.0


def _top(names: Sequence[str], values: Sequence[float]) -> Explanation:
    pairs = heapq.nlargest(TOP, zip(names, values, strict=True), key=lambda p: abs(p[1]))
    return {name: float(value) for name, value in pairs if value != 0.0}
