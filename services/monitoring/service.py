"""monitoring: watches for drift of every kind, publishes ``drift`` and ``alerts``, exports KPIs.

- Concept drift: the error (prediction != label) of every training example that carries a
  prediction feeds one ADWIN ``DriftWatch`` that fires only when the error rate goes up.
- Data drift: every numeric feature served (int, float, or bool as 0/1; strings are categories
  and are not watched), as the champion's predictions carry it, gets its own watch, created on
  first sight: by default a KS test of its recent values against a reference window
  (reference.py); magnitude is the KS statistic.
- Prediction drift: the shares of predicted classes (per model version) against a reference
  window, by PSI; for numeric predictions, a KS test.
- Label coverage: the share of matured predictions that got a label (coverage.py).
- KPIs (rolling accuracy, label coverage) are exported as ``eddy_kpi``; the thresholds in the
  KPI rules (kpis.py) publish ``Alert``s when crossed.

State: the detectors, the KPI window and label coverage live in memory, and every
``checkpoint_interval_s`` a snapshot of them is saved in Redis with the input positions it has
seen (services/core/checkpoint.py), once the batch it follows is acknowledged. A restart restores
the snapshot and replays the inputs from its positions, so the detectors reach the same
decisions at the same messages, with the same drift and alert ids (consumers de-duplicate by
them): a change that straddles a crash is still reported, once. Label coverage is judged
against the clock, so its events may come at other messages on a replay. Without a checkpoint
(none yet, none to trust, or other settings) the detectors start afresh from the committed
offsets. Run one instance per model: its detectors must see the whole stream.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from functools import partial
from typing import Any, get_args

from confluent_kafka import Message

from schemas import Alert, DriftEvent, Prediction, TrainingExample
from schemas.alerts import AlertState
from schemas.base import Features, Target
from schemas.drift import DriftKind
from schemas.models import Task
from services.core import deployments, metrics
from services.core.checkpoint import Checkpointing, CheckpointStore
from services.core.feature_schema import FeatureSchema
from services.core.kafka import batching_fetches
from services.core.rolling import RollingMean
from services.core.runtime import Runtime, bootstrap, run_stream_service
from services.core.settings import Settings
from services.core.state import deployment_status_key
from services.core.stream import BatchHandler, Effects, decode
from services.core.topics import Topics
from services.monitoring.canary import CanaryJudge
from services.monitoring.coverage import SUBJECT as COVERAGE_SUBJECT
from services.monitoring.coverage import LabelCoverage
from services.monitoring.detectors import DriftWatch, Finding, RollingAccuracy
from services.monitoring.kpis import KpiName, KpiWatch, load_rules
from services.monitoring.reference import CategoryWatch, DistributionWatch

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


class Quality:
    """What the three handlers share: label coverage, the KPI rules, and where alerts go."""

    def __init__(self, settings: Settings, topics: Topics, publisher: DriftPublisher) -> None:
        config = settings.monitoring
        self.model_name = settings.model_name
        self.prefix = settings.topic_prefix
        self.publisher = publisher
        self.alerts_topic = topics("alerts")
        self.coverage = LabelCoverage(
            config.coverage_horizon_s,
            config.coverage_window_s,
            config.coverage_min,
            config.coverage_cooldown_s,
        )
        self.accuracy = RollingAccuracy(config.kpi_window)
        self.mae = RollingMean(config.kpi_window)
        self.min_accuracy_window = min(config.kpi_window, max(config.min_events, 1))
        self.kpis = KpiWatch(load_rules(config.kpi_rules, settings.model_name))
        self.model_version: int | None = None
        self.gauges = {
            kpi: metrics.KPI.labels(SERVICE, self.model_name, kpi) for kpi in get_args(KpiName)
        }
        for rule in self.kpis.rules:
            metrics.KPI_BREACH.labels(SERVICE, self.model_name, rule.kpi).set(0)
            for state in ("firing", "resolved"):  # series exist before their first increase
                metrics.ALERTS.labels(SERVICE, rule.kpi, state)

    def values(self) -> dict[str, tuple[float, int]]:
        """The current KPI values, with the number of observations each is over."""
        current: dict[str, tuple[float, int]] = {}
        accuracy = self.accuracy.value
        if accuracy is not None and len(self.accuracy) >= self.min_accuracy_window:
            current["accuracy"] = (accuracy, len(self.accuracy))
        mae = self.mae.value
        if mae is not None and len(self.mae) >= self.min_accuracy_window:
            current["mae"] = (mae, len(self.mae))
        coverage = self.coverage.value()
        if coverage is not None:
            current["label_coverage"] = coverage
        return current

    def after_batch(self, effects: Effects, message: Message) -> None:
        """Export the KPIs, publish alerts for crossed thresholds and a coverage drift event."""
        current = self.values()
        for kpi, (value, _window) in current.items():
            self.gauges[kpi].set(value)
        for rule, value, breached in self.kpis.update({k: v for k, (v, _n) in current.items()}):
            state: AlertState = "firing" if breached else "resolved"
            alert = Alert(
                alert_id=_alert_id(self.prefix, self.model_name, rule.kpi, state, message),
                state=state,
                model_name=self.model_name,
                model_version=self.model_version,
                kpi=rule.kpi,
                value=value,
                bound=rule.bound(),
                window=current[rule.kpi][1],
            )
            effects.emit(self.alerts_topic, self.model_name, alert)
            gauge = metrics.KPI_BREACH.labels(SERVICE, self.model_name, rule.kpi)
            effects.after_ack.append(partial(gauge.set, 1 if breached else 0))
            effects.after_ack.append(metrics.ALERTS.labels(SERVICE, rule.kpi, state).inc)
            log.warning(
                "kpi alert",
                extra={"kpi": rule.kpi, "state": state, "value": value, "bound": rule.bound()},
            )
        finding = self.coverage.check()
        if finding is not None:
            self.publisher.publish(effects, "label_coverage", finding, message, self.model_version)


def _alert_id(prefix: str, model_name: str, kpi: str, state: str, message: Message) -> str:
    position = f"{message.topic()}:{message.partition()}:{message.offset()}"
    source = "\x1f".join((prefix, model_name, kpi, state, position))
    return f"alert-{hashlib.sha256(source.encode()).hexdigest()[:32]}"


class ExamplesHandler:
    """Concept drift, accuracy and label arrival from labelled predictions."""

    def __init__(
        self,
        settings: Settings,
        topics: Topics,
        publisher: DriftPublisher,
        quality: Quality | None = None,
        task: Task = "binary",
    ) -> None:
        config = settings.monitoring
        self.publisher = publisher
        self.quality = quality or Quality(settings, topics, publisher)
        self.dlq_topic = topics("dlq")
        self.regression = task == "regression"
        self.errors = DriftWatch(
            ERROR_SUBJECT,
            config.concept_delta,
            min_events=config.min_events,
            cooldown_events=config.concept_cooldown_events,
            direction="up",  # a retrained model getting better is not an alarm
        )
        self.label_delay = metrics.LABEL_DELAY.labels(SERVICE)

    @property
    def accuracy(self) -> RollingAccuracy:
        """The rolling accuracy of served predictions."""
        return self.quality.accuracy

    def __call__(self, messages: Sequence[Message]) -> Effects:
        """Learn each example's error; a ``concept`` event when the error went up.

        The error is whether the class was wrong, or the absolute error of a number.
        """
        return self.handle(messages)[0]

    def handle(self, messages: Sequence[Message]) -> tuple[Effects, list[TrainingExample]]:
        """What ``__call__`` does, and the examples it decoded (for the canary judge)."""
        effects = Effects()
        examples: list[TrainingExample] = []
        quality = self.quality
        now = time.time()
        for message in messages:
            example = decode(message, TrainingExample, SERVICE, self.dlq_topic, effects)
            if example is None:
                continue
            examples.append(example)
            if example.prediction is None:
                continue  # without a prediction there is no error to watch
            event_time = example.ts.timestamp()
            self.label_delay.observe(max(0.0, now - event_time))
            quality.coverage.labeled_at(event_time)
            if example.model_version is not None:
                quality.model_version = example.model_version
            if self.regression:
                if not (_is_number(example.prediction) and _is_number(example.label)):
                    continue  # a class where a number belongs: training dead-letters such labels
                error = abs(float(example.prediction) - float(example.label))
                quality.mae.update(error)
            else:
                correct = example.prediction == example.label
                quality.accuracy.update(correct)
                error = 0.0 if correct else 1.0
            finding = self.errors.update(error)
            if finding is not None:
                self.publisher.publish(effects, "concept", finding, message, example.model_version)
        if messages:
            quality.after_batch(effects, messages[-1])
        return effects, examples


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class PredictionsHandler:
    """Prediction drift (per model version), data drift, and the predictions side of coverage.

    Data drift is watched on the features served: each champion prediction carries the features
    it was made on, so monitoring reads one message per event for both drifts, not two.
    """

    def __init__(
        self,
        settings: Settings,
        topics: Topics,
        publisher: DriftPublisher,
        quality: Quality,
        data: DataWatches | None = None,
    ) -> None:
        self.config = settings.monitoring
        self.publisher = publisher
        self.quality = quality
        self.data = data or DataWatches(settings, publisher)
        self.dlq_topic = topics("dlq")
        self.version: int | None = None
        self.watch: CategoryWatch | DistributionWatch | None = None

    def __call__(self, messages: Sequence[Message]) -> Effects:
        """Learn each served prediction's features, and the champion's predictions.

        A ``prediction`` event when their mix shifted, a ``data`` event per feature that drifted.
        """
        effects = Effects()
        data = self.data
        for message in messages:
            prediction = decode(message, Prediction, SERVICE, self.dlq_topic, effects)
            if prediction is None:
                continue  # a canary's predictions too: its events are the stream's
            self.quality.coverage.predicted_at(prediction.ts.timestamp())
            data.learn(effects, prediction.features, message)
            if prediction.prediction is None or prediction.variant != "champion":
                continue
            if prediction.model_version != self.version or self.watch is None:
                # another model predicts differently by design: a new reference for it
                self.version = prediction.model_version
                self.watch = self._watch(prediction.prediction)
            value = prediction.prediction
            finding = (
                self.watch.update(str(value))
                if isinstance(self.watch, CategoryWatch)
                else self.watch.update(float(value))
            )
            if finding is not None:
                self.publisher.publish(effects, "prediction", finding, message, self.version)
        if messages:
            self.quality.after_batch(effects, messages[-1])
        return effects

    def _watch(self, example: Target) -> CategoryWatch | DistributionWatch:
        c = self.config
        if isinstance(example, float):  # a regressor's outputs: compare distributions
            return DistributionWatch(
                "prediction",
                c.prediction_reference_size,
                c.prediction_window_size,
                c.prediction_check_every,
                c.prediction_cooldown_events,
                c.data_alpha,
            )
        return CategoryWatch(
            "prediction",
            c.prediction_reference_size,
            c.prediction_window_size,
            c.prediction_check_every,
            c.prediction_cooldown_events,
            c.prediction_psi,
        )


class DataWatches:
    """Data drift: one watch per numeric feature served, created on first sight.

    Features declared time-like (a date, a counter) are not watched: they drift by nature.
    """

    def __init__(
        self, settings: Settings, publisher: DriftPublisher, time_like: frozenset[str] = frozenset()
    ) -> None:
        self.config = settings.monitoring
        self.publisher = publisher
        self.time_like = time_like
        self.watches: dict[str, DriftWatch | DistributionWatch] = {}

    def learn(self, effects: Effects, features: Features, message: Message) -> None:
        """Learn every numeric feature value; a ``data`` event per feature that drifted."""
        watches = self.watches
        for name, value in features.items():
            if isinstance(value, str) or name in self.time_like:
                continue
            watch = watches.get(name)
            if watch is None:
                watch = watches[name] = self._watch(name)
                metrics.DRIFT_EVENTS.labels(SERVICE, "data", name)  # its series exists now
            finding = watch.update(float(value))
            if finding is not None:
                # Data drift is about inputs, not a model version: it names none.
                self.publisher.publish(effects, "data", finding, message, None)

    def _watch(self, feature: str) -> DriftWatch | DistributionWatch:
        c = self.config
        if c.data_detector == "ks":
            return DistributionWatch(
                feature,
                c.data_reference_size,
                c.data_window_size,
                c.data_check_every,
                c.data_cooldown_events,
                c.data_alpha,
            )
        return DriftWatch(
            feature,
            c.data_delta,
            min_events=c.min_events,
            cooldown_events=c.data_cooldown_events,
            direction="both",
            scale="std",  # features differ in scale; a shift in std units compares across them
        )


class Monitor:
    """The handlers over one publisher and one set of KPIs, and their state as a whole."""

    def __init__(
        self, settings: Settings, topics: Topics, judge: CanaryJudge | None = None
    ) -> None:
        schema = FeatureSchema.load(settings.ingest.feature_schema)
        time_like = frozenset(name for name, spec in schema.features.items() if spec.time_like)
        publisher = DriftPublisher(settings, topics)
        self.quality = Quality(settings, topics, publisher)
        self.examples = ExamplesHandler(
            settings, topics, publisher, self.quality, schema.target.type
        )
        self.data = DataWatches(settings, publisher, time_like)
        self.predictions = PredictionsHandler(settings, topics, publisher, self.quality, self.data)
        self.judge = judge or CanaryJudge(settings, topics, schema.target.type)
        self.handlers: dict[str, BatchHandler] = {
            topics("training_examples"): self._examples,
            topics("predictions"): self.predictions,
            topics("deployments"): self.judge.on_deployments,
            topics("shadow_predictions"): self.judge.on_shadow,
        }

    def _examples(self, messages: Sequence[Message]) -> Effects:
        """Drift and KPIs from every example; the challenger's evidence while one runs."""
        effects, examples = self.examples.handle(messages)
        effects.extend(self.judge.on_examples(examples))
        return effects

    def state(self) -> dict[str, Any]:
        """What the detectors and KPIs learned from the inputs (what a checkpoint keeps)."""
        quality = self.quality
        return {
            "errors": self.examples.errors,
            "accuracy": quality.accuracy,
            "mae": quality.mae,
            "coverage": quality.coverage,
            "breached": quality.kpis.breached,
            "model_version": quality.model_version,
            "prediction_version": self.predictions.version,
            "prediction_watch": self.predictions.watch,
            "feature_watches": self.data.watches,
            "deployment": self.judge.state(),
        }

    def restore(self, state: object) -> None:
        """Continue from a ``state()`` taken earlier (under the same settings).

        Raises ValueError, changing nothing, for a state of another shape (another version of
        this code saved it).
        """
        if not isinstance(state, dict) or set(state) != set(self.state()):
            raise ValueError("not a state of this version of monitoring")
        quality = self.quality
        self.examples.errors = state["errors"]
        quality.accuracy = state["accuracy"]
        quality.mae = state["mae"]
        quality.coverage = state["coverage"]
        quality.kpis.breached = state["breached"]
        quality.model_version = state["model_version"]
        self.predictions.version = state["prediction_version"]
        self.predictions.watch = state["prediction_watch"]
        self.data.watches = state["feature_watches"]
        self.judge.restore(state["deployment"])
        for rule in self.quality.kpis.rules:
            gauge = metrics.KPI_BREACH.labels(SERVICE, quality.model_name, rule.kpi)
            gauge.set(1 if rule in quality.kpis.breached else 0)
        for name in self.data.watches:
            metrics.DRIFT_EVENTS.labels(SERVICE, "data", name)


