"""The leaderboard: each candidate's standing, for Prometheus and ``eddy models leaderboard``.

Exported at most once a second, as gauges and as JSON in Redis, where its last ``HISTORY``
exports (each candidate's score by examples learned) are kept for ``eddy report``.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from services.core import metrics
from services.core.state import leaderboard_history_key, leaderboard_key
from services.training.learner import Race
from services.training.scores import TASK_METRICS, Metric
from services.training.selection import standings

SERVICE = "training"
#: Seconds between two exports: the board is for people and dashboards.
EXPORT_INTERVAL_S = 1.0
#: Exports kept in the history (an hour of a busy training).
HISTORY = 3600


def rows(race: Race, metric: Metric) -> list[dict[str, Any]]:
    """One row per candidate, best first by ``metric``."""
    board = []
    for rank, candidate in enumerate(standings(race, metric), start=1):
        task_metrics = TASK_METRICS[candidate.task]
        board.append(
            {
                "rank": rank,
                "candidate": candidate.name,
                "champion": candidate.name == race.champion,
                "process": candidate.spec.process,
                "metric": metric,
                "score": candidate.value(metric),
                "scores": {m: candidate.value(m) for m in task_metrics},
                "since_start": candidate.since_start(),
                "examples": candidate.learned,
                "errors": candidate.errors,
                "examples_per_s": round(candidate.examples_per_second(), 1),
                # examples training has learned that this candidate has not (yet)
                "behind": max(race.examples - (candidate.learned + candidate.errors), 0),
                "spec": candidate.spec.model_dump(exclude_defaults=True),
            }
        )
    return board


class Leaderboard:
    """Exports the race's standings: gauges per candidate, and the board as JSON in Redis."""

    def __init__(self, client: redis.Redis, prefix: str, model_name: str, metric: Metric) -> None:
        self.client = client
        self.key = leaderboard_key(prefix, model_name)
        self.history_key = leaderboard_history_key(prefix, model_name)
        self.model_name = model_name
        self.metric = metric
        self._last = 0.0
        self._errors_exported: dict[str, int] = {}
        self._pending: Race | None = None

    def flush(self) -> None:
        """Export what the last batches changed and ``update`` held back (between batches)."""
        if self._pending is not None:
            self.update(self._pending, force=True)

    def update(self, race: Race, force: bool = False) -> None:
        """Export the board if a second has passed since the last export (or ``force``).

        What is not exported yet goes out with the next ``flush``.
        """
        now = time.monotonic()
        self._pending = race
        if not force and now - self._last < EXPORT_INTERVAL_S:
            return
        self._last, self._pending = now, None
        board = rows(race, self.metric)
        for row in board:
            name = row["candidate"]
            metrics.CHAMPION.labels(SERVICE, self.model_name, name).set(int(row["champion"]))
            for metric, value in row["scores"].items():
                if value is not None:
                    metrics.CANDIDATE_SCORE.labels(SERVICE, self.model_name, name, metric).set(
                        value
                    )
            new_errors = row["errors"] - self._errors_exported.get(name, 0)
            metrics.CANDIDATE_ERRORS.labels(SERVICE, self.model_name, name).inc(max(new_errors, 0))
            self._errors_exported[name] = row["errors"]
        payload = {"updated_at": time.time(), "examples": race.examples, "candidates": board}
        point = {
            "examples": race.examples,
            "champion": race.champion,
            "metric": self.metric,
            "scores": {row["candidate"]: row["score"] for row in board},
        }
        pipe = self.client.pipeline(transaction=False)
        pipe.set(self.key, json.dumps(payload))
        pipe.rpush(self.history_key, json.dumps(point))
        pipe.ltrim(self.history_key, -HISTORY, -1)
        pipe.execute()
