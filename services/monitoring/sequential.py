"""An always-valid sequential test of two models' live losses, for canary and shadow decisions.

A canary is checked after every labelled event, so a fixed-horizon test (a z-test at 5%) would
be checked thousands of times and, on an identical challenger, "find" a difference about a
third of the time. The mixture sequential probability ratio test (mSPRT; Johari, Pekelis and
Walsh, "Always valid inference", 2017) may be checked as often as one likes: under no
difference, the chance that its likelihood ratio *ever* reaches ``1 / alpha`` is at most
``alpha``. Its statistic, for an observed difference ``d`` of mean losses with variance ``V``
and a normal mixture of effects with variance ``tau2``, is

    sqrt(V / (V + tau2)) * exp(tau2 * d**2 / (2 * V * (V + tau2)))

(in the normal approximation: ``MIN_LABELS`` per model before any decision). Losses are 0/1 for
classes (wrong or right) and absolute errors for numbers, so one test serves every task.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from schemas.base import Target

#: Labelled events each side needs before the normal approximation is trusted.
MIN_LABELS = 100
#: The mixture's spread, as a share of the losses' standard deviation: the effect size the test
#: is quickest to find (a tenth of a standard deviation: 4 points of accuracy near 80%).
EFFECT = 0.1

Decision = Literal["promote", "rollback", "continue"]


def loss(prediction: Target | None, label: Target, regression: bool) -> float:
    """The absolute error for a number (no answer counts as 0), else 0/1 (1: wrong or none)."""
    if regression:
        guess = prediction if isinstance(prediction, int | float) else 0.0
        return abs(float(guess) - float(label))
    return 0.0 if prediction == label else 1.0


@dataclass
class Losses:
    """Count, mean and spread of a stream of losses (Welford's update)."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def add(self, value: float) -> None:
        """Count one more loss."""
        self.n += 1
        delta = value - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (value - self.mean)

    @property
    def variance(self) -> float:
        """The sample variance (0 below two losses)."""
        return self.m2 / (self.n - 1) if self.n > 1 else 0.0


@dataclass(frozen=True)
class Verdict:
    """What the evidence says so far, with its figures."""

    decision: Decision
    #: champion's mean loss minus the challenger's: above 0, the challenger is better
    difference: float
    #: the mSPRT likelihood ratio of "some difference" against "none"
    likelihood_ratio: float
    champion_labels: int
    challenger_labels: int

    def figures(self) -> dict[str, float]:
        """The verdict as numbers, for a deployment record and the logs."""
        return {
            "difference": self.difference,
            "likelihood_ratio": min(self.likelihood_ratio, 1e300),
            "champion_labels": float(self.champion_labels),
            "challenger_labels": float(self.challenger_labels),
        }


def log_mixture_ratio(difference: float, variance: float, tau2: float) -> float:
    """The log of the mSPRT statistic (see the module's docstring)."""
    if variance <= 0 or tau2 <= 0:
        return 0.0
    return 0.5 * math.log(variance / (variance + tau2)) + tau2 * difference**2 / (
        2 * variance * (variance + tau2)
    )


@dataclass
class SequentialTest:
    """Decides between a champion and a challenger from their live losses.

    ``promote_alpha`` bounds the chance of promoting a challenger no better than the champion
    however often the test is checked; ``rollback_alpha`` does the same for rolling back one no
    worse (a cheaper mistake: the champion stays).
    """

    promote_alpha: float = 0.05
    rollback_alpha: float = 0.05
    min_labels: int = MIN_LABELS
    effect: float = EFFECT
    champion: Losses = field(default_factory=Losses)
    challenger: Losses = field(default_factory=Losses)

    def verdict(self) -> Verdict:
        """Promote, roll back or go on, from two independent groups' losses (a canary)."""
        a, b = self.champion, self.challenger
        difference = a.mean - b.mean
        if min(a.n, b.n) < self.min_labels:
            return Verdict("continue", difference, 1.0, a.n, b.n)
        variance = a.variance / a.n + b.variance / b.n
        pooled = (a.m2 + b.m2) / max(a.n + b.n - 2, 1)
        return self._decide(difference, variance, pooled, a.n, b.n)

    def _decide(
        self, difference: float, variance: float, pooled: float, n_a: int, n_b: int
    ) -> Verdict:
        tau2 = (self.effect**2) * pooled
        log_ratio = log_mixture_ratio(difference, variance, tau2)
        ratio = math.exp(min(log_ratio, 700.0))
        decision: Decision = "continue"
        if difference > 0 and log_ratio >= -math.log(self.promote_alpha):
            decision = "promote"
        elif difference < 0 and log_ratio >= -math.log(self.rollback_alpha):
            decision = "rollback"
        return Verdict(decision, difference, ratio, n_a, n_b)


@dataclass
class PairedTest(SequentialTest):
    """The same test on paired losses: both models answered the same events (a shadow).

    Pairing removes the events' own difficulty from the comparison, so it needs fewer labels.
    """

    differences: Losses = field(default_factory=Losses)

    def add(self, champion_loss: float, challenger_loss: float) -> None:
        """One event both models answered, with its label."""
        self.champion.add(champion_loss)
        self.challenger.add(challenger_loss)
        self.differences.add(champion_loss - challenger_loss)

    def verdict(self) -> Verdict:
        """Promote, roll back or go on, from the paired differences."""
        d = self.differences
        if d.n < self.min_labels:
            return Verdict("continue", d.mean, 1.0, d.n, d.n)
        pooled = (self.champion.m2 + self.challenger.m2) / max(2 * d.n - 2, 1)
        return self._decide(d.mean, d.variance / d.n, pooled, d.n, d.n)
