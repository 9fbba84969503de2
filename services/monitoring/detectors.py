"""Monitoring's pure logic: drift detectors that turn one stream of numbers into drift findings.

No I/O here, so the statistics are tested without servers (tests/unit/test_drift_detectors.py).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Literal, Protocol

from river.drift import ADWIN

# monitoring's accuracy KPI; it lives in core because training scores with it too
from services.core.rolling_accuracy import RollingAccuracy as RollingAccuracy

#: Which changes of the mean count: ``up`` only (an error rate getting worse), or ``both``.
Direction = Literal["up", "both"]
#: The unit of a finding's magnitude: the raw change of the mean, or that change in units of the
#: pooled standard deviation of the two windows (Cohen's d), so features of any scale compare.
Scale = Literal["raw", "std"]
#: Observations a watch keeps to place a detected change; a change older than this is placed
#: at this depth, which understates it a little (the older part then holds some new regime).
RECENT = 1024
#: Fewest observations on either side of a change point, so one outlier cannot be a regime.
MIN_PART = 5


class WindowDetector(Protocol):
    """What a watch needs of its detector: River's ADWIN.

    The watch relies on ADWIN keeping every observation since it last started over (in merged
    buckets, so ``total`` is exact) and starting over on the update after a detection.
    """

    @property
    def drift_detected(self) -> bool: ...

    @property
    def width(self) -> float: ...

    @property
    def total(self) -> float: ...

    def update(self, x: float) -> None: ...


@dataclass(frozen=True, slots=True)
class Finding:
    """A change one detector saw in one subject: what a ``DriftEvent`` is made of."""

    subject: str
    detector: str
    before: float
    """Mean of the window before the located change point."""
    after: float
    """Mean of the window since the located change point."""
    magnitude: float | None
    """``after - before`` in the watch's scale; None when a ``std`` scale has no spread."""
    window: int
    """ADWIN's width right after the detection: the observations it kept."""
    recent: int
    """Observations since the located change point: how long ago the change happened."""


class DriftWatch:
    """One ADWIN over one subject, with the rules that make its alarms worth publishing.

    ADWIN signals any significant change of the mean in either direction, and signals again
    whenever the stream keeps moving. ``DriftWatch`` publishes only the changes in
    ``direction``, none in the first ``min_events`` updates (the window has too little history
    to compare), and none for ``cooldown_events`` updates after one it published, so that one
    change gives one finding. ADWIN learns from every update in all these cases and starts over
    after each detection, so a suppressed change becomes the new reference instead of firing
    later.

    ADWIN says *that* the mean changed, not where: it cuts its window at a bucket boundary that
    is often far older than the change, which would understate the change several times over.
    So the watch keeps the last ``RECENT`` observations and the count, mean and squares of the
    whole window, and at a detection places the change where splitting the window into an older
    and a recent part explains the most variance (the least-squares change point). The finding's
    ``before`` and ``after`` are the means of those two parts.

    >>> watch = DriftWatch("error", 0.002, min_events=200, cooldown_events=1000, direction="up")
    >>> findings = [watch.update(float(i >= 1000 and i % 2 == 0)) for i in range(2000)]
    >>> [(i, f.before, f.after, f.recent) for i, f in enumerate(findings) if f is not None]
    [(1023, 0.0, 0.5, 24)]
    """

    def __init__(
        self,
        subject: str,
        delta: float,
        *,
        min_events: int,
        cooldown_events: int,
        direction: Direction = "both",
        scale: Scale = "raw",
    ) -> None:
        self.subject = subject
        self.delta = delta
        self.min_events = min_events
        self.cooldown_events = cooldown_events
        self.direction = direction
        self.scale = scale
        self.detector: WindowDetector = ADWIN(delta=delta)  # type: ignore[no-untyped-call]
        self.name = f"ADWIN(delta={delta})"
        self.updates = 0
        self._quiet_until = -1
        self._recent: deque[float] = deque(maxlen=RECENT)
        self._count = 0
        self._mean = 0.0
        self._squares = 0.0

    @property
    def window_size(self) -> int:
        """Observations since the detector last started over (ADWIN's width between detections)."""
        return self._count

    @property
    def window_mean(self) -> float:
        """Mean of those observations."""
        return self._mean

    def update(self, x: float) -> Finding | None:
        """Learn one observation; a finding when it completes a change worth publishing."""
        self.updates += 1
        self._recent.append(x)
        self._count += 1
        deviation = x - self._mean
        self._mean += deviation / self._count
        self._squares += deviation * (x - self._mean)
        self.detector.update(x)
        if not self.detector.drift_detected:
            return None
        finding = self._measure()
        # River's ADWIN empties its window on the update after a detection: the mirror follows.
        self._recent.clear()
        self._count, self._mean, self._squares = 0, 0.0, 0.0
        if finding is None or self.updates < self.min_events or self.updates <= self._quiet_until:
            return None
        self._quiet_until = self.updates + self.cooldown_events
        return finding

    def _measure(self) -> Finding | None:
        """The change just detected, or None when it goes against ``direction``."""
        split = self._locate_change()
        if split is None:
            return None
        recent, before, after = split
        change = after - before
        if self.direction == "up" and change <= 0:
            return None
        magnitude: float | None = change
        if self.scale == "std":
            # Squares of the window = within each part + between the parts; keep the within.
            between = (self._count - recent) * recent / self._count * change * change
            pooled_variance = (self._squares - between) / self._count
            magnitude = change / math.sqrt(pooled_variance) if pooled_variance > 1e-12 else None
        return Finding(
            self.subject, self.name, before, after, magnitude, int(self.detector.width), recent
        )

    def _locate_change(self) -> tuple[int, float, float] | None:
        """(recent count, older mean, recent mean) at the split that explains the most variance.

        A split into ``n - m`` older and ``m`` recent observations explains
        ``m (n - m) / n * (mean_recent - mean_older)**2`` of the window's squares; the search
        runs over the last ``RECENT`` observations only, once per detection.
        """
        count, total = self._count, self._mean * self._count
        best_score, best = -1.0, None
        suffix = 0.0
        for recent, x in enumerate(reversed(self._recent), start=1):
            older = count - recent
            if older < MIN_PART:
                break
            suffix += x
            if recent < MIN_PART:
                continue
            after, before = suffix / recent, (total - suffix) / older
            score = recent * older * (after - before) ** 2
            if score > best_score:
                best_score, best = score, (recent, before, after)
        return best
