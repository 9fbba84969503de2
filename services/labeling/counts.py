"""What became of every label and prediction in labeling: Prometheus counters and a log line.

Label outcomes: ``joined`` (an example was produced), ``duplicate`` (its event already had a
label), ``expired`` (its event's pending time had run out), ``unknown`` (parked, and its
prediction never came before the pending time ran out). ``early`` counts in addition the labels
that had to wait for their prediction; each of them later ends as ``joined`` or ``unknown``.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Literal, get_args

from services.core import metrics

LabelOutcome = Literal["joined", "early", "duplicate", "expired", "unknown"]
LABEL_OUTCOMES: tuple[LabelOutcome, ...] = get_args(LabelOutcome)

log = logging.getLogger(__name__)


class LabelingCounts:
    """Counts since start and since the last log line; one JSON line per sweep that saw news.

    A sweep with nothing new logs nothing, so an idle service does not log every interval.
    """

    def __init__(self, service: str) -> None:
        self.service = service
        self._labels = {o: metrics.LABELS.labels(service, o) for o in LABEL_OUTCOMES}
        self._unlabeled = metrics.UNLABELED_EXPIRED.labels(service)
        self._tasks = metrics.LABELING_TASKS.labels(service)
        self.totals: Counter[str] = Counter()
        self.recent: Counter[str] = Counter()

    def _add(self, name: str, count: int) -> None:
        if count:
            self.totals[name] += count
            self.recent[name] += count

    def labels(self, outcomes: Counter[LabelOutcome]) -> None:
        """Count a batch's labels by outcome."""
        for outcome, count in outcomes.items():
            self._labels[outcome].inc(count)
            self._add(outcome, count)

    def unlabeled_expired(self, count: int) -> None:
        """Count predictions whose label never came."""
        self._unlabeled.inc(count)
        self._add("unlabeled_expired", count)

    def tasks(self, count: int) -> None:
        """Count labeling tasks produced."""
        self._tasks.inc(count)
        self._add("tasks", count)

    def expired_events(self, count: int) -> None:
        """Count events closed by the sweep, whatever they held."""
        self._add("expired_events", count)

    def ignored(self, count: int) -> None:
        """Count predictions that came again, or after their event was closed."""
        self._add("ignored_inputs", count)

    def log_sweep(self) -> None:
        """Log what happened since the last line, with the totals, if anything did."""
        if not self.recent:
            return
        log.info(
            "labeling sweep",
            extra={
                "service": self.service,
                "since_last": dict(self.recent),
                "totals": dict(self.totals),
            },
        )
        self.recent.clear()
