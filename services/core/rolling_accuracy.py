"""The share of correct predictions over a sliding window: training's and monitoring's score."""

from __future__ import annotations

from collections import deque


class RollingAccuracy:
    """Share of correct predictions among the last ``window`` labelled ones.

    A running count over a deque of outcomes: O(1) per update, which matters on training's
    per-example path (River's ``utils.Rolling(metrics.Accuracy)`` costs several times more).

    >>> accuracy = RollingAccuracy(window=4)
    >>> for correct in (True, False, True, True, True):
    ...     accuracy.update(correct)
    >>> accuracy.value, len(accuracy)
    (0.75, 4)
    """

    def __init__(self, window: int) -> None:
        self.window = window
        self._outcomes: deque[bool] = deque(maxlen=window)
        self._correct = 0

    def update(self, correct: bool) -> None:
        """Count one labelled prediction, forgetting the oldest once the window is full."""
        if len(self._outcomes) == self.window:
            self._correct -= self._outcomes[0]
        self._outcomes.append(correct)
        self._correct += correct

    @property
    def value(self) -> float | None:
        """The accuracy over the window, or None before the first labelled prediction."""
        return self._correct / len(self._outcomes) if self._outcomes else None

    def __len__(self) -> int:
        return len(self._outcomes)
