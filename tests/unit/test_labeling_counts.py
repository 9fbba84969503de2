"""labeling counts every label and prediction, and says so in one log line per eventful sweep."""

from __future__ import annotations

import json
import logging
import uuid
from collections import Counter

import pytest

from services.core.logging import JsonLineFormatter
from services.core.metrics import REGISTRY
from services.labeling.counts import LabelingCounts, LabelOutcome


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_label_outcomes_and_unlabeled_predictions_reach_the_prometheus_counters() -> None:
    service = f"labeling-{uuid.uuid4().hex[:6]}"
    counts = LabelingCounts(service)
    counts.labels(Counter[LabelOutcome]({"joined": 3, "duplicate": 1}))
    counts.labels(Counter[LabelOutcome]({"joined": 2, "unknown": 1}))
    counts.unlabeled_expired(4)
    counts.tasks(2)
    assert _sample("eddy_labels_total", service=service, outcome="joined") == 5
    assert _sample("eddy_labels_total", service=service, outcome="duplicate") == 1
    assert _sample("eddy_labels_total", service=service, outcome="unknown") == 1
    assert _sample("eddy_predictions_unlabeled_total", service=service) == 4
    assert _sample("eddy_labeling_tasks_total", service=service) == 2


def test_a_sweep_logs_what_happened_since_the_last_line_and_the_totals(
    caplog: pytest.LogCaptureFixture,
) -> None:
    counts = LabelingCounts("labeling-log-test")
    with caplog.at_level(logging.INFO, logger="services.labeling.counts"):
        counts.labels(Counter[LabelOutcome]({"joined": 2}))
        counts.unlabeled_expired(1)
        counts.log_sweep()
        counts.labels(Counter[LabelOutcome]({"expired": 1}))
        counts.log_sweep()
    first, second = (json.loads(JsonLineFormatter().format(r)) for r in caplog.records)
    assert first["since_last"] == {"joined": 2, "unlabeled_expired": 1}
    assert second["since_last"] == {"expired": 1}
    assert second["totals"] == {"joined": 2, "unlabeled_expired": 1, "expired": 1}


def test_a_sweep_with_nothing_new_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    counts = LabelingCounts("labeling-quiet-test")
    with caplog.at_level(logging.INFO, logger="services.labeling.counts"):
        counts.labels(Counter[LabelOutcome]({"joined": 0}))
        counts.unlabeled_expired(0)
        counts.log_sweep()
    assert caplog.records == []
