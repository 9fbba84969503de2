"""The online learner behind training: test-then-train, prequential score, drift retraining.

Pure logic, no I/O: the service feeds it examples and asks it for artifacts to publish.
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from schemas.base import Features, Target
from services.core.rolling_accuracy import RollingAccuracy

#: Passes over the recent window when retraining after a drift: one pass over a few hundred
#: examples leaves SGD short of convergence; three gets within a point of a long-trained model.
RETRAIN_PASSES = 3


@dataclass(frozen=True, slots=True)
class Example:
    """One labelled example, with where it came from (for lineage)."""

    features: Features
    label: Target
    partition: int
    offset: int


def accuracy(model: Any, examples: Sequence[Example]) -> float:
    """Share of ``examples`` the model gets right (0 when there are none)."""
    if not examples:
        return 0.0
    hits = sum(bool(model.predict_one(e.features) == e.label) for e in examples)
    return float(hits) / len(examples)


@dataclass
class Candidate:
    """A model retrained after a drift, with its validation against the champion."""

    model: Any
    score: float
    champion_score: float
    window: list[Example]
    held_out: list[Example]

    def passes(self, min_gain: float) -> bool:
        """The validation rule: at least as good as the champion, plus ``min_gain``."""
        return self.score >= self.champion_score + min_gain


@dataclass
class OnlineLearner:
    """A River model learning one example at a time, scored before it learns each one."""

    model: Any
    make_model: Callable[[], Any]
    recent_window: int
    prequential_window: int = 1000
    recent: deque[Example] = field(init=False)
    since_publish: list[Example] = field(default_factory=list)
    score: RollingAccuracy = field(init=False)

    def __post_init__(self) -> None:
        self.recent = deque(maxlen=self.recent_window)
        self.score = RollingAccuracy(self.prequential_window)

    def learn(self, example: Example) -> None:
        """Test, then train: the score sees the prediction made before learning the label."""
        model = self.model
        self.score.update(model.predict_one(example.features) == example.label)
        model.learn_one(example.features, example.label)
        self.recent.append(example)
        self.since_publish.append(example)

    def prequential_accuracy(self) -> float:
        """The rolling test-then-train accuracy (0 before the first example)."""
        value = self.score.value
        return 0.0 if value is None else value

    def retrain_after_drift(self, champion: Any, drift_window: int, validation: int) -> Candidate:
        """A fresh model trained on the recent window, validated on the newest ``validation``.

        The window is what the detector saw after the change (``drift_window``), at least
        twice the validation set; the newest ``validation`` examples are held out for the
        comparison with the champion and learned only once the candidate is accepted.
        """
        recent = list(self.recent)
        size = min(len(recent), max(drift_window, 2 * validation))
        window = recent[-size:]
        held_out = window[-validation:]
        training = window[: -len(held_out)] if len(held_out) < len(window) else []
        candidate = self.make_model()
        for _ in range(RETRAIN_PASSES):
            for example in training:
                candidate.learn_one(example.features, example.label)
        return Candidate(
            candidate, accuracy(candidate, held_out), accuracy(champion, held_out), window, held_out
        )

    def adopt(self, candidate: Candidate) -> None:
        """Continue learning from an accepted candidate, after it learns the held-out part."""
        for example in candidate.held_out:
            candidate.model.learn_one(example.features, example.label)
        self.model = candidate.model

    def snapshot(self) -> Any:
        """A frozen copy of the model as it is now (what gets published)."""
        return copy.deepcopy(self.model)
