"""Scores a challenger against the champion on live labels, and decides its canary.

In shadow, both models answered every event: the challenger's predictions (from
``predictions.shadow``) and the champion's labelled examples wait here for each other, whichever
comes first (they come on two topics, in no set order), and each labelled event is one pair
(``PairedTest``). On a canary they answered different entities: the labelled
examples of each version are two groups (``SequentialTest``). Either way the live scores are
published as metrics and, through ``status``, for ``eddy models status``.

A canary decides by itself: after ``canary_step_labels`` labelled events of the challenger at a
share with no verdict, it ramps to the next step; it is promoted when the test finds it better,
rolled back when it finds it worse, and ended (the champion stays) after
``canary_max_labels`` labelled challenger events with no verdict. Each is the next deployment
record, signed, with its figures; the champion then holds (``follow`` off) until a person
says otherwise. A shadow only measures: a person promotes it (``eddy models deploy``).

The evidence lives in monitoring's checkpoint with its detectors, so a restart picks it up.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import Message
from pydantic import ValidationError

from schemas import Deployment, ShadowAnswers, TrainingExample
from schemas.base import Target
from schemas.models import Task
from services.core import deployments, metrics
from services.core.exceptions import ArtifactError, ConfigurationError
from services.core.settings import Settings
from services.core.signing import Keyring
from services.core.stream import Effects
from services.core.topics import Topics
from services.monitoring.sequential import PairedTest, SequentialTest, Verdict, loss

log = logging.getLogger(__name__)
SERVICE = "monitoring"
#: Shadow predictions kept waiting for their label, at most (the oldest go first).
MAX_WAITING = 200_000
#: The champion's labelled examples kept waiting for the shadow's answer, at most.
MAX_UNPAIRED = 20_000


class CanaryJudge:
    """The deployment in force, the evidence on its challenger, and the decisions it leads to."""

    def __init__(
        self,
        settings: Settings,
        topics: Topics,
        task: Task,
        deployment: Deployment | None = None,
        status: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.model_name = settings.model_name
        self.topic = topics("deployments")
        self.regression = task == "regression"
        self.step_labels = settings.monitoring.canary_step_labels
        self.max_labels = settings.monitoring.canary_max_labels
        self.alpha = settings.monitoring.canary_alpha
        self.keys = Keyring.of(settings)
        self.status = status
        self.deployment: Deployment | None = None
        self.test: SequentialTest | PairedTest | None = None
        self.at_step = 0  # the challenger's labelled events at the current share
        # shadow answers by event id: (version, prediction); kept whatever the deployment in
        # force, since the record that starts a shadow may be read after its first answers
        self.waiting: OrderedDict[str, tuple[int, Target | None]] = OrderedDict()
        # the champion's labelled examples by event id, while a shadow runs: (prediction, label)
        self.unpaired: OrderedDict[str, tuple[Target | None, Target]] = OrderedDict()
        self.adopt(deployment)

    # state, for monitoring's checkpoint
    def state(self) -> dict[str, Any]:
        """The evidence so far."""
        return {
            "deployment": self.deployment,
            "test": self.test,
            "at_step": self.at_step,
            "waiting": self.waiting,
            "unpaired": self.unpaired,
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from ``state()``; a newer deployment read at start wins over it."""
        saved: Deployment | None = state["deployment"]
        if self.deployment is not None and (saved is None or saved.seq < self.deployment.seq):
            return
        self.deployment, self.test = saved, state["test"]
        self.at_step, waiting = state["at_step"], state["waiting"]
        if "unpaired" not in state:  # saved by the previous release: answers without versions
            version = saved.challenger_version if saved is not None else None
            waiting = OrderedDict((k, (version, v)) for k, v in waiting.items() if version)
        self.waiting, self.unpaired = waiting, state.get("unpaired", OrderedDict())

    def adopt(self, record: Deployment | None) -> None:
        """Make ``record`` the deployment in force; new evidence if its challenger changed."""
        previous = self.deployment
        self.deployment = record
        if record is None or record.mode == "none":
            self.test, self.waiting, self.unpaired = None, OrderedDict(), OrderedDict()
            return
        same = (
            previous is not None
            and previous.mode == record.mode
            and previous.challenger_version == record.challenger_version
            and previous.champion_version == record.champion_version
        )
        if same and previous is not None and self.test is not None:
            if record.share != previous.share:
                self.at_step = 0
            return
        alpha = self.alpha
        self.test = (
            PairedTest(promote_alpha=alpha, rollback_alpha=alpha)
            if record.mode == "shadow"
            else SequentialTest(promote_alpha=alpha, rollback_alpha=alpha)
        )
        self.at_step, self.unpaired = 0, OrderedDict()
        version = record.challenger_version
        self.waiting = OrderedDict((k, v) for k, v in self.waiting.items() if v[0] == version)

    def on_deployments(self, messages: Sequence[Message]) -> Effects:
        """Follow the model's deployment records (verified, newer only)."""
        for message in messages:
            try:
                record = Deployment.model_validate_json(message.value() or b"")
                deployments.verify(record, self.keys)
            except (ValidationError, ArtifactError, ConfigurationError) as error:
                log.error("deployment record ignored", extra={"error": str(error)[:500]})
                continue
            if record.model_name != self.model_name:
                continue
            if self.deployment is None or record.seq > self.deployment.seq:
                self.adopt(record)
        return Effects()

    def on_shadow(self, messages: Sequence[Message]) -> Effects:
        """Pair the shadow's answers with their labelled examples, or keep them until those come."""
        d, test = self.deployment, self.test
        pairing = d.challenger_version if d is not None and isinstance(test, PairedTest) else None
        waiting, unpaired = self.waiting, self.unpaired
        paired = 0
        for message in messages:
            try:
                batch = ShadowAnswers.model_validate_json(message.value() or b"")
            except ValidationError:
                continue  # serving wrote it; a broken one is not worth a dead letter twice
            if batch.model_name != self.model_name:
                continue
            version = batch.model_version
            for answer in batch.answers:
                if version == pairing and answer.event_id in unpaired:
                    self._pair(*unpaired.pop(answer.event_id), answer.prediction)
                    paired += 1
                else:
                    waiting[answer.event_id] = (version, answer.prediction)
            while len(waiting) > MAX_WAITING:
                waiting.popitem(last=False)
        if paired and d is not None and test is not None:
            self._report(d, test, test.verdict())
        return Effects()

    def _pair(self, champion: Target | None, label: Target, shadow: Target | None) -> None:
        assert isinstance(self.test, PairedTest)
        regression = self.regression
        self.test.add(loss(champion, label, regression), loss(shadow, label, regression))

    def on_examples(self, examples: Sequence[TrainingExample]) -> Effects:
        """Score each labelled event for the variant that served it; decide if it is time."""
        effects = Effects()
        d, test = self.deployment, self.test
        if d is None or test is None or not examples:
            return effects
        regression = self.regression
        for example in examples:
            if isinstance(test, PairedTest):
                if example.model_version != d.champion_version:
                    continue
                answer = self.waiting.pop(example.event_id, None)
                if answer is not None and answer[0] == d.challenger_version:
                    self._pair(example.prediction, example.label, answer[1])
                else:
                    self.unpaired[example.event_id] = (example.prediction, example.label)
                    while len(self.unpaired) > MAX_UNPAIRED:
                        self.unpaired.popitem(last=False)
            elif example.model_version == d.champion_version:
                test.champion.add(loss(example.prediction, example.label, regression))
            elif example.model_version == d.challenger_version:
                test.challenger.add(loss(example.prediction, example.label, regression))
                self.at_step += 1
        verdict = test.verdict()
        self._report(d, test, verdict)
        if d.mode == "canary":
            self._decide(effects, d, verdict)
        return effects

    def _decide(self, effects: Effects, d: Deployment, verdict: Verdict) -> None:
        figures = {**verdict.figures(), "share": d.share}
        if verdict.decision == "promote":
            record = self._next(
                d,
                figures,
                action="promote",
                champion_version=d.challenger_version,
                reason=f"the challenger is better: {self._scores(verdict)}",
            )
        elif verdict.decision == "rollback":
            record = self._next(
                d,
                figures,
                action="rollback",
                reason=f"the challenger is worse: {self._scores(verdict)}",
            )
        elif verdict.challenger_labels >= self.max_labels:
            record = self._next(
                d,
                figures,
                action="end",
                reason=f"no significant difference after {verdict.challenger_labels} labelled "
                "events of the challenger: the champion stays",
            )
        elif d.steps and self.at_step >= self.step_labels:
            record = self._next(
                d,
                figures,
                action="step",
                mode="canary",
                challenger_version=d.challenger_version,
                share=d.steps[0],
                steps=d.steps[1:],
                reason=f"held its score over {self.at_step} labelled events at "
                f"{d.share:.0%}: on to {d.steps[0]:.0%}",
            )
        else:
            return
        if record is None:
            return
        effects.emit(self.topic, record.model_name, record)
        metrics.DEPLOYMENT_DECISIONS.labels(SERVICE, self.model_name, record.action).inc()
        log.info(
            "canary decision",
            extra={"action": record.action, "seq": record.seq, "reason": record.reason},
        )
        self.adopt(record)

    def _scores(self, verdict: Verdict) -> str:
        assert self.test is not None
        name = "MAE" if self.regression else "accuracy"
        champion = _score(self.test.champion.mean, self.regression)
        challenger = _score(self.test.challenger.mean, self.regression)
        return (
            f"{name} {challenger:.4f} against the champion's {champion:.4f}, over "
            f"{verdict.challenger_labels} and {verdict.champion_labels} labelled events "
            f"(likelihood ratio {verdict.likelihood_ratio:.3g})"
        )

    def _next(self, d: Deployment, figures: dict[str, float], **fields: Any) -> Deployment | None:
        changes: dict[str, Any] = {
            "mode": "none",
            "challenger_version": None,
            "share": 0.0,
            "steps": [],
            "follow": False,
            "decided_by": "rule",
            "figures": figures,
            **fields,
        }
        try:
            return deployments.change(d, self.keys, **changes)
        except ConfigurationError as error:  # no key to sign with: measure, decide nothing
            log.error("cannot decide the canary: %s", error)
            return None

    def _report(self, d: Deployment, test: SequentialTest | PairedTest, verdict: Verdict) -> None:
        champion, challenger = test.champion, test.challenger
        for variant, losses in (("champion", champion), ("challenger", challenger)):
            score = losses.mean if self.regression else 1.0 - losses.mean
            metrics.VARIANT_SCORE.labels(SERVICE, self.model_name, variant).set(
                score if losses.n else float("nan")
            )
            metrics.VARIANT_LABELS.labels(SERVICE, self.model_name, variant).set(losses.n)
        if self.status is not None:
            self.status(
                {
                    "seq": d.seq,
                    "mode": d.mode,
                    "champion_version": d.champion_version,
                    "challenger_version": d.challenger_version,
                    "share": d.share,
                    "metric": "mae" if self.regression else "accuracy",
                    "champion": _score(champion.mean, self.regression) if champion.n else None,
                    "challenger": _score(challenger.mean, self.regression)
                    if challenger.n
                    else None,
                    **verdict.figures(),
                    "verdict": verdict.decision,
                    # a shadow pairs events: what waits for its other half
                    **(
                        {
                            "answers_waiting": len(self.waiting),
                            "labelled_waiting": len(self.unpaired),
                        }
                        if d.mode == "shadow"
                        else {}
                    ),
                }
            )


def _score(mean_loss: float, regression: bool) -> float:
    return mean_loss if regression else 1.0 - mean_loss
