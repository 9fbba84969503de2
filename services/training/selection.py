"""Online model selection: which candidate should serve, by a metric over a recent window.

A switch needs the challenger ahead by a minimum gap (relative to the champion's value), both to
have learned a minimum number of examples, and a cool-down since the last switch, so that two
close candidates do not take turns with every batch.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.models import Task
from services.training.learner import Member, Race
from services.training.scores import TASK_METRICS, Metric, better


@dataclass(frozen=True)
class SelectionRule:
    """When a candidate takes over from the champion."""

    metric: Metric
    min_gap: float
    min_examples: int
    cooldown: int

    @classmethod
    def for_task(
        cls, task: Task, metric: str, min_gap: float, min_examples: int, cooldown: int
    ) -> SelectionRule:
        """The rule with ``metric`` "auto" resolved to the task's main metric."""
        chosen = TASK_METRICS[task][0] if metric == "auto" else metric
        if chosen not in TASK_METRICS[task]:
            raise ValueError(
                f"selection metric {metric!r} is not one of {task}'s: {TASK_METRICS[task]}"
            )
        return cls(chosen, min_gap, min_examples, cooldown)


@dataclass(frozen=True)
class Switch:
    """A decision to serve another candidate, with the figures it was made on."""

    previous: str
    chosen: str
    metric: Metric
    previous_value: float
    chosen_value: float

    def reason(self) -> str:
        """One sentence for the version's description and the logs."""
        return (
            f"{self.chosen} overtook {self.previous} on {self.metric}: "
            f"{self.chosen_value:.4f} against {self.previous_value:.4f}"
        )


def standings(race: Race, metric: Metric) -> list[Member]:
    """Candidates best first by ``metric`` (those without a value yet last)."""
    members = race.members()
    scored = [c for c in members if c.value(metric) is not None]
    unscored = [c for c in members if c.value(metric) is None]
    reverse = not better(metric, 0.0, 1.0)  # higher is better: sort descending
    scored.sort(key=lambda c: c.value(metric) or 0.0, reverse=reverse)
    return scored + unscored


def choose(race: Race, rule: SelectionRule) -> Switch | None:
    """The switch the rule calls for now, or None to keep the champion."""
    if race.examples < rule.min_examples:
        return None
    if race.switched_at is not None and race.examples - race.switched_at < rule.cooldown:
        return None
    champion = race.leader
    current = champion.value(rule.metric)
    best = standings(race, rule.metric)[0]
    value = best.value(rule.metric)
    if best is champion or value is None or best.learned < rule.min_examples:
        return None
    if current is not None:
        gap = abs(value - current) / max(abs(current), 1e-9)
        if not better(rule.metric, value, current) or gap < rule.min_gap:
            return None
    return Switch(champion.name, best.name, rule.metric, current or 0.0, value)
