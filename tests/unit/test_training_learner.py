"""The race of candidates: test-then-train scoring, lineage, selection, retraining after drift."""

from __future__ import annotations

import copy
import itertools
import math
import random
import statistics

import pytest
from river.datasets import synth

from schemas import ModelVersion, OffsetRange
from schemas.models import ModelSpec, Task
from services.core.datasets import default_classifier
from services.core.feature_schema import FeatureSchema
from services.core.model_specs import baseline_spec, build_model, default_specs
from services.training.learner import Candidate, Example, Learned, Race
from services.training.scores import Prequential
from services.training.selection import SelectionRule, choose, standings
from services.training.service import lineage_of, resume_positions

SCHEMA = FeatureSchema.load("sea")


def sea(variant: int, count: int, seed: int, start: int = 0) -> list[Example]:
    rows = itertools.islice(synth.SEA(variant=variant, seed=seed), count)
    return [
        Example({f"x{k}": v for k, v in x.items()}, y, (start + i) % 3, (start + i) // 3)
        for i, (x, y) in enumerate(rows)
    ]


def race_of(*specs: ModelSpec, recent: int = 2000, window: int = 500) -> Race:
    def build(spec: ModelSpec) -> object:
        return build_model(spec, SCHEMA)

    candidates = [Candidate(s, build(s), "binary", window, recent) for s in specs]
    return Race(candidates, specs[0].name, recent, build)


LOGISTIC = default_specs(SCHEMA)[0]
BASELINE = baseline_spec(SCHEMA)


def test_the_prequential_score_counts_predictions_made_before_learning() -> None:
    race = race_of(LOGISTIC)
    first = sea(0, 1, seed=1)[0]
    race.learn(first)
    # an untrained model's first prediction is scored before it learns the label
    untrained = default_classifier().predict_one(first.features)
    assert race.leader.scores.value("accuracy") == float(untrained == first.label)
    assert race.since_publish == Learned.of([first]) and list(race.recent) == [first]


def test_every_candidate_learns_every_example() -> None:
    race = race_of(LOGISTIC, BASELINE)
    for example in sea(0, 120, seed=1):
        race.learn(example)
    assert [c.learned for c in race.candidates.values()] == [120, 120]
    assert race.examples == 120 and race.since_publish.count == 120


def test_the_recent_window_keeps_only_the_newest_examples() -> None:
    race = race_of(LOGISTIC, recent=50)
    for example in sea(0, 120, seed=1):
        race.learn(example)
    assert len(race.recent) == 50 and len(race.leader.losses) == 50
    # lineage needs only each partition's first and last offset, not the examples
    assert race.since_publish.spans == {0: (0, 39), 1: (0, 39), 2: (0, 39)}


def test_a_candidate_that_fails_on_an_example_does_not_stop_the_others() -> None:
    race = race_of(LOGISTIC, BASELINE)
    race.learn(Example({"x0": "not a number"}, True, 0, 0))
    race.learn(sea(0, 1, seed=1)[0])
    assert race.candidates[LOGISTIC.name].errors == 1
    assert race.candidates[BASELINE.name].learned == 2


def test_a_retrained_model_replaces_a_candidate_only_when_significantly_better() -> None:
    race = race_of(LOGISTIC)
    for example in sea(2, 3000, seed=1):
        race.learn(example)
    stable = race.retrain_after_drift(drift_window=400, validation=100)
    # no drift: a fresh model trained on a few hundred examples does not beat the long-trained one
    assert not stable[0].passes(z_needed=1.645, min_gain=0.0)
    for example in sea(3, 400, seed=2, start=3000):
        race.learn(example)
    (retrained,) = race.retrain_after_drift(drift_window=400, validation=100)
    assert len(retrained.held_out) == 100
    gain, z = retrained.improvement()
    assert gain > 0 and z > 1.645
    assert retrained.passes(z_needed=1.645, min_gain=0.0)
    assert not retrained.passes(z_needed=1.645, min_gain=1.0)
    race.adopt(retrained)
    assert race.leader.model is retrained.model
    assert race.leader.scores.examples == 100  # scored again, on what it was judged on
    after = race_of(LOGISTIC)
    after.candidates[LOGISTIC.name].model = race.snapshot()
    for example in sea(3, 500, seed=9):
        after.learn(example)
    assert (after.leader.scores.since_start() or 0) > 0.9


def test_selection_switches_to_a_candidate_clearly_ahead_and_not_back_and_forth() -> None:
    race = race_of(BASELINE, LOGISTIC)  # the no-change baseline starts as champion
    rule = SelectionRule.for_task("binary", "auto", 0.01, 200, 1000)
    examples = sea(2, 3000, seed=1)
    for example in examples[:199]:
        race.learn(example)
    assert choose(race, rule) is None  # too few examples to judge
    for example in examples[199:600]:
        race.learn(example)
    switch = choose(race, rule)
    assert switch is not None and switch.chosen == LOGISTIC.name and switch.metric == "accuracy"
    assert switch.chosen_value > switch.previous_value * 1.01
    race.champion, race.switched_at = switch.chosen, race.examples
    for example in examples[600:1000]:
        race.learn(example)
    assert choose(race, rule) is None  # the champion leads; and within the cool-down anyway


def test_selection_needs_a_minimum_gap() -> None:
    race = race_of(LOGISTIC, ModelSpec(name="twin", estimator=LOGISTIC.estimator))
    for example in sea(2, 1000, seed=1):
        race.learn(example)
    # identical models score identically: a tie is no reason to switch, even with no gap asked
    twin = race.candidates["twin"].scores.value("accuracy")
    assert twin is not None and twin == race.leader.scores.value("accuracy")
    assert choose(race, SelectionRule.for_task("binary", "auto", 0.0, 0, 0)) is None


def test_selection_ignores_a_lead_that_chance_explains() -> None:
    """On coin-flip labels two guessers differ by luck alone: no switch at z 2."""
    race = race_of(
        ModelSpec(name="prior", estimator="river.dummy.PriorClassifier"),
        ModelSpec(name="repeat", estimator="river.dummy.NoChangeClassifier"),
    )
    rng = random.Random(5)
    for i in range(1000):
        race.learn(Example({"x0": rng.random()}, rng.random() < 0.5, 0, i))
    prior, repeat = race.candidates["prior"], race.candidates["repeat"]
    assert prior.value("accuracy") != repeat.value("accuracy")  # they do differ
    ahead, behind = sorted((prior, repeat), key=lambda c: c.value("accuracy") or 0, reverse=True)
    race.champion = behind.name
    no_test = choose(race, SelectionRule.for_task("binary", "auto", 0.0, 100, 0, z=0.0))
    assert no_test is not None and no_test.chosen == ahead.name and (no_test.z or 0) < 2.0
    assert choose(race, SelectionRule.for_task("binary", "auto", 0.0, 100, 0, z=2.0)) is None


def test_selection_switches_early_when_the_lead_is_significant() -> None:
    race = race_of(BASELINE, LOGISTIC, window=1000)
    for example in sea(2, 200, seed=1):
        race.learn(example)
    switch = choose(race, SelectionRule.for_task("binary", "auto", 0.01, 200, 500, z=2.0))
    assert switch is not None and switch.chosen == LOGISTIC.name
    assert switch.z is not None and switch.z >= 2.0 and f"(z {switch.z:.2f})" in switch.reason()


@pytest.mark.parametrize("task", ["binary", "regression"])
def test_the_standard_error_of_a_window_is_that_of_its_per_example_losses(task: Task) -> None:
    rng = random.Random(7)
    scores = Prequential(task, window=300)
    kept = []
    for _ in range(1000):
        if task == "regression":
            label, prediction = rng.gauss(0, 3), rng.gauss(0, 1)
            proba = None
        else:
            label, prediction = rng.random() < 0.5, rng.random() < 0.7
            proba = {prediction: rng.uniform(0.5, 1.0), not prediction: 0.2}
        scores.update(label, prediction, proba)
        kept.append((label, prediction, proba))
    window = kept[-300:]
    if task == "regression":
        checks = {"mae": [abs(y - p) for y, p, _ in window]}
        squared = [(y - p) ** 2 for y, p, _ in window]
        rmse = math.sqrt(statistics.fmean(squared))
        # delta method: the spread of the mean square, over 2 sqrt(mean square)
        expected_rmse = statistics.pstdev(squared) / math.sqrt(300) / (2 * rmse)
        assert scores.error("rmse") == pytest.approx(expected_rmse, rel=1e-6)
    else:
        checks = {
            "accuracy": [float(y == p) for y, p, _ in window],
            "log_loss": [-math.log(max(pr.get(y, 0.0), 1e-15)) for y, _, pr in window if pr],
        }
    for metric, losses in checks.items():
        expected = statistics.pstdev(losses) / math.sqrt(len(losses))
        assert scores.error(metric) == pytest.approx(expected, rel=1e-6), metric
    assert scores.error("macro_f1" if task == "binary" else "r2") is None


def test_regression_candidates_are_ranked_lower_error_first() -> None:
    schema = FeatureSchema.model_validate(
        {"name": "r", "features": {"x": {"type": "float"}}, "target": {"type": "regression"}}
    )

    def build(spec: ModelSpec) -> object:
        return build_model(spec, schema)

    specs = [*default_specs(schema), baseline_spec(schema)]
    race = Race(
        [Candidate(s, build(s), "regression", 500, 500) for s in specs], "baseline", 500, build
    )
    for i in range(2000):
        x = (i % 100) / 10
        race.learn(Example({"x": x}, 3 * x + 1, 0, i))
    assert [c.name for c in standings(race, "mae")] == ["linearregression", "baseline"]
    switch = choose(race, SelectionRule.for_task("regression", "auto", 0.01, 100, 0))
    assert switch is not None and switch.chosen == "linearregression"
    assert switch.chosen_value < switch.previous_value


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
            key_id="hmac:0000000000000000",
            signature="0" * 64,
            trigger="scheduled",
            lineage=[
                OffsetRange(topic="t", partition=p, first=f, last=last) for p, f, last in spans
            ],
        )

    history = [version(1, []), version(2, [(0, 0, 9), (1, 0, 4)]), version(3, [(0, 10, 19)])]
    assert resume_positions(history, "t") == {0: 20, 1: 5}
    assert resume_positions(history, "other") == {}


def test_scores_saved_before_their_spread_was_kept_restore_with_it() -> None:
    """A race checkpoint from the previous release has no running square: it is rebuilt."""
    scores = Prequential("regression", window=50)
    for i in range(80):
        scores.update(float(i % 7), 3.0, None)
    state = copy.deepcopy(scores.__dict__)
    del state["_second_sq"]
    old = Prequential.__new__(Prequential)
    old.__setstate__(state)
    assert old.error("log_loss") is None and old.error("rmse") == scores.error("rmse")
    old.update(1.0, 2.0, None)  # and it keeps learning
    scores.update(1.0, 2.0, None)
    assert old.error("rmse") == pytest.approx(scores.error("rmse"))
