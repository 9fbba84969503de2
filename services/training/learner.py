"""The candidates behind training: each learns every example test-then-train, side by side.

Pure logic, no I/O: the service feeds the race examples, asks it for the champion's model to
publish, and lets the selection rule (selection.py) name a new champion.
"""

from __future__ import annotations

import logging
import math
import pickle
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from schemas.base import Features, Target
from schemas.models import ModelSpec, Task
from services.core.registry import deep_pickle
from services.training.scores import TASK_METRICS, Metric, Prequential

#: Passes over the recent window when retraining after a drift: one pass over a few hundred
#: examples leaves SGD short of convergence; three gets within a point of a long-trained model.
RETRAIN_PASSES = 3


class Example(NamedTuple):
    """One labelled example, with where it came from (for lineage).

    A tuple, not a dataclass: one is built per example on training's hot path.
    """

    features: Features
    label: Target
    partition: int
    offset: int


@dataclass
class Learned:
    """What was learned since the last version: how many examples, and the offsets they span.

    Enough for a version's lineage, in constant memory: keeping the examples themselves (to
    compute it at publish time) held every one since the last version, features and all (in
    process, learning 60,000 examples in a row was about 5% slower with them kept).

    >>> learned = Learned.of([Example({}, True, 0, 5), Example({}, True, 1, 2)])
    >>> learned.add(0, 7)
    >>> learned.count, learned.spans
    (3, {0: (5, 7), 1: (2, 2)})
    """

    count: int = 0
    #: partition → (first offset, last offset)
    spans: dict[int, tuple[int, int]] = field(default_factory=dict)

    def add(self, partition: int, offset: int) -> None:
        """Count one example learned from ``partition`` at ``offset``."""
        self.count += 1
        span = self.spans.get(partition)
        if span is None:
            self.spans[partition] = (offset, offset)
        elif offset > span[1]:
            self.spans[partition] = (span[0], offset)
        elif offset < span[0]:
            self.spans[partition] = (offset, span[1])

    @classmethod
    def of(cls, examples: Iterable[Example]) -> Learned:
        """What learning ``examples`` adds up to."""
        learned = cls()
        for example in examples:
            learned.add(example.partition, example.offset)
        return learned


log = logging.getLogger(__name__)


class Candidate:
    """One model of the race: its spec, its prequential scores and recent losses."""

    def __init__(self, spec: ModelSpec, model: Any, task: Task, window: int, recent: int) -> None:
        self.spec = spec
        self.name = spec.name
        self.model = model
        self.task = task
        self.scores = Prequential(task, window)
        #: the loss of each recent example, aligned with ``Race.recent`` (NaN: it failed)
        self.losses: deque[float] = deque(maxlen=recent)
        self.learned = 0
        self.seconds = 0.0
        self.errors = 0

    def predict(self, features: Features) -> tuple[Target | None, dict[Any, float] | None]:
        """The prediction and, for a classifier, the class probabilities it came from."""
        if self.task == "regression":
            return self.model.predict_one(features), None
        proba = self.model.predict_proba_one(features)
        return (max(proba, key=proba.get) if proba else None), proba

    def learn(self, features: Features, label: Target) -> None:
        """Score the prediction made before learning, then learn (see ``learn_many``)."""
        self.learn_many([Example(features, label, 0, 0)])

    def learn_many(self, examples: Sequence[Example]) -> None:
        """Each example in turn: score the prediction made before learning it, then learn it.

        A failure is counted, not raised: one candidate failing on one example (a learner bug,
        a value it cannot take) must not stop the others or the service. The loop runs over a
        whole batch for one candidate at a time, timed once, as it runs for every example.
        """
        started = time.perf_counter()
        model, update, losses = self.model, self.scores.update, self.losses
        regression = self.task == "regression"
        for example in examples:
            features, label = example.features, example.label
            loss = math.nan  # one loss per example, failed or not: losses align with Race.recent
            try:
                if regression:
                    loss = update(label, model.predict_one(features), None)
                else:
                    proba = model.predict_proba_one(features)
                    prediction = max(proba, key=proba.get) if proba else None
                    loss = update(label, prediction, proba)
                model.learn_one(features, label)
                self.learned += 1
            except Exception as exc:
                self._failed(exc)
            losses.append(loss)
        self.seconds += time.perf_counter() - started

    def _failed(self, exc: Exception) -> None:
        self.errors += 1
        if self.errors == 1 or self.errors % 1000 == 0:
            log.warning(
                "candidate failed on an example",
                extra={"candidate": self.name, "errors": self.errors, "error": repr(exc)[:300]},
            )

    def examples_per_second(self) -> float:
        """How fast it learns (prediction and scoring included)."""
        return self.learned / self.seconds if self.seconds > 0 else 0.0

    def value(self, metric: Metric) -> float | None:
        """Its score by ``metric`` over the recent window (None before any example)."""
        return self.scores.value(metric)

    def error(self, metric: Metric) -> float | None:
        """The standard error of its score by ``metric`` (None where there is none)."""
        return self.scores.error(metric)

    def since_start(self) -> float | None:
        """Accuracy or MAE over every example it scored."""
        return self.scores.since_start()

    def values(self) -> dict[str, float]:
        """Every metric with a value, and accuracy or MAE since the start."""
        return self.scores.values()


