"""Online model selection: which candidate should serve, by a metric over a recent window.

A switch needs the challenger ahead by a minimum gap (relative to the champion's value) and by
more than chance explains (``z`` standard errors of the difference, where the metric has one),
both to have learned a minimum number of examples, and a cool-down since the last switch, so
that two close candidates do not take turns with every batch. The test is unpaired (the
candidates' windows are compared as independent samples): candidates right on the same examples
make it conservative, never lax.
"""

from __future__ import annotations

import math
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
    #: standard errors of the difference the challenger must be ahead by (0: no test)
    z: float = 0.0

    @classmethod
    def for_task(
        cls,
        task: Task,
        metric: str,
        min_gap: float,
        min_examples: int,
        cooldown: int,
        z: float = 0.0,
    ) -> SelectionRule:
        """The rule with ``metric`` "auto" resolved to the task's main metric."""
        chosen = TASK_METRICS[task][0] if metric == "auto" else metric
        if chosen not in TASK_METRICS[task]:
            raise ValueError(
                f"selection metric {metric!r} is not one of {task}'s: {TASK_METRICS[task]}"
            )
        return cls(chosen, min_gap, min_examples, cooldown, z)


@dataclass(frozen=True)
class Switch:
    """A decision to serve another candidate, with the figures it was made on."""

    previous: str
    chosen: str
    metric: Metric
    previous_value: float
    chosen_value: float
    #: the difference in standard errors (None: the metric has none, or no champion score)
    z: float | None = None

    def reason(self) -> str:
        """One sentence for the version's description and the logs."""
        shown = "" if self.z is None else f" (z {min(self.z, 99.0):.2f})"
        return (
            f"{self.chosen} overtook {self.previous} on {self.metric}: "
            f"{self.chosen_value:.4f} against {self.previous_value:.4f}{shown}"
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
    z = None
    if current is not None:
        gap = abs(value - current) / max(abs(current), 1e-9)
        if not better(rule.metric, value, current) or gap < rule.min_gap:
            return None
        challenger_error, champion_error = best.error(rule.metric), champion.error(rule.metric)
        if challenger_error is not None and champion_error is not None:
            spread = math.hypot(challenger_error, champion_error)
            z = abs(value - current) / spread if spread > 0 else math.inf
            if z < rule.z:
                return None
    return Switch(champion.name, best.name, rule.metric, current or 0.0, value, z)
