"""``eddy demo``: the whole loop on a stream with a known concept drift, shown live.

Five service processes run as in production; the demo plays producer and label source. It
streams River's SEA generator with an abrupt drift halfway (the benchmarks play other streams
of ``datasets.LOOP_STREAMS`` the same way), sends each label a fixed number of events late,
mixes in malformed and duplicate events, and watches the output topics: served predictions
(scored against the labels it knows), drift events, and model versions. The summary compares
served accuracy before the drift, just after it, and after recovery.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import statistics
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition
from pydantic import SecretStr

from eddy.client import EddyClient, PredictionTimeoutError
from schemas import DeadLetter, DriftEvent, Label, ModelVersion, Prediction, RawEvent
from schemas.base import Target
from services.core.datasets import Row, loop_stream
from services.core.embedded import EmbeddedStack, tuned_for_embedded
from services.core.kafka import create_topics, make_consumer, unsettled_groups
from services.core.settings import Settings
from services.core.supervisor import SERVICES, ServiceProcess, service_env
from services.core.topics import TopicRole, Topics

Echo = Callable[[str], None]


@dataclass(frozen=True)
class Scenario:
    """What to stream and how."""

    events: int = 8000
    drift_at: int | None = 4000
    #: 0: abrupt; else the new concept's share rises linearly over this many events
    drift_width: int = 0
    #: a name in ``datasets.LOOP_STREAMS``; ingest checks it against the schema of that name
    stream: str = "sea"
    rate: float = 400.0
    label_delay: int = 100
    bad_every: int = 500
    seed: int = 42


def bad_events(valid: RawEvent) -> list[tuple[bytes, str]]:
    """Malformed variants of a valid event, each with the reason ingest must give."""
    good = json.loads(valid.model_dump_json())
    feature = next(iter(good["features"]))

    def variant(**changes: object) -> bytes:
        return json.dumps({**good, "event_id": f"bad-{uuid.uuid4().hex[:8]}", **changes}).encode()

    return [
        (b"{not json", "invalid_json"),
        (variant(features={**good["features"], feature: "yes"}), "wrong_type"),
        (variant(features={**good["features"], feature: 1e300}), "out_of_range"),
        (variant(features={**good["features"], "evil": 1}), "unknown_field"),
        (
            variant(features={k: v for k, v in good["features"].items() if k != feature}),
            "missing_field",
        ),
        (variant(admin=True), "unknown_field"),
        (b"\xff\xfe\x00garbage", "not_utf8"),
        (variant(padding="A" * 100_000), "oversized"),
    ]


@dataclass
class LoopReport:
    """What the loop served and published, as seen on its output topics."""

    scenario: Scenario
    labels: dict[str, Target] = field(default_factory=dict)
    index: dict[str, int] = field(default_factory=dict)
    predictions: dict[str, Prediction] = field(default_factory=dict)
    repeated_predictions: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)
    drift_events: list[tuple[int, DriftEvent]] = field(default_factory=list)
    versions: list[tuple[int, ModelVersion]] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)

    def accuracy(self, first: int, last: int) -> float | None:
        """Served accuracy over events ``first`` ≤ i < ``last`` that have a prediction."""
        hits = [
            p.prediction == self.labels[e]
            for e, p in self.predictions.items()
            if first <= self.index[e] < last
        ]
        return sum(hits) / len(hits) if hits else None

    def first_served_at(self, version: int) -> datetime | None:
        """When serving first predicted with a version (or a later one), by serving's clock."""
        served = [p.served_at for p in self.predictions.values() if p.model_version >= version]
        return min(served) if served else None

    def first_served_by(self, version: int) -> int | None:
        """Index of the first event a version (or a later one) served."""
        served = [self.index[e] for e, p in self.predictions.items() if p.model_version >= version]
        return min(served) if served else None

    def drift_version(self) -> ModelVersion | None:
        """The first version published in reaction to a drift event."""
        return next((v for _at, v in self.versions if v.trigger == "drift"), None)

    def recovered_accuracy(self) -> float | None:
        """Served accuracy from the drift-triggered version's first prediction to the end."""
        version = self.drift_version()
        start = self.first_served_by(version.version) if version else None
        return None if start is None else self.accuracy(start, self.scenario.events)

    def summary(self) -> list[str]:
        """The closing report, one line each."""
        s = self.scenario
        lines = ["", "summary"]
        missing = len(set(self.labels) - set(self.predictions))
        lines.append(
            f"  events          {s.events} streamed, {len(self.predictions)} predicted "
            f"(missing {missing}, repeats on the topic {self.repeated_predictions})"
        )
        if s.drift_at is not None:
            for name, (a, b) in {
                "before the drift": (s.drift_at - 1000, s.drift_at),
                "just after it": (s.drift_at, s.drift_at + 500),
            }.items():
                lines.append(
                    f"  accuracy        {name:<18} {_pct(self.accuracy(a, b))}"
                    f"   (events {a}-{b - 1})"
                )
            version = self.drift_version()
            start = self.first_served_by(version.version) if version else None
            lines.append(
                f"  accuracy        after recovery     {_pct(self.recovered_accuracy())}"
                f"   (events {start}-{s.events - 1}, served by v"
                f"{version.version if version else '-'} and later)"
            )
        else:
            lines.append(
                f"  accuracy        last 1000 events   "
                f"{_pct(self.accuracy(s.events - 1000, s.events))}"
            )
        for at, event in self.drift_events:
            lag = f", {at - s.drift_at} events after the change" if s.drift_at else ""
            lines.append(
                f"  drift event     {event.kind} drift of {event.subject} by "
                f"{event.detector} at event {at}{lag}"
            )
        if not self.drift_events:
            lines.append("  drift events    none")
        version = self.drift_version()
        serving_from = self.first_served_by(version.version) if version else None
        if self.drift_events and version is not None and serving_from is not None:
            detected_at = self.drift_events[0][0]
            lines.append(
                f"  reaction        drift event seen at event {detected_at}; drift-triggered "
                f"v{version.version} served from event {serving_from} "
                f"({serving_from - detected_at} events later)"
            )
        scheduled = [at for at, v in self.versions if v.trigger == "scheduled"]
        if scheduled:
            lines.append(
                f"  versions        {len(scheduled)} scheduled, seen from event {scheduled[0]} "
                f"to {scheduled[-1]}"
            )
        for at, v in self.versions:
            if v.trigger != "scheduled":
                lines.append(
                    f"  version v{v.version:<5} {v.trigger:<9} seen at event {at:>5}: "
                    f"{v.description}"
                )
        reasons = ", ".join(f"{k} {n}" for k, n in sorted(self.dead_letters.items()))
        lines.append(f"  dead letters    {sum(self.dead_letters.values())} ({reasons or 'none'})")
        if self.latencies_ms:
            cuts = statistics.quantiles(self.latencies_ms, n=100)
            lines.append(
                f"  latency         raw event to prediction: p50 {cuts[49]:.1f} ms, "
                f"p95 {cuts[94]:.1f} ms, p99 {cuts[98]:.1f} ms"
            )
        return lines