class RemoteCandidate:
    """A candidate learning in a process of its own, as its last reported row shows it."""

    def __init__(self, spec: ModelSpec, task: Task) -> None:
        self.spec = spec
        self.name = spec.name
        self.task = task
        self.row: dict[str, Any] = {}

    @property
    def learned(self) -> int:
        """Examples its process has learned."""
        return int(self.row.get("examples", 0))

    @property
    def errors(self) -> int:
        """Examples its process failed on."""
        return int(self.row.get("errors", 0))

    def examples_per_second(self) -> float:
        """How fast its process learns."""
        return float(self.row.get("examples_per_s", 0.0))

    def value(self, metric: Metric) -> float | None:
        """Its score by ``metric``, as last reported."""
        value = self.row.get("scores", {}).get(metric)
        return None if value is None else float(value)

    def error(self, metric: Metric) -> float | None:
        """The standard error of its score by ``metric``, as last reported."""
        value = self.row.get("errors_of", {}).get(metric)
        return None if value is None else float(value)

    def since_start(self) -> float | None:
        """Accuracy or MAE since its start, as last reported."""
        value = self.row.get("since_start")
        return None if value is None else float(value)

    def values(self) -> dict[str, float]:
        """Every metric with a value, and accuracy or MAE since the start, as last reported."""
        shown = {m: float(v) for m, v in self.row.get("scores", {}).items() if v is not None}
        total = self.since_start()
        if total is not None:
            shown[f"{TASK_METRICS[self.task][0]}_since_start"] = total
        return shown


Member = Candidate | RemoteCandidate


@dataclass
class Retrained:
    """A candidate's fresh model trained after a drift, judged on held-out recent examples."""

    candidate: str
    model: Any
    #: every example the fresh model learned: the training part, then the held-out part
    window: list[Example]
    held_out: list[Example]
    #: per held-out example: the current model's prequential loss, and the fresh model's
    current_losses: list[float]
    fresh_losses: list[float]
    fresh_predictions: list[tuple[Target | None, dict[Any, float] | None]]

    def improvement(self) -> tuple[float, float]:
        """Mean loss saved per example, and its z statistic (paired; NaN pairs skipped)."""
        diffs = [
            c - f
            for c, f in zip(self.current_losses, self.fresh_losses, strict=True)
            if not (math.isnan(c) or math.isnan(f))
        ]
        if not diffs:
            return 0.0, 0.0
        mean = sum(diffs) / len(diffs)
        variance = sum((d - mean) ** 2 for d in diffs) / max(len(diffs) - 1, 1)
        if variance == 0:
            return mean, math.inf if mean > 0 else 0.0
        return mean, mean / math.sqrt(variance / len(diffs))

    def passes(self, z_needed: float, min_gain: float) -> bool:
        """Better on the held-out examples by a significant margin, and by at least ``min_gain``."""
        gain, z = self.improvement()
        return gain > 0 and gain >= min_gain and z >= z_needed


