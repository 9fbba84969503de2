"""Label coverage: the share of served predictions that got their label in time. Pure logic.

Predictions and labels are counted in buckets of event time. A bucket has *matured* once the
newest event time seen is more than ``horizon_s`` past it: its labels had their chance. The
coverage is over the matured buckets of the last ``window_s``. Event time, not wall-clock time,
so a replay of old events is judged as it was lived.
"""

from __future__ import annotations

from collections import defaultdict

from services.monitoring.detectors import Finding

SUBJECT = "label_coverage"
#: Fewest matured predictions before the coverage is judged at all.
MIN_PREDICTIONS = 100


class LabelCoverage:
    """Counts predictions and labelled predictions per event-time bucket."""

    def __init__(
        self,
        horizon_s: float,
        window_s: float,
        minimum: float,
        cooldown_s: float,
        bucket_s: float = 10.0,
    ) -> None:
        self.horizon_s = horizon_s
        self.window_s = window_s
        self.minimum = minimum
        self.cooldown_s = cooldown_s
        self.bucket_s = bucket_s
        self.predicted: defaultdict[int, int] = defaultdict(int)
        self.labeled: defaultdict[int, int] = defaultdict(int)
        self.watermark = 0.0
        self.quiet_until = 0.0
        self.detector = f"coverage<{minimum:g}"

    def predicted_at(self, event_time: float) -> None:
        """One prediction served for an event of this time."""
        self.predicted[int(event_time // self.bucket_s)] += 1
        self.watermark = max(self.watermark, event_time)

    def labeled_at(self, event_time: float) -> None:
        """One labelled prediction (a training example that carries a prediction)."""
        self.labeled[int(event_time // self.bucket_s)] += 1

    def value(self) -> tuple[float, int] | None:
        """(coverage, matured predictions) over the window, or None before there are enough."""
        newest = int((self.watermark - self.horizon_s) // self.bucket_s)  # last matured bucket
        oldest = newest - int(self.window_s // self.bucket_s)
        for bucket in [b for b in self.predicted if b < oldest]:
            del self.predicted[bucket]
            self.labeled.pop(bucket, None)
        matured = [b for b in self.predicted if oldest <= b < newest]
        predicted = sum(self.predicted[b] for b in matured)
        if predicted < MIN_PREDICTIONS:
            return None
        labeled = sum(min(self.labeled[b], self.predicted[b]) for b in matured)
        return labeled / predicted, predicted

    def check(self) -> Finding | None:
        """A finding when the coverage fell below the minimum (at most once per cool-down)."""
        current = self.value()
        if current is None or self.watermark < self.quiet_until:
            return None
        coverage, predicted = current
        if coverage >= self.minimum:
            return None
        self.quiet_until = self.watermark + self.cooldown_s
        return Finding(
            SUBJECT,
            self.detector,
            self.minimum,
            coverage,
            self.minimum - coverage,
            predicted,
            predicted,
        )