def handlers(settings: Settings, topics: Topics) -> dict[str, BatchHandler]:
    """Topic → handler for the monitoring service (one consumer group over two topics)."""
    return Monitor(settings, topics).handlers


def judge(runtime: Runtime) -> CanaryJudge:
    """The canary judge, starting from the deployment in force, its figures kept in Redis."""
    settings = runtime.settings
    schema = FeatureSchema.load(settings.ingest.feature_schema)
    key = deployment_status_key(settings.topic_prefix, settings.model_name)

    def status(figures: dict[str, Any]) -> None:
        runtime.redis.set(key, json.dumps(figures), ex=86_400)

    record = deployments.latest(deployments.read_deployments(settings, settings.model_name))
    return CanaryJudge(settings, runtime.topics, schema.target.type, record, status)


def checkpointing(runtime: Runtime, monitor: Monitor) -> Checkpointing | None:
    """Restore the newest trusted checkpoint into ``monitor``; what saves the next ones.

    None when checkpoints are off, or there is no signing key to sign them with.
    """
    settings = runtime.settings
    interval = settings.monitoring.checkpoint_interval_s
    if interval == 0:
        return None
    key = settings.signing_key.get_secret_value().encode()
    if not key:
        log.warning("EDDY_SIGNING_KEY is not set: the detectors' state is not checkpointed")
        return None
    # the state embodies the detector settings and KPI rules: other ones must start afresh
    rules = [rule.model_dump() for rule in monitor.quality.kpis.rules]
    fingerprint = json.dumps(
        [settings.monitoring.model_dump(exclude={"fetch_wait_ms", "checkpoint_interval_s"}), rules],
        sort_keys=True,
    )
    store = CheckpointStore(
        runtime.redis,
        f"eddy:{settings.topic_prefix}{SERVICE}:{settings.model_name}:checkpoint",
        key,
        hashlib.sha256(fingerprint.encode()).hexdigest(),
    )
    saved = store.load()
    if saved is None:
        return Checkpointing(store, monitor.state, interval)
    try:
        monitor.restore(saved.state)
    except ValueError as error:
        log.warning("checkpoint ignored: %s", error, extra={"key": store.key})
        return Checkpointing(store, monitor.state, interval)
    log.info("restored checkpoint", extra={"saved_at": saved.saved_at})
    return Checkpointing(store, monitor.state, interval, positions=saved.positions)


def run(settings: Settings | None = None) -> None:
    """Entry point: monitor until SIGTERM or SIGINT."""
    runtime = bootstrap(SERVICE, settings)
    runtime.settings = batching_fetches(runtime.settings, runtime.settings.monitoring.fetch_wait_ms)
    # A counter's series must exist before its first increase, or rate() and increase() miss it.
    for kind, subject in (
        ("concept", ERROR_SUBJECT),
        ("prediction", "prediction"),
        ("label_coverage", COVERAGE_SUBJECT),
    ):
        metrics.DRIFT_EVENTS.labels(SERVICE, kind, subject)
    monitor = Monitor(runtime.settings, runtime.topics, judge(runtime))
    saver = checkpointing(runtime, monitor)
    if saver is None:
        run_stream_service(runtime, monitor.handlers)
        return
    run_stream_service(
        runtime,
        monitor.handlers,
        tick=saver.tick,
        tick_interval_s=saver.interval_s,
        on_assign=saver.on_assign,
        after_batch=saver.after_batch,
    )