class Race:
    """Candidates learning the same examples side by side, one of them the champion."""

    def __init__(
        self,
        candidates: Sequence[Candidate],
        champion: str,
        recent_window: int,
        build: Callable[[ModelSpec], Any],
        remote: Sequence[RemoteCandidate] = (),
    ) -> None:
        self.candidates = {c.name: c for c in candidates}
        #: candidates learning in processes of their own, by name
        self.remote: dict[str, RemoteCandidate] = {r.name: r for r in remote}
        if champion not in self.candidates and champion not in self.remote:
            raise ValueError(f"champion {champion!r} is not a candidate")
        self.champion = champion
        self.recent: deque[Example] = deque(maxlen=recent_window)
        self.since_publish = Learned()
        self.examples = 0
        #: the example count at the last selection switch (None: none yet)
        self.switched_at: int | None = None
        self.build = build
        #: every class learned, by (type, value): True and 1 are different classes
        self.classes: dict[tuple[type, Any], Any] = {}
        self._track_classes = next(iter(self.candidates.values())).task != "regression"

    def __getstate__(self) -> dict[str, Any]:
        """Everything but ``build`` (a checkpoint keeps what was learned, not how to build)."""
        return {k: v for k, v in self.__dict__.items() if k != "build"}

    @property
    def leader(self) -> Member:
        """The champion candidate (the one whose model serving gets)."""
        return self.candidates.get(self.champion) or self.remote[self.champion]

    def members(self) -> list[Member]:
        """Every candidate: those learning here, then those in processes of their own."""
        return [*self.candidates.values(), *self.remote.values()]

    def learn(self, example: Example) -> None:
        """Every candidate scores, then learns, the example."""
        self.learn_many([example])

    def learn_many(self, examples: Sequence[Example]) -> None:
        """Every candidate scores, then learns, each example in turn.

        Candidate by candidate over the whole sequence: each sees the examples in the same
        order as one at a time, so the models and scores are the same, and the per-example
        work is the models' own.
        """
        for candidate in self.candidates.values():
            candidate.learn_many(examples)
        self.recent.extend(examples)
        add = self.since_publish.add
        for example in examples:
            add(example.partition, example.offset)
        self.examples += len(examples)
        if self._track_classes:
            classes = self.classes
            for example in examples:
                classes[type(example.label), example.label] = example.label

    def snapshot(self) -> Any:
        """A frozen copy of the champion's model as it is now (a champion learning here)."""
        return pickle.loads(deep_pickle(self.candidates[self.champion].model))

    def retrain_after_drift(self, drift_window: int, validation: int) -> list[Retrained]:
        """For each candidate, a fresh model trained on the recent window, judged on its newest.

        The window is what the detector saw after the change (``drift_window``), at least
        twice the validation set; the newest ``validation`` examples are held out: the fresh
        model predicts them without having learned them, and each candidate's own predictions
        of them were made before it learned them (test-then-train), so the two compare fairly.
        """
        recent = list(self.recent)
        size = min(len(recent), max(drift_window, 2 * validation))
        if size == 0:
            return []
        held_out = recent[-validation:] if validation < size else recent[-(size // 2) :]
        training = recent[-size : len(recent) - len(held_out)]
        results = []
        for candidate in self.candidates.values():
            model = self.build(candidate.spec)
            for _ in range(RETRAIN_PASSES):
                for example in training:
                    model.learn_one(example.features, example.label)
            fresh = Candidate(candidate.spec, model, candidate.task, 1, 1)
            predictions = [fresh.predict(e.features) for e in held_out]
            current = list(candidate.losses)[-len(held_out) :]
            current = [math.nan] * (len(held_out) - len(current)) + current
            results.append(
                Retrained(
                    candidate.name,
                    model,
                    training + held_out,
                    held_out,
                    current,
                    [
                        candidate.scores.loss(e.label, p)
                        for e, (p, _) in zip(held_out, predictions, strict=True)
                    ],
                    predictions,
                )
            )
        return results

    def adopt(self, retrained: Retrained) -> None:
        """Replace a candidate's model by its retrained one, scored on what it was judged on.

        The fresh model learns the held-out examples; its window scores restart from its
        predictions of them, so selection compares it by what it does, not by its predecessor.
        """
        candidate = self.candidates[retrained.candidate]
        for example in retrained.held_out:
            retrained.model.learn_one(example.features, example.label)
        candidate.model = retrained.model
        candidate.scores = Prequential(candidate.task, candidate.scores.window)
        tail = min(len(candidate.losses), len(retrained.fresh_losses))
        for i in range(1, tail + 1):
            candidate.losses[-i] = retrained.fresh_losses[-i]
        for example, (prediction, proba) in zip(
            retrained.held_out, retrained.fresh_predictions, strict=True
        ):
            candidate.scores.update(example.label, prediction, proba)
