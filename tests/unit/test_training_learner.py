"""The online learner: test-then-train scoring, lineage, and retraining after a drift."""

from __future__ import annotations

import itertools

from river.datasets import synth

from schemas import ModelVersion, OffsetRange
from services.core.datasets import default_classifier
from services.training.learner import Example, Learned, OnlineLearner, accuracy
from services.training.service import lineage_of, resume_positions


def sea(variant: int, count: int, seed: int, start: int = 0) -> list[Example]:
    rows = itertools.islice(synth.SEA(variant=variant, seed=seed), count)
    return [
        Example({str(k): v for k, v in x.items()}, y, (start + i) % 3, (start + i) // 3)
        for i, (x, y) in enumerate(rows)
    ]


def test_the_prequential_score_counts_predictions_made_before_learning() -> None:
    learner = OnlineLearner(default_classifier(), default_classifier, recent_window=100)
    first = sea(0, 1, seed=1)[0]
    learner.learn(first)
    # an untrained model's first prediction is scored before it learns the label
    untrained = default_classifier().predict_one(first.features)
    assert learner.prequential_accuracy() == float(untrained == first.label)
    assert learner.since_publish == Learned.of([first]) and list(learner.recent) == [first]


def test_the_recent_window_keeps_only_the_newest_examples() -> None:
    learner = OnlineLearner(default_classifier(), default_classifier, recent_window=50)
    for example in sea(0, 120, seed=1):
        learner.learn(example)
    assert len(learner.recent) == 50 and learner.since_publish.count == 120
    # lineage needs only each partition's first and last offset, not the examples
    assert learner.since_publish.spans == {0: (0, 39), 1: (0, 39), 2: (0, 39)}


def test_a_candidate_retrained_after_an_abrupt_drift_beats_the_old_model() -> None:
    learner = OnlineLearner(default_classifier(), default_classifier, recent_window=2000)
    for example in sea(2, 3000, seed=1):
        learner.learn(example)
    champion = learner.snapshot()
    for example in sea(3, 400, seed=2, start=3000):
        learner.learn(example)
    candidate = learner.retrain_after_drift(champion, drift_window=400, validation=100)
    assert len(candidate.held_out) == 100 and len(candidate.window) == 400
    assert candidate.score > candidate.champion_score
    assert candidate.passes(min_gain=0.0)
    assert not candidate.passes(min_gain=1.0)
    learner.adopt(candidate)
    assert learner.model is candidate.model
    assert accuracy(learner.model, sea(3, 500, seed=9)) > 0.9


def test_lineage_is_one_range_per_partition() -> None:
    examples = [Example({}, True, p, o) for p, o in [(0, 5), (1, 2), (0, 7), (0, 6), (1, 3)]]
    assert lineage_of(Learned.of(examples), "t") == [
        OffsetRange(topic="t", partition=0, first=5, last=7),
        OffsetRange(topic="t", partition=1, first=2, last=3),
    ]


def test_training_resumes_one_past_the_last_offset_any_version_learned() -> None:
    def version(n: int, spans: list[tuple[int, int, int]]) -> ModelVersion:
        return ModelVersion(
            model_name="m",
            version=n,
            flavour="river",
            artifact_uri="file:///x",
            sha256="0" * 64,
            signature="0" * 64,
            trigger="scheduled",
            lineage=[
                OffsetRange(topic="t", partition=p, first=f, last=last) for p, f, last in spans
            ],
        )

    history = [version(1, []), version(2, [(0, 0, 9), (1, 0, 4)]), version(3, [(0, 10, 19)])]
    assert resume_positions(history, "t") == {0: 20, 1: 5}
    assert resume_positions(history, "other") == {}
