"""Prequential scores of one candidate: each prediction is scored before its label is learned.

Classifiers: accuracy, macro-F1 and log loss; regressors: MAE, RMSE and R². Each over the last
``window`` examples (what selection compares) and accuracy or MAE also since the start.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from typing import Any, Literal

from schemas.models import Task

Metric = Literal["accuracy", "macro_f1", "log_loss", "mae", "rmse", "r2"]
#: Metrics where less is better; selection compares the others the other way round.
LOWER_IS_BETTER: frozenset[str] = frozenset({"log_loss", "mae", "rmse"})
#: The metrics of each task, the one selection uses by default first.
TASK_METRICS: dict[Task, tuple[Metric, ...]] = {
    "binary": ("accuracy", "macro_f1", "log_loss"),
    "multiclass": ("accuracy", "macro_f1", "log_loss"),
    "regression": ("mae", "rmse", "r2"),
}
#: Probability floor of the log loss, so one confident miss costs about 35, not infinity.
_EPSILON = 1e-15


class Prequential:
    """Test-then-train scores of one model over a recent window and since the start.

    One deque of (loss, second loss, label, prediction) over the window with running sums of
    the two losses (and of the second's square, for its spread): the per-example work is a few
    additions, as it runs for every candidate on every example. Macro-F1 and R² are computed
    from the window when read (the leaderboard reads them once a second), not kept up to date
    on every example.
    """

    def __init__(self, task: Task, window: int) -> None:
        self.task = task
        self.window = window
        self.examples = 0
        self._total = 0.0  # hits (classification) or absolute errors (regression) since start
        self._recent: deque[tuple[float, float, Any, Any]] = deque(maxlen=window)
        self._main = 0.0  # sum over the window: hits, or absolute errors
        self._second = 0.0  # sum over the window: log losses, or squared errors
        self._second_sq = 0.0  # sum over the window of the second loss squared

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore a pickled one; one saved before the square was kept gets it from its window."""
        self.__dict__.update(state)
        if "_second_sq" not in state:
            self._second_sq = sum(second * second for _, second, _, _ in self._recent)

    def loss(self, label: Any, prediction: Any) -> float:
        """What one prediction costs: 0 or 1 for a class, the absolute error for a number."""
        if self.task == "regression":
            return abs(float(label) - float(prediction)) if prediction is not None else math.nan
        return 0.0 if type(prediction) is type(label) and prediction == label else 1.0

    def update(self, label: Any, prediction: Any, proba: dict[Any, float] | None) -> float:
        """Score one prediction made before ``label`` was learned; returns its loss."""
        if self.task == "regression":
            if prediction is None:
                return math.nan
            error = abs(float(label) - float(prediction))
            main, second = error, error * error
            self._total += error
            loss = error
        else:
            hit = type(prediction) is type(label) and prediction == label
            p = proba.get(label, 0.0) if proba else 0.0
            main, second = (1.0 if hit else 0.0), -math.log(min(max(p, _EPSILON), 1.0))
            self._total += main
            loss = 1.0 - main
        self.examples += 1
        recent = self._recent
        if len(recent) == self.window:
            old_main, old_second, _, _ = recent[0]
            self._main -= old_main
            self._second -= old_second
            self._second_sq -= old_second * old_second
        recent.append((main, second, label, prediction))
        self._main += main
        self._second += second
        self._second_sq += second * second
        return loss

    def value(self, metric: Metric) -> float | None:
        """A metric over the window; None before any example (or for another task's metric)."""
        count = len(self._recent)
        if metric not in TASK_METRICS[self.task] or not count:
            return None
        if metric in ("accuracy", "mae"):
            return self._main / count
        if metric == "log_loss":
            return self._second / count
        if metric == "rmse":
            return math.sqrt(max(self._second, 0.0) / count)
        if metric == "macro_f1":
            return macro_f1([(label, prediction) for _, _, label, prediction in self._recent])
        return r2([(float(label), float(prediction)) for _, _, label, prediction in self._recent])

    def error(self, metric: Metric) -> float | None:
        """The standard error of ``value(metric)``: how far chance alone moves it.

        From the per-example losses over the window (accuracy: hits; MAE: absolute errors, whose
        squares are the squared errors; log loss: its own square kept too; RMSE by the delta
        method). None for macro-F1 and R², which are not means of per-example losses.
        """
        n = len(self._recent)
        if metric not in TASK_METRICS[self.task] or not n:
            return None
        if metric == "accuracy":
            p = self._main / n
            variance = p * (1.0 - p)
        elif metric == "mae":
            variance = self._second / n - (self._main / n) ** 2
        elif metric in ("log_loss", "rmse"):
            mean = self._second / n
            variance = self._second_sq / n - mean * mean
            if metric == "rmse":  # d sqrt(m) = dm / (2 sqrt(m))
                return math.sqrt(max(variance, 0.0) / n) / (2.0 * math.sqrt(mean)) if mean else 0.0
        else:
            return None
        return math.sqrt(max(variance, 0.0) / n)

    def since_start(self) -> float | None:
        """Accuracy (classification) or MAE (regression) over every example scored."""
        return self._total / self.examples if self.examples else None

    def values(self) -> dict[str, float]:
        """Every metric of the task that has a value, and ``<main>_since_start``."""
        shown: dict[str, float] = {
            m: v for m in TASK_METRICS[self.task] if (v := self.value(m)) is not None
        }
        total = self.since_start()
        if total is not None:
            shown[f"{TASK_METRICS[self.task][0]}_since_start"] = total
        return shown


def macro_f1(pairs: list[tuple[Any, Any]]) -> float:
    """The mean over classes seen (as label or prediction) of 2 TP / (predicted + actual).

    >>> round(macro_f1([("a", "a"), ("b", "a"), ("b", "b"), ("a", "a")]), 4)
    0.7333
    """
    hits: Counter[Any] = Counter()
    predicted: Counter[Any] = Counter()
    actual: Counter[Any] = Counter()
    for label, prediction in pairs:
        actual[label] += 1
        predicted[prediction] += 1
        if label == prediction:
            hits[label] += 1
    classes = actual.keys() | predicted.keys()
    if not classes:
        return 0.0
    return sum(2 * hits[c] / (actual[c] + predicted[c]) for c in classes) / len(classes)


def r2(pairs: list[tuple[float, float]]) -> float:
    """The coefficient of determination of (label, prediction) pairs (0 when labels are flat).

    >>> r2([(1.0, 1.0), (2.0, 2.0), (3.0, 2.0)])
    0.5
    """
    mean = sum(label for label, _ in pairs) / len(pairs)
    total = sum((label - mean) ** 2 for label, _ in pairs)
    residual = sum((label - prediction) ** 2 for label, prediction in pairs)
    return 1.0 - residual / total if total > 0 else 0.0


def better(metric: Metric, a: float, b: float) -> bool:
    """True when ``a`` is a better value of ``metric`` than ``b``."""
    return a < b if metric in LOWER_IS_BETTER else a > b
