"""monitoring: watches errors and features for drift, publishes ``drift``, exports rolling KPIs.

Concept drift: the error (prediction != label) of every training example that carries a
prediction feeds one ``DriftWatch`` that fires only when the error rate goes up; the same
examples feed the rolling accuracy gauge ``eddy_kpi{kpi="accuracy"}``. Data drift: every numeric
feature (int, float, or bool as 0/1; strings are categories and are not watched) gets its own
watch, created on first sight, and fires on a shift of its mean either way, measured in units of
the pooled standard deviation of the windows before and after the change.

State: the detectors and the KPI window live in memory only. A restart re-learns them from the
committed position onwards, so for the first ``min_events`` examples after a restart no subject
can fire, and a change that straddles the restart may be detected late or not at all.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence

from confluent_kafka import Message

from schemas import DriftEvent, FeatureEvent, TrainingExample
from schemas.drift import DriftKind
from services.core import metrics
from services.core.runtime import bootstrap, run_stream_service
from services.core.settings import Settings
from services.core.stream import BatchHandler, Effects, decode
from services.core.topics import Topics
from services.monitoring.detectors import DriftWatch, Finding, RollingAccuracy

SERVICE = "monitoring"
#: The subject of concept drift: the stream of errors of the served model.
ERROR_SUBJECT = "error"
log = logging.getLogger(__name__)


def drift_id(prefix: str, model_name: str, kind: DriftKind, subject: str, message: Message) -> str:
    """The id of a drift event, derived from the message that completed the change.

    The same detector history reaching the same message gives the same id, so consumers that
    dedupe by ``drift_id`` see one event when a batch whose output was produced but not committed
    is replayed through the same history (reprocessing from the same start position). After a
    restart the detectors re-learn from the committed offset, so they may fire at another
    message, with another id, or not at all.
    """
    position = f"{message.topic()}:{message.partition()}:{message.offset()}"
    source = "\x1f".join((prefix, model_name, kind, subject, position))
    return f"drift-{hashlib.sha256(source.encode()).hexdigest()[:32]}"


class DriftPublisher:
    """Turns findings into ``DriftEvent``s on ``drift``, counted once the broker has them."""

    def __init__(self, settings: Settings, topics: Topics) -> None:
        self.prefix = settings.topic_prefix
        self.model_name = settings.model_name
        self.drift_topic = topics("drift")

    def publish(
        self,
        effects: Effects,
        kind: DriftKind,
        finding: Finding,
        message: Message,
        model_version: int | None,
    ) -> None:
        """Queue the event for ``finding`` (keyed by model, so one model's events stay ordered)."""
        event = DriftEvent(
            drift_id=drift_id(self.prefix, self.model_name, kind, finding.subject, message),
            kind=kind,
            subject=finding.subject,
            detector=finding.detector,
            magnitude=finding.magnitude,
            window=finding.recent,
            model_name=self.model_name,
            model_version=model_version,
        )
        effects.emit(self.drift_topic, self.model_name, event)
        effects.after_ack.append(metrics.DRIFT_EVENTS.labels(SERVICE, kind, finding.subject).inc)
        log.info(
            "drift",
            extra={
                "drift_id": event.drift_id,
                "kind": kind,
                "subject": finding.subject,
                "before": finding.before,
                "after": finding.after,
                "magnitude": finding.magnitude,
                "events_since_change": finding.recent,
            },
        )


class ExamplesHandler:
    """Concept drift and accuracy from labelled predictions on ``training.examples``."""

    def __init__(self, settings: Settings, topics: Topics, publisher: DriftPublisher) -> None:
        config = settings.monitoring
        self.publisher = publisher
        self.dlq_topic = topics("dlq")
        self.errors = DriftWatch(
            ERROR_SUBJECT,
            config.concept_delta,
            min_events=config.min_events,
            cooldown_events=config.cooldown_events,
            direction="up",  # a retrained model getting better is not an alarm
        )
        self.accuracy = RollingAccuracy(config.kpi_window)
        self.accuracy_gauge = metrics.KPI.labels(SERVICE, settings.model_name, "accuracy")

    def __call__(self, messages: Sequence[Message]) -> Effects:
        """Learn each example's error; a ``concept`` event when the error rate went up."""
        effects = Effects()
        for message in messages:
            example = decode(message, TrainingExample, SERVICE, self.dlq_topic, effects)
            if example is None or example.prediction is None:
                continue  # without a prediction there is no error to watch
            correct = example.prediction == example.label
            self.accuracy.update(correct)
            finding = self.errors.update(0.0 if correct else 1.0)
            if finding is not None:
                self.publisher.publish(effects, "concept", finding, message, example.model_version)
        accuracy = self.accuracy.value
        if accuracy is not None:
            self.accuracy_gauge.set(accuracy)
        return effects


class FeaturesHandler:
    """Data drift: one watch per numeric feature on ``features``, created on first sight."""

    def __init__(self, settings: Settings, topics: Topics, publisher: DriftPublisher) -> None:
        self.config = settings.monitoring
        self.publisher = publisher
        self.dlq_topic = topics("dlq")
        self.watches: dict[str, DriftWatch] = {}

    def __call__(self, messages: Sequence[Message]) -> Effects:
        """Learn every numeric feature value; a ``data`` event per feature whose mean moved."""
        effects = Effects()
        watches = self.watches
        for message in messages:
            event = decode(message, FeatureEvent, SERVICE, self.dlq_topic, effects)
            if event is None:
                continue
            for name, value in event.features.items():
                if isinstance(value, str):
                    continue
                watch = watches.get(name)
                if watch is None:
                    watch = watches[name] = self._watch(name)
                finding = watch.update(float(value))
                if finding is not None:
                    # Data drift is about inputs, not a model version: features carry none.
                    self.publisher.publish(effects, "data", finding, message, None)
        return effects

    def _watch(self, feature: str) -> DriftWatch:
        return DriftWatch(
            feature,
            self.config.data_delta,
            min_events=self.config.min_events,
            cooldown_events=self.config.cooldown_events,
            direction="both",
            scale="std",  # features differ in scale; a shift in std units compares across them
        )


def handlers(settings: Settings, topics: Topics) -> dict[str, BatchHandler]:
    """Topic → handler for the monitoring service (one consumer group over both topics)."""
    publisher = DriftPublisher(settings, topics)
    return {
        topics("training_examples"): ExamplesHandler(settings, topics, publisher),
        topics("features"): FeaturesHandler(settings, topics, publisher),
    }


def run(settings: Settings | None = None) -> None:
    """Entry point: monitor until SIGTERM or SIGINT."""
    runtime = bootstrap(SERVICE, settings)
    run_stream_service(runtime, handlers(runtime.settings, runtime.topics))
