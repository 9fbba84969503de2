"""Drift events training has accepted but not yet reacted to, waiting for post-change examples.

A detector fires a few dozen examples after a change: too few to retrain and validate on. The
reaction waits until enough examples of the new concept have been learned. The waiting list
is in Redis because the drift event's offset is committed once it is accepted here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import redis

from schemas import DriftEvent


@dataclass
class _Waiting:
    drift: DriftEvent
    remaining: int
    waited: int = 0


class AwaitingDrifts:
    """Drift events with the number of examples each still waits for."""

    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self.client = client
        self.key = f"eddy:{namespace}:awaiting-drifts"
        self.waiting: dict[str, _Waiting] = {}
        for raw in (client.hgetall(self.key) or {}).values():
            entry = json.loads(raw)
            drift = DriftEvent.model_validate(entry["drift"])
            self.waiting[drift.drift_id] = _Waiting(drift, entry["remaining"], entry["waited"])

    def add(self, drift: DriftEvent, examples: int) -> None:
        """Wait ``examples`` more examples before reacting to ``drift`` (once per drift_id)."""
        if drift.drift_id not in self.waiting:
            self.waiting[drift.drift_id] = _Waiting(drift, examples)
            self._save(self.waiting[drift.drift_id])

    def count_down(self, examples: int = 1) -> list[DriftEvent]:
        """``examples`` learned: the drift events now ready for their reaction."""
        ready = []
        for entry in self.waiting.values():
            entry.remaining -= examples
            entry.waited += examples
            if entry.remaining <= 0:
                ready.append(entry.drift)
        return ready

    def next_due(self) -> int:
        """Examples until the first waiting drift event is ready (0: one is ready now)."""
        return max(min((e.remaining for e in self.waiting.values()), default=0), 0)

    def waited(self, drift: DriftEvent) -> int:
        """Examples learned since ``drift`` was accepted."""
        entry = self.waiting.get(drift.drift_id)
        return entry.waited if entry else 0

    def remove(self, drift: DriftEvent) -> None:
        """Forget ``drift`` once reacted to."""
        if self.waiting.pop(drift.drift_id, None) is not None:
            self.client.hdel(self.key, drift.drift_id)

    def _save(self, entry: _Waiting) -> None:
        value = {
            "drift": entry.drift.model_dump(mode="json"),
            "remaining": entry.remaining,
            "waited": entry.waited,
        }
        self.client.hset(self.key, entry.drift.drift_id, json.dumps(value))
