"""training: learns online from ``training.examples`` and publishes signed model versions.

Versions: an initial one when the registry has none, scheduled ones at doubling intervals from
``first_interval`` examples up to every ``publish_every`` (a young model improves fastest, and
until its first version serving answers with an untrained one), and one per drift event whose
retrained candidate passes validation against the champion. The registry is also the
checkpoint: on start, training loads the newest version and resumes each partition right after
the last offset that any version learned (its lineage), so a crash loses no example and,
because versions are cut at the same points of the stream, publishes no duplicate version. Run
one instance per model.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from functools import partial
from typing import Any, get_args

from confluent_kafka import OFFSET_BEGINNING, Message, TopicPartition

from schemas import DriftEvent, ModelVersion, OffsetRange, TrainingExample
from schemas.models import Trigger
from services.core import metrics, registry
from services.core.datasets import default_classifier
from services.core.kafka import batching_fetches, make_producer
from services.core.runtime import Runtime, bootstrap, run_stream_service
from services.core.settings import Settings, TrainingSettings
from services.core.stream import BatchHandler, Effects, decode
from services.training.awaiting import AwaitingDrifts
from services.training.learner import Example, Learned, OnlineLearner

SERVICE = "training"
log = logging.getLogger(__name__)


def lineage_of(learned: Learned, topic: str) -> list[OffsetRange]:
    """The offset range of each partition learned from."""
    return [
        OffsetRange(topic=topic, partition=p, first=first, last=last)
        for p, (first, last) in sorted(learned.spans.items())
    ]


def resume_positions(history: Sequence[ModelVersion], topic: str) -> dict[int, int]:
    """Partition → next offset to learn: one past the last offset any version learned."""
    positions: dict[int, int] = {}
    for version in history:
        for span in version.lineage:
            if span.topic == topic:
                positions[span.partition] = max(positions.get(span.partition, 0), span.last + 1)
    return positions


def scheduled_interval(version: int, rules: TrainingSettings) -> int:
    """Examples after ``version`` until the next scheduled one: doubling, up to every N.

    Derived from the version number alone, so a restarted service cuts versions at the same
    points of the stream as the one before it.

    >>> rules = TrainingSettings(first_interval=10, publish_every=100)
    >>> [scheduled_interval(v, rules) for v in range(1, 7)]
    [10, 20, 40, 80, 100, 100]
    >>> scheduled_interval(1, TrainingSettings(first_interval=0, publish_every=100))
    100
    """
    if rules.first_interval == 0:
        return rules.publish_every
    doublings = min(max(version - 1, 0), 30)
    return min(rules.publish_every, rules.first_interval << doublings)


class Trainer:
    """The training service's state and handlers."""

    def __init__(self, runtime: Runtime) -> None:
        self.settings = runtime.settings
        self.model_name = runtime.settings.model_name
        self.examples_topic = runtime.topics("training_examples")
        self.dlq_topic = runtime.topics("dlq")
        history = [
            v for v in registry.read_versions(self.settings) if v.model_name == self.model_name
        ]
        self.reacted = {v.drift_event_id for v in history if v.drift_event_id}
        # Drift events waiting for enough post-change examples, kept in Redis so that a
        # restart still reacts to a drift event whose offset was already committed.
        self.awaiting = AwaitingDrifts(runtime.redis, f"{self.settings.topic_prefix}{SERVICE}")
        self.positions = resume_positions(history, self.examples_topic)
        self.version = 0
        model = default_classifier()
        if history:
            latest = history[-1]
            _data, model = registry.load_verified(latest, self.settings.signing_key_bytes())
            self.version = latest.version
            log.info("resuming", extra={"version": self.version, "positions": self.positions})
        self.champion: Any = copy.deepcopy(model)
        self.learner = OnlineLearner(
            model, default_classifier, self.settings.training.recent_window
        )
        self.learned = metrics.EXAMPLES_LEARNED.labels(SERVICE, self.model_name)
        self.score_gauge = metrics.PREQUENTIAL.labels(SERVICE, self.model_name, "accuracy")
        metrics.VERSIONS_REJECTED.labels(SERVICE, self.model_name)  # series from the start
        for trigger in get_args(Trigger):
            metrics.VERSIONS_PUBLISHED.labels(SERVICE, self.model_name, trigger)
        # one producer for the service's life: a new one waits ~0.5 s for its producer id
        self.announcer = make_producer(self.settings)
        if not history:
            self.publish("initial", description="untrained starting point")

    def on_assign(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        """Start each examples partition where the newest versions' lineage ends."""
        for tp in partitions:
            if tp.topic == self.examples_topic:
                tp.offset = self.positions.get(tp.partition, OFFSET_BEGINNING)
        return partitions

    def on_examples(self, messages: Sequence[Message]) -> Effects:
        """Test-then-train on each example; publish a scheduled version at each interval."""
        effects = Effects()
        every = scheduled_interval(self.version, self.settings.training)
        learner, awaiting = self.learner, self.awaiting
        learned = 0
        for message in messages:
            example = decode(message, TrainingExample, SERVICE, self.dlq_topic, effects)
            if example is None:
                continue
            learner.learn(
                Example(
                    example.features, example.label, message.partition() or 0, message.offset() or 0
                )
            )
            learned += 1
            if awaiting.waiting:
                for drift in awaiting.count_down():
                    self.react_to(drift)
                every = scheduled_interval(self.version, self.settings.training)
            if learner.since_publish.count >= every:
                self.publish("scheduled", description=f"after {every} examples")
                every = scheduled_interval(self.version, self.settings.training)
        # once per batch: each increment takes the counter's lock, and a rate needs no finer grain
        self.learned.inc(learned)
        self.score_gauge.set(learner.prequential_accuracy())
        return effects

    def on_drift(self, messages: Sequence[Message]) -> Effects:
        """Retrain on the recent window after each drift event; publish if it validates."""
        effects = Effects()
        for message in messages:
            drift = decode(message, DriftEvent, SERVICE, self.dlq_topic, effects)
            if (
                drift is None
                or drift.model_name != self.model_name
                or drift.drift_id in self.reacted
            ):
                continue
            # Retraining needs the change's examples, at least twice the validation window.
            missing = 2 * self.settings.training.validation_window - drift.window
            if missing <= 0:
                self.react_to(drift)
            else:
                effects.after_ack.append(partial(self.awaiting.add, drift, missing))
        return effects

    def react_to(self, drift: DriftEvent) -> None:
        """Validate a retrained candidate on the newest examples; publish it if it wins."""
        rules = self.settings.training
        candidate = self.learner.retrain_after_drift(
            self.champion, drift.window + self.awaiting.waited(drift), rules.validation_window
        )
        self.awaiting.remove(drift)
        self.reacted.add(drift.drift_id)
        verdict = {
            "drift_id": drift.drift_id,
            "candidate_accuracy": round(candidate.score, 4),
            "champion_accuracy": round(candidate.champion_score, 4),
            "window": len(candidate.window),
        }
        if not candidate.window or not candidate.passes(rules.min_gain):
            metrics.VERSIONS_REJECTED.labels(SERVICE, self.model_name).inc()
            log.warning("drift candidate rejected", extra=verdict)
            return
        self.learner.adopt(candidate)
        self.learner.since_publish = Learned.of(candidate.window)
        self.publish(
            "drift",
            drift_event_id=drift.drift_id,
            description=f"retrained on {len(candidate.window)} recent examples after "
            f"{drift.kind} drift of {drift.subject}",
            extra_metrics={
                "validation_accuracy": candidate.score,
                "champion_validation_accuracy": candidate.champion_score,
            },
        )
        log.info("drift candidate published", extra={**verdict, "version": self.version})

    def publish(
        self,
        trigger: Trigger,
        drift_event_id: str | None = None,
        description: str = "",
        extra_metrics: dict[str, float] | None = None,
    ) -> ModelVersion:
        """Sign and announce the current model as the next version."""
        snapshot = self.learner.snapshot()
        learned = self.learner.since_publish
        scores = {
            "prequential_accuracy": self.learner.prequential_accuracy(),
            "examples": float(learned.count),
            **(extra_metrics or {}),
        }
        version = registry.publish(
            self.settings,
            self.model_name,
            registry.serialize_river(snapshot),
            trigger=trigger,
            parent_version=self.version or None,
            metrics=scores,
            drift_event_id=drift_event_id,
            lineage=lineage_of(learned, self.examples_topic),
            description=description,
            version=self.version + 1,
            producer=self.announcer,
        )
        self.version = version.version
        self.champion = snapshot
        self.learner.since_publish = Learned()
        metrics.VERSIONS_PUBLISHED.labels(SERVICE, self.model_name, trigger).inc()
        log.info("published", extra={"version": version.version, "trigger": trigger})
        return version


def handlers(runtime: Runtime, trainer: Trainer) -> dict[str, BatchHandler]:
    """Topic → handler for the training service."""
    return {
        runtime.topics("training_examples"): trainer.on_examples,
        runtime.topics("drift"): trainer.on_drift,
    }


def run(settings: Settings | None = None) -> None:
    """Entry point: resume from the registry, then learn until SIGTERM or SIGINT."""
    runtime = bootstrap(SERVICE, settings)
    runtime.settings = batching_fetches(runtime.settings, runtime.settings.training.fetch_wait_ms)
    trainer = Trainer(runtime)
    run_stream_service(runtime, handlers(runtime, trainer), on_assign=trainer.on_assign)
