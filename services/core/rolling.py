"""A mean over a sliding window: training's scores and monitoring's error KPI."""

from __future__ import annotations

from collections import deque


class RollingMean:
    """The mean of the last ``window`` values, O(1) per update.

    >>> mean = RollingMean(2)
    >>> for value in (1.0, 2.0, 4.0):
    ...     mean.update(value)
    >>> mean.value, len(mean)
    (3.0, 2)
    """

    def __init__(self, window: int) -> None:
        self._values: deque[float] = deque(maxlen=window)
        self._sum = 0.0

    def update(self, value: float) -> None:
        """Add a value, forgetting the oldest once the window is full."""
        values = self._values
        if len(values) == values.maxlen:
            self._sum -= values[0]
        values.append(value)
        self._sum += value

    @property
    def value(self) -> float | None:
        """The mean, or None before the first value."""
        return self._sum / len(self._values) if self._values else None

    def __len__(self) -> int:
        return len(self._values)