def _pct(value: float | None) -> str:
    return "   -  " if value is None else f"{value:6.1%}"


class LoopRun:
    """Starts the services, streams the scenario, and reads what comes out."""

    def __init__(
        self,
        settings: Settings,
        scenario: Scenario,
        workdir: Path,
        echo: Echo,
        rows: list[Row] | None = None,
    ) -> None:
        self.settings = settings
        self.rows = rows
        self.scenario = scenario
        self.workdir = workdir
        self.echo = echo
        self.topics = Topics(settings.topic_prefix)
        self.report = LoopReport(scenario)
        self.sent_at: dict[str, float] = {}
        self.sent = 0
        self.services: list[ServiceProcess] = []

    def run(self) -> LoopReport:
        """Provision, start services, stream, and stop the services (also on error)."""
        created, existing = create_topics(self.settings)
        self.echo(f"topics: {len(created)} created, {len(existing)} already there")
        env = service_env(self.settings)
        self.services = [
            ServiceProcess(name, env, self.workdir / f"{name}.log").start() for name in SERVICES
        ]
        self.echo(f"services: {', '.join(SERVICES)} started (logs in {self.workdir})")
        try:
            self._wait_until_serving()
            self._stream()
        finally:
            for service in reversed(self.services):
                service.stop()
            self.echo("services stopped")
        return self.report

    def _wait_until_serving(self, timeout_s: float = 90.0) -> None:
        started = time.monotonic()
        with EddyClient(self.settings) as client:
            while True:
                self._check_services()
                if client.serving_answers():
                    break
                if time.monotonic() - started > timeout_s:
                    raise PredictionTimeoutError(f"serving did not answer within {timeout_s:.0f} s")
        # Every service must have joined its group before the stream starts: otherwise the
        # first events wait in the topics while the five joins finish, and the first trained
        # version comes hundreds of events later than it would in a running deployment.
        groups = [self.topics.group(name) for name in SERVICES]
        while waiting := unsettled_groups(self.settings, groups):
            self._check_services()
            if time.monotonic() - started > timeout_s:
                raise RuntimeError(
                    f"consumer groups still joining after {timeout_s:.0f} s: {waiting}"
                )
            time.sleep(0.1)
        self.echo(
            f"serving answered and every service joined after "
            f"{time.monotonic() - started:.1f} s; streaming {self.scenario.events} events "
            f"at {self.scenario.rate:.0f}/s, labels {self.scenario.label_delay} events late"
            + (
                f", concept drift at event {self.scenario.drift_at}"
                + (
                    f" (gradual over {self.scenario.drift_width} events)"
                    if self.scenario.drift_width
                    else ""
                )
                if self.scenario.drift_at is not None
                else ", no drift"
            )
        )

    def _stream(self) -> None:
        s = self.scenario
        rows = self.rows or loop_stream(s.stream, s.events, s.drift_at, s.drift_width, s.seed)
        outputs = self._consumer(("predictions", "dlq", "drift", "models"))
        pending_labels: list[Label] = []
        started = time.monotonic()
        last_report = 0.0
        with EddyClient(self.settings) as client:
            for i, (features, label) in enumerate(rows):
                event = RawEvent(
                    event_id=f"{s.stream}-{i}",
                    entity_id=f"sensor-{i % 32}",
                    ts=datetime.now(UTC),
                    features=features,
                )
                self.report.labels[event.event_id] = label
                self.report.index[event.event_id] = i
                self.sent_at[event.event_id] = time.time()
                payload = event.model_dump_json().encode()
                client.send_raw(payload, event.entity_id.encode())
                if i % 997 == 500:  # a producer retry: the same event again
                    client.send_raw(payload, event.entity_id.encode())
                if s.bad_every and i % s.bad_every == s.bad_every // 2:
                    bad, _reason = bad_events(event)[(i // s.bad_every) % 8]
                    client.send_raw(bad, b"bad")
                pending_labels.append(Label(event_id=event.event_id, label=label))
                if len(pending_labels) > s.label_delay:
                    label_msg = pending_labels.pop(0)
                    client.send_label(label_msg)
                self.sent = i + 1
                self._drain(outputs, 0)
                while time.monotonic() - started < (i + 1) / s.rate:
                    self._drain(outputs, 0.005)
                if time.monotonic() - last_report >= 1.0:
                    last_report = time.monotonic()
                    self._check_services()
                    self._progress()
            for label_msg in pending_labels:
                client.send_label(label_msg)
            client.flush()
        deadline = time.monotonic() + 60
        while len(self.report.predictions) < s.events and time.monotonic() < deadline:
            self._drain(outputs, 0.2)
            self._check_services()
        self._drain(outputs, 1.0)  # versions and drift events that follow the last labels
        self._progress()
        outputs.close()

    def _consumer(self, roles: tuple[TopicRole, ...]) -> Consumer:
        consumer = make_consumer(self.settings, f"eddy-demo-{uuid.uuid4().hex}")
        for role in roles:
            topic = self.topics(role)
            partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
            consumer.incremental_assign([TopicPartition(topic, p, 0) for p in partitions])
        return consumer

    def _drain(self, consumer: Consumer, timeout: float) -> None:
        names = {self.topics(r): r for r in ("predictions", "dlq", "drift", "models")}
        report = self.report
        for message in consumer.consume(1000, timeout):
            if message.error() is not None:
                continue
            role, raw = names.get(message.topic() or ""), message.value() or b""
            if role == "predictions":
                prediction = Prediction.model_validate_json(raw)
                if prediction.event_id not in report.labels:
                    continue
                if prediction.event_id in report.predictions:
                    report.repeated_predictions += 1
                    continue
                report.predictions[prediction.event_id] = prediction
                sent = self.sent_at.pop(prediction.event_id, None)
                if sent is not None:
                    report.latencies_ms.append((time.time() - sent) * 1000)
            elif role == "dlq":
                report.dead_letters[DeadLetter.model_validate_json(raw).reason] += 1
            elif role == "drift":
                event = DriftEvent.model_validate_json(raw)
                report.drift_events.append((self.sent, event))
                self.echo(
                    f"  ! drift event: {event.kind} drift of {event.subject} "
                    f"(magnitude {event.magnitude or 0:.2f}) at event {self.sent}"
                )
            elif role == "models":
                version = ModelVersion.model_validate_json(raw)
                report.versions.append((self.sent, version))
                if version.trigger != "scheduled":  # those come every few dozen examples
                    self.echo(
                        f"  + model v{version.version} published ({version.trigger}) "
                        f"at event {self.sent}: {version.description}"
                    )

    def _check_services(self) -> None:
        for service in self.services:
            if not service.running:
                raise RuntimeError(f"{service.name} exited:\n{service.log_tail()}")

    def _progress(self) -> None:
        report = self.report
        recent = [e for e in report.predictions if report.index[e] >= self.sent - 500]
        hits = [report.predictions[e].prediction == report.labels[e] for e in recent]
        accuracy = f"{sum(hits) / len(hits):.3f}" if hits else "  -  "
        latest = max(report.predictions.values(), key=lambda p: p.served_at, default=None)
        version = latest.model_version if latest else "-"
        left = (self.scenario.events - self.sent) / self.scenario.rate
        self.echo(
            f"  events {self.sent:>5}/{self.scenario.events}  predictions "
            f"{len(report.predictions):>5}  accuracy(last 500) {accuracy}  serving v{version}"
            f"  drift events {len(report.drift_events)}  dlq "
            f"{sum(report.dead_letters.values())}  ~{left:.0f} s to go"
        )


def loop_settings(
    settings: Settings,
    feature_schema: str = "sea",
    publish_every: int = 500,
    validation_window: int = 100,
) -> Settings:
    """The loop's settings: the stream's feature schema and how often training publishes.

    The defaults are the demo's: SEA, a version every 500 examples, drift candidates validated
    on the newest 100.
    """
    return settings.model_copy(
        update={
            "ingest": settings.ingest.model_copy(update={"feature_schema": feature_schema}),
            "training": settings.training.model_copy(
                update={"publish_every": publish_every, "validation_window": validation_window}
            ),
        }
    )


@contextlib.contextmanager
def loop_environment(settings: Settings, echo: Echo, model_name: str) -> Iterator[Settings]:
    """Settings for one run of the loop: its own topics, registry and key, and a stack.

    On the configured endpoints, or on an embedded stack (started here, stopped on exit) when
    there are none. The run's folder (logs, registry) is the registry folder's parent.
    """
    with contextlib.ExitStack() as cleanup:
        workdir = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="eddy-loop-")))
        overrides: dict[str, object] = {
            "topic_prefix": settings.topic_prefix or f"{model_name}-{uuid.uuid4().hex[:6]}.",
            "registry_dir": workdir / "registry",
            "model_name": model_name,
        }
        if not settings.signing_key.get_secret_value():
            overrides["signing_key"] = SecretStr(secrets.token_hex(32))
            echo("signing key: a random one for this run (set EDDY_SIGNING_KEY to choose)")
        if settings.is_embedded:
            echo("starting the embedded broker (tansu) and Redis (valkey-server)...")
            stack = cleanup.enter_context(
                EmbeddedStack(
                    workdir=workdir / "stack",
                    redis_password=settings.redis_password.get_secret_value(),
                )
            )
            overrides.update(kafka_bootstrap=stack.kafka_bootstrap, redis_url=stack.redis_url)
            overrides["kafka"] = tuned_for_embedded(settings.kafka)
            echo(f"  broker {stack.kafka_bootstrap}, redis {stack.redis_url}")
        yield settings.model_copy(update=overrides)


def run_loop(
    settings: Settings, scenario: Scenario, echo: Echo, rows: list[Row] | None = None
) -> LoopReport:
    """Start the services, stream the scenario (or ``rows``), stop them; what came out."""
    workdir = settings.registry_dir.parent
    return LoopRun(settings, scenario, workdir, echo, rows).run()


def run_demo(
    settings: Settings,
    echo: Echo,
    scenario: Scenario | None = None,
    report_path: Path | None = None,
) -> LoopReport:
    """Run the loop on the configured endpoints, or on an embedded stack when there are none.

    ``report_path``: also write the HTML report there, while the stack is still up.
    """
    from eddy.report import write_report

    scenario = scenario or Scenario()
    with loop_environment(settings, echo, scenario.stream) as base:
        configured = loop_settings(base, feature_schema=scenario.stream)
        started = time.monotonic()
        report = run_loop(configured, scenario, echo)
        for line in report.summary():
            echo(line)
        echo(f"  wall time       {time.monotonic() - started:.1f} s")
        if report_path is not None:
            write_report(configured, report_path)
            echo(f"report written to {report_path} (open it in a browser)")
        return report
