"""Monitoring's canary judge: evidence per variant, ramps, decisions as signed records."""

from __future__ import annotations

import pickle
import random
from collections import OrderedDict
from datetime import UTC, datetime

from confluent_kafka import Message
from pydantic import SecretStr

from schemas import Deployment, ShadowAnswers, TrainingExample
from schemas.predictions import ShadowAnswer
from services.core import deployments
from services.core.settings import MonitoringSettings, Settings
from services.core.signing import Keyring
from services.core.topics import Topics
from services.monitoring.canary import CanaryJudge

SETTINGS = Settings(
    signing_key=SecretStr("judge-test-key"),
    monitoring=MonitoringSettings(canary_step_labels=50, canary_max_labels=400),
)
NOW = datetime.now(UTC)


def canary(share: float = 0.5, steps: list[float] | None = None) -> Deployment:
    return deployments.change(
        None,
        Keyring.of(SETTINGS),
        model_name=SETTINGS.model_name,
        action="canary",
        mode="canary",
        champion_version=1,
        challenger_version=2,
        share=share,
        steps=steps or [],
        decided_by="person",
    )


def shadow(challenger: int = 2) -> Deployment:
    return deployments.change(
        None,
        Keyring.of(SETTINGS),
        model_name=SETTINGS.model_name,
        action="shadow",
        mode="shadow",
        champion_version=1,
        challenger_version=challenger,
        decided_by="person",
    )


def answers(version: int, batch: list[TrainingExample], wrong: bool) -> list[Message]:
    """The shadow's answers to ``batch``'s events, right or wrong, in one message."""
    value = ShadowAnswers(
        model_name=SETTINGS.model_name,
        model_version=version,
        answers=[ShadowAnswer(event_id=e.event_id, prediction=not wrong) for e in batch],
    )
    return [Message(topic="predictions.shadow", value=value.model_dump_json().encode())]


def examples(version: int, accuracy: float, count: int, seed: int) -> list[TrainingExample]:
    rng = random.Random(seed)
    return [
        TrainingExample(
            event_id=f"v{version}-{seed}-{i}",
            entity_id="e",
            ts=NOW,
            features={},
            label=True,
            prediction=rng.random() < accuracy,
            model_version=version,
        )
        for i in range(count)
    ]


def decisions(judge: CanaryJudge, batches: list[list[TrainingExample]]) -> list[Deployment]:
    made = []
    for batch in batches:
        for output in judge.on_examples(batch).outputs:
            made.append(Deployment.model_validate_json(output.value))
    return made


def test_a_canary_ramps_after_its_step_labels_then_decides() -> None:
    judge = CanaryJudge(SETTINGS, Topics(""), "binary", canary(0.1, [0.25, 0.5]))

    made = decisions(judge, [examples(1, 0.8, 50, 1) + examples(2, 0.8, 50, 2)])

    assert [(d.action, d.share, d.steps, d.seq) for d in made] == [("step", 0.25, [0.5], 2)]
    deployments.verify(made[0], Keyring.of(SETTINGS))
    assert judge.deployment == made[0] and judge.at_step == 0


def test_a_canary_with_no_verdict_ends_and_the_champion_stays() -> None:
    judge = CanaryJudge(SETTINGS, Topics(""), "binary", canary())
    batches = [examples(1, 0.8, 100, s) + examples(2, 0.8, 100, 100 + s) for s in range(4)]

    made = decisions(judge, batches)

    assert made[-1].action == "end" and made[-1].champion_version == 1
    assert made[-1].mode == "none" and not made[-1].follow
    assert "no significant difference" in made[-1].reason
    assert judge.test is None, "nothing more to judge"


def test_a_far_worse_challenger_is_rolled_back_with_its_scores() -> None:
    judge = CanaryJudge(SETTINGS, Topics(""), "binary", canary())

    made = decisions(judge, [examples(1, 0.9, 150, 1) + examples(2, 0.3, 150, 2)])

    assert [d.action for d in made] == ["rollback"]
    assert made[0].figures["challenger_labels"] == 150 and made[0].figures["difference"] < 0
    assert "accuracy 0.3" in made[0].reason or "accuracy 0.2" in made[0].reason


def test_examples_of_other_versions_are_not_evidence() -> None:
    judge = CanaryJudge(SETTINGS, Topics(""), "binary", canary())

    decisions(judge, [examples(7, 0.1, 500, 1)])

    assert judge.test is not None
    assert (judge.test.champion.n, judge.test.challenger.n) == (0, 0)


