"""``eddy demo``: the whole path on the embedded default with a real dataset, shown live.

It starts the broker and Redis, provisions topics, starts ingest and serving as separate
processes, publishes a first model, streams River's Phishing dataset (with some malformed and
duplicate events mixed in), swaps to a second model version mid-stream, and reports what the
platform served: predictions per version, accuracy, rejects by reason, latency.
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

from schemas import DeadLetter, ModelVersion, Prediction, RawEvent
from schemas.base import Features, Target
from schemas.models import Trigger
from services.core import registry
from services.core.client import EddyClient
from services.core.datasets import default_classifier, stream
from services.core.embedded import EmbeddedStack
from services.core.kafka import create_topics, make_consumer
from services.core.settings import Settings
from services.core.supervisor import ServiceProcess, service_env
from services.core.topics import Topics

Echo = Callable[[str], None]

#: The services this demo runs; it plays the part of training by publishing versions itself.
DEMO_SERVICES = ("ingest", "serving")


def bad_events(valid: RawEvent) -> list[tuple[bytes, str]]:
    """Malformed variants of a valid event, each with the reason ingest must give."""
    good = json.loads(valid.model_dump_json())
    feature = next(iter(good["features"]))

    def variant(**changes: object) -> bytes:
        return json.dumps({**good, "event_id": f"bad-{uuid.uuid4().hex[:8]}", **changes}).encode()

    return [
        (b"{not json", "invalid_json"),
        (variant(features={**good["features"], feature: "yes"}), "wrong_type"),
        (variant(features={**good["features"], feature: 7.5}), "out_of_range"),
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
class Observed:
    """What the demo saw on the output topics, de-duplicated by event_id."""

    predictions: dict[str, Prediction] = field(default_factory=dict)
    duplicate_predictions: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)


def _events(rows: list[tuple[Features, Target]], start: int) -> Iterator[RawEvent]:
    for i, (features, _label) in enumerate(rows, start):
        yield RawEvent(
            event_id=f"phishing-{i}",
            entity_id=f"page-{i % 64}",
            ts=datetime.now(UTC),
            features=features,
        )


class Demo:
    """One run of the demo against a set of endpoints."""

    def __init__(self, settings: Settings, workdir: Path, echo: Echo) -> None:
        self.settings = settings
        self.workdir = workdir
        self.echo = echo
        self.topics = Topics(settings.topic_prefix)
        self.observed = Observed()
        self.sent_at: dict[str, float] = {}
        self.labels: dict[str, Target] = {}
        self.services: list[ServiceProcess] = []

    def run(self, rate: float) -> Observed:
        """Provision, start services, stream, report; services stop even on error."""
        created, existing = create_topics(self.settings)
        self.echo(f"topics: {len(created)} created, {len(existing)} already there")
        env = service_env(self.settings)
        for name in DEMO_SERVICES:
            log_path = self.workdir / f"{name}.log"
            self.services.append(ServiceProcess(name, env, log_path).start())
        self.echo(f"services: {', '.join(DEMO_SERVICES)} started (logs in {self.workdir})")
        try:
            self._stream(rate)
        finally:
            for service in reversed(self.services):
                service.stop()
            self.echo("services stopped")
        return self.observed

    def _stream(self, rate: float) -> None:
        rows = list(stream("phishing"))
        warmup, live = rows[:100], rows[100:]
        first = self._publish(warmup, "initial", None, "warm-up on the first 100 rows")
        self.echo(
            f"model v{first.version} published (trigger {first.trigger}): {first.description}"
        )
        self._wait_until_serving()
        outputs = self._output_consumer()
        swap_at = len(live) // 2
        with EddyClient(self.settings) as client:
            started = time.monotonic()
            last_report = 0.0
            for i, event in enumerate(_events(live, len(warmup))):
                self.labels[event.event_id] = live[i][1]
                self.sent_at[event.event_id] = time.time()
                client.send_events([event]) if i % 50 == 0 else client.send_raw(
                    event.model_dump_json().encode(), event.entity_id.encode()
                )
                if i % 97 == 0:  # a producer retry: the same event again
                    client.send_raw(event.model_dump_json().encode(), event.entity_id.encode())
                if i % 125 == 60:
                    bad, _reason = bad_events(event)[(i // 125) % 8]
                    client.send_raw(bad, b"bad")
                if i == swap_at:
                    client.flush()
                    seen = len(warmup) + i
                    second = self._publish(
                        rows[:seen], "manual", first.version, f"retrained on the first {seen} rows"
                    )
                    self.echo(f"model v{second.version} published mid-stream: {second.description}")
                self._drain(outputs, 0)
                while time.monotonic() - started < (i + 1) / rate:
                    self._drain(outputs, 0.01)
                if time.monotonic() - last_report > 1.0:
                    last_report = time.monotonic()
                    self._check_services()
                    self._progress(i + 1, len(live))
            client.flush()
        deadline = time.monotonic() + 60
        while len(self.observed.predictions) < len(live) and time.monotonic() < deadline:
            self._drain(outputs, 0.2)
            self._check_services()
        self._progress(len(live), len(live))
        outputs.close()

    def _wait_until_serving(self, timeout_s: float = 60.0) -> None:
        """Block until serving answers a request/reply call, so the stream starts on a live loop."""
        from services.core.client import PredictionTimeoutError

        started = time.monotonic()
        with EddyClient(self.settings) as client:
            while True:
                self._check_services()
                try:
                    client.predict({}, timeout_s=2.0)
                    break
                except PredictionTimeoutError:
                    if time.monotonic() - started > timeout_s:
                        raise
        self.echo(f"serving answered a request/reply call after {time.monotonic() - started:.1f} s")

    def _publish(
        self,
        rows: list[tuple[Features, Target]],
        trigger: Trigger,
        parent: int | None,
        description: str,
    ) -> ModelVersion:
        model = default_classifier()
        for features, label in rows:
            model.learn_one(features, label)
        return registry.publish(
            self.settings,
            self.settings.model_name,
            registry.serialize_river(model),
            trigger=trigger,
            parent_version=parent,
            description=description,
        )

    def _output_consumer(self) -> Consumer:
        consumer = make_consumer(self.settings, f"eddy-demo-{uuid.uuid4().hex}")
        for role in ("predictions", "dlq"):
            topic = self.topics(role)
            partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
            consumer.incremental_assign([TopicPartition(topic, p, 0) for p in partitions])
        return consumer

    def _drain(self, consumer: Consumer, timeout: float) -> None:
        predictions_topic = self.topics("predictions")
        for message in consumer.consume(1000, timeout):
            if message.error() is not None:
                continue
            if message.topic() == predictions_topic:
                prediction = Prediction.model_validate_json(message.value() or b"")
                if prediction.event_id in self.observed.predictions:
                    self.observed.duplicate_predictions += 1
                    continue
                self.observed.predictions[prediction.event_id] = prediction
                sent = self.sent_at.get(prediction.event_id)
                if sent is not None:
                    self.observed.latencies_ms.append((time.time() - sent) * 1000)
            else:
                letter = DeadLetter.model_validate_json(message.value() or b"")
                self.observed.dead_letters[letter.reason] += 1

    def _check_services(self) -> None:
        for service in self.services:
            if not service.running:
                raise RuntimeError(f"{service.name} exited:\n{service.log_tail()}")

    def _progress(self, sent: int, total: int) -> None:
        predictions = list(self.observed.predictions.values())
        recent = predictions[-200:]
        correct = sum(p.prediction == self.labels.get(p.event_id) for p in recent)
        accuracy = f"{correct / len(recent):.3f}" if recent else "-"
        version = predictions[-1].model_version if predictions else "-"
        self.echo(
            f"  sent {sent:>5}/{total}  predictions {len(predictions):>5}  "
            f"dlq {sum(self.observed.dead_letters.values()):>2}  serving v{version}  "
            f"accuracy(last 200) {accuracy}"
        )

    def summary(self) -> list[str]:
        """The closing report, one line each."""
        observed = self.observed
        lines = ["", "summary"]
        lines.append(f"  events streamed        {len(self.labels)} (Phishing rows 101-1250)")
        lines.append(
            f"  predictions (unique)   {len(observed.predictions)}; "
            f"missing {len(set(self.labels) - set(observed.predictions))}; "
            f"duplicates seen on the topic {observed.duplicate_predictions}"
        )
        by_version: dict[int, list[bool]] = {}
        for prediction in observed.predictions.values():
            by_version.setdefault(prediction.model_version, []).append(
                prediction.prediction == self.labels.get(prediction.event_id)
            )
        for version, hits in sorted(by_version.items()):
            lines.append(
                f"  model v{version}               {len(hits)} predictions, "
                f"accuracy {sum(hits) / len(hits):.3f}"
            )
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(observed.dead_letters.items()))
        lines.append(f"  dead letters           {sum(observed.dead_letters.values())} ({reasons})")
        if observed.latencies_ms:
            cuts = statistics.quantiles(observed.latencies_ms, n=100)
            lines.append(
                f"  latency event→predict  p50 {cuts[49]:.1f} ms, p95 {cuts[94]:.1f} ms "
                f"(produce to consume, through ingest and serving)"
            )
        return lines


def run_demo(settings: Settings, echo: Echo, rate: float = 250.0) -> Observed:
    """Run the demo on the configured endpoints, or on an embedded stack when there are none."""
    with contextlib.ExitStack() as cleanup:
        workdir = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="eddy-demo-")))
        overrides: dict[str, object] = {
            "topic_prefix": settings.topic_prefix or f"demo-{uuid.uuid4().hex[:6]}.",
            "registry_dir": workdir / "registry",
            "serving": settings.serving.model_copy(update={"model_name": "phishing"}),
        }
        if not settings.signing_key.get_secret_value():
            overrides["signing_key"] = SecretStr(secrets.token_hex(32))
            echo("signing key: a random one for this demo (set EDDY_SIGNING_KEY to choose)")
        if settings.is_embedded:
            echo("starting the embedded broker (tansu) and Redis (valkey-server)...")
            stack = cleanup.enter_context(EmbeddedStack(workdir=workdir / "stack"))
            overrides.update(kafka_bootstrap=stack.kafka_bootstrap, redis_url=stack.redis_url)
            overrides["kafka"] = settings.kafka.model_copy(update={"session_timeout_ms": 3000})
            echo(f"  broker {stack.kafka_bootstrap}, redis {stack.redis_url}")
        demo = Demo(settings.model_copy(update=overrides), workdir, echo)
        started = time.monotonic()
        demo.run(rate)
        for line in demo.summary():
            echo(line)
        echo(f"  wall time              {time.monotonic() - started:.1f} s")
        return demo.observed