def test_the_evidence_survives_a_checkpoint_and_a_restart() -> None:
    record = canary()
    judge = CanaryJudge(SETTINGS, Topics(""), "binary", record)
    decisions(judge, [examples(1, 0.8, 60, 1) + examples(2, 0.8, 40, 2)])
    saved = pickle.loads(pickle.dumps(judge.state()))

    restarted = CanaryJudge(SETTINGS, Topics(""), "binary", record)
    restarted.restore(saved)

    assert restarted.test is not None
    assert (restarted.test.champion.n, restarted.test.challenger.n) == (60, 40)


def test_a_newer_deployment_read_at_start_wins_over_an_older_checkpoint() -> None:
    old = canary()
    judge = CanaryJudge(SETTINGS, Topics(""), "binary", old)
    decisions(judge, [examples(1, 0.8, 60, 1)])
    newer = deployments.change(old, Keyring.of(SETTINGS), challenger_version=3)

    restarted = CanaryJudge(SETTINGS, Topics(""), "binary", newer)
    restarted.restore(judge.state())

    assert restarted.deployment == newer
    assert restarted.test is not None and restarted.test.champion.n == 0


def pairs(judge: CanaryJudge) -> tuple[int, int]:
    assert judge.test is not None
    return judge.test.champion.n, judge.test.challenger.n


def test_a_shadow_pairs_each_labelled_event_whichever_side_comes_first() -> None:
    judge = CanaryJudge(SETTINGS, Topics(""), "binary", shadow())
    early, late = examples(1, 0.9, 30, 1), examples(1, 0.9, 20, 2)

    judge.on_shadow(answers(2, early, wrong=True))
    judge.on_examples(early)  # the answers were first
    judge.on_examples(late)
    judge.on_shadow(answers(2, late, wrong=True))  # the examples were first

    assert pairs(judge) == (50, 50)
    assert judge.test is not None and judge.test.challenger.mean == 1.0
    assert not judge.waiting and not judge.unpaired


def test_shadow_answers_read_before_their_deployment_record_still_count() -> None:
    judge = CanaryJudge(SETTINGS, Topics(""), "binary", None)
    batch = examples(1, 0.9, 40, 1)

    other = examples(1, 0.9, 5, 2)
    judge.on_shadow(answers(2, batch, wrong=False) + answers(3, other, wrong=False))
    judge.adopt(shadow(challenger=2))
    judge.on_examples(batch + other)

    assert pairs(judge) == (40, 40), "another version's answers are not the shadow's"
    assert judge.test is not None and judge.test.challenger.mean == 0.0


def test_a_checkpoint_of_the_previous_release_keeps_its_shadow_answers() -> None:
    record = shadow()
    batch = examples(1, 0.9, 10, 1)
    judge = CanaryJudge(SETTINGS, Topics(""), "binary", record)
    old_state = {
        "deployment": record,
        "test": judge.test,
        "at_step": 0,
        "waiting": OrderedDict((e.event_id, True) for e in batch),
    }

    restarted = CanaryJudge(SETTINGS, Topics(""), "binary", record)
    restarted.restore(old_state)
    restarted.on_examples(batch)

    assert pairs(restarted) == (10, 10)


def test_an_ended_shadow_leaves_nothing_waiting() -> None:
    record = shadow()
    judge = CanaryJudge(SETTINGS, Topics(""), "binary", record)
    batch = examples(1, 0.9, 10, 1)
    judge.on_shadow(answers(2, batch, wrong=False))
    judge.on_examples(examples(1, 0.9, 10, 2))

    judge.adopt(
        deployments.change(record, Keyring.of(SETTINGS), mode="none", challenger_version=None)
    )

    assert not judge.waiting and not judge.unpaired, "a checkpoint would carry them for nothing"


def test_a_shadow_reports_what_waits_for_its_other_half() -> None:
    reported: list[dict[str, object]] = []
    judge = CanaryJudge(SETTINGS, Topics(""), "binary", shadow(), reported.append)
    answered, labelled = examples(1, 0.9, 7, 1), examples(1, 0.9, 12, 2)

    judge.on_shadow(answers(2, answered, wrong=False))
    judge.on_examples(labelled + answered[:3])

    assert reported[-1]["answers_waiting"] == 4 and reported[-1]["labelled_waiting"] == 12
    assert reported[-1]["challenger_labels"] == 3
