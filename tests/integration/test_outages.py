"""Outages of the servers: a service waits for Redis to come back and goes on, losing nothing.

Each test runs on embedded servers of its own, since it kills them.
"""

from __future__ import annotations

import secrets
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from schemas import FeatureEvent, Label, Prediction, TrainingExample
from services.core.embedded import EmbeddedStack, free_port, tuned_for_embedded
from services.core.kafka import create_topics
from services.core.settings import KafkaSettings, Settings
from services.core.supervisor import ServiceProcess, service_env
from tests.integration.support import (
    TopicReader,
    metric_value,
    phishing_events,
    poll_until,
    produce,
    publish_model,
    wait_for_metric,
)

HALF = 300


def _probe(port: int, path: str) -> tuple[int, str]:
    """The status and body of a service's health endpoint."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as page:
            return page.status, page.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@pytest.fixture
def own_stack(tmp_path: Path) -> Iterator[EmbeddedStack]:
    """Servers this test may kill."""
    with EmbeddedStack(workdir=tmp_path / "stack") as stack:
        yield stack


@pytest.fixture
def own_settings(own_stack: EmbeddedStack, tmp_path: Path) -> Settings:
    configured = Settings(
        kafka_bootstrap=own_stack.kafka_bootstrap,
        redis_url=own_stack.redis_url,
        topic_prefix=f"o{uuid.uuid4().hex[:8]}.",
        signing_key=SecretStr(secrets.token_hex(16)),
        registry_dir=tmp_path / "registry",
        kafka=tuned_for_embedded(KafkaSettings()),
    )
    create_topics(configured)
    return configured


def test_redis_killed_and_restarted_mid_stream_no_service_exits_and_its_state_is_kept(
    own_stack: EmbeddedStack, own_settings: Settings, tmp_path: Path
) -> None:
    settings = own_settings
    publish_model(settings)
    ports = {name: free_port() for name in ("ingest", "serving", "labeling")}
    services = [
        ServiceProcess(
            name,
            {**service_env(settings), "EDDY_METRICS_PORT": str(port)},
            tmp_path / f"{name}.log",
        ).start()
        for name, port in ports.items()
    ]
    predictions = TopicReader(settings, "predictions", Prediction)
    features = TopicReader(settings, "features", FeatureEvent)
    examples = TopicReader(settings, "training_examples", TrainingExample)
    try:
        events = phishing_events(2 * HALF)
        raw = [(e.entity_id.encode(), e.model_dump_json().encode()) for e in events]
        produce(settings, "raw", raw[:HALF])
        predictions.read_until(lambda items: len({p.event_id for p in items}) >= HALF, 120)
        time.sleep(2)  # the append-only file is written every second

        own_stack.crash("redis")  # a crash: no chance to save anything more
        produce(settings, "raw", raw[HALF:])  # arrives while Redis is away
        time.sleep(4)
        waiting = [
            name for name, port in ports.items() if metric_value(port, "eddy_dependency_up") == 0
        ]
        probes = {
            name: (_probe(port, "/healthz"), _probe(port, "/readyz"))
            for name, port in ports.items()
        }
        own_stack.restart_redis()

        out = predictions.read_until(lambda items: len({p.event_id for p in items}) >= 2 * HALF)
        assert {p.event_id for p in out} == {e.event_id for e in events}
        assert all(s.running for s in services), "\n".join(s.log_tail() for s in services)
        assert waiting, "no service noticed that Redis was away: nothing was tested"
        for name in waiting:  # live (a restart would not bring Redis back), not ready
            (live, _), (ready, body) = probes[name]
            assert (live, ready) == (200, 503) and "waiting for redis" in body, (name, body)
        ready = poll_until(
            lambda: all(_probe(port, "/readyz")[0] == 200 for port in ports.values()) or None,
            timeout_s=30,
        )
        assert ready, {name: _probe(port, "/readyz") for name, port in ports.items()}

        # pending predictions from before the crash are still there to join
        labels = [Label(event_id=e.event_id, label=i % 2 == 0) for i, e in enumerate(events)]
        produce(settings, "labels", [(None, label.model_dump_json().encode()) for label in labels])
        joined = examples.read_until(lambda items: len({x.event_id for x in items}) >= 2 * HALF)
        assert {x.event_id for x in joined} == {e.event_id for e in events}

        # and ingest still knows the events it accepted before the crash
        before = metric_value(ports["ingest"], "eddy_duplicates_total")
        produce(settings, "raw", raw[:100])
        wait_for_metric(ports["ingest"], "eddy_duplicates_total", before + 100)
        late = features.settle(quiet_s=2.0)
        assert len([f for f in late if f.event_id in {e.event_id for e in events[:100]}]) == 100
        assert all(s.running for s in services), "\n".join(s.log_tail() for s in services)
    finally:
        for reader in (predictions, features, examples):
            reader.close()
        for service in reversed(services):
            service.stop()


def test_broker_restarted_empty_no_service_hangs_and_a_restart_of_the_services_recovers(
    own_stack: EmbeddedStack, own_settings: Settings, tmp_path: Path
) -> None:
    kafka = own_settings.kafka.model_copy(update={"delivery_timeout_s": 8.0})
    settings = own_settings.model_copy(update={"kafka": kafka})
    publish_model(settings)
    names = ("ingest", "serving", "labeling")

    def start(round_: int) -> list[ServiceProcess]:
        env = service_env(settings)
        return [
            ServiceProcess(name, env, tmp_path / f"{name}-{round_}.log").start() for name in names
        ]

    first = start(1)
    events = phishing_events(3 * HALF)
    raw = [(e.entity_id.encode(), e.model_dump_json().encode()) for e in events]
    try:
        produce(settings, "raw", raw[:HALF])
        before = TopicReader(settings, "predictions", Prediction)
        before.read_until(lambda items: len(items) >= HALF, 120)
        before.close()

        own_stack.restart_broker()  # in memory only: every topic, offset and message is gone
        create_topics(settings)
        publish_model(settings)
        produce(settings, "raw", raw[HALF : 2 * HALF])
        poll_until(lambda: not all(s.running for s in first) or None, 4 * kafka.delivery_timeout_s)
        time.sleep(2)
        ended = {s.name: s.process.returncode for s in first if s.process and not s.running}
        stop_times = {}
        for service in first:
            started = time.monotonic()
            service.stop()
            stop_times[service.name] = time.monotonic() - started
    finally:
        for service in first:
            service.stop()

    logs = {s.name: s.log_path.read_text(errors="replace") for s in first}
    # the broker that lost its data either never acknowledges (the delivery timeout) or, to an
    # idempotent producer it no longer knows, refuses the sequence: either way exit 1, nothing
    # committed, and a reason
    said = ("acknowledged none of this service's messages", "offsets not committed")
    for name, code in ended.items():
        assert code == 1 and any(reason in logs[name] for reason in said), logs[name]
    assert ended, f"no service noticed that the broker lost its data: {logs}"
    assert all(seconds < 9 for seconds in stop_times.values()), stop_times  # inside the grace

    second = start(2)
    after = TopicReader(settings, "predictions", Prediction)
    try:
        produce(settings, "raw", raw[2 * HALF :])
        wanted = {e.event_id for e in events[HALF:]}
        out = after.read_until(lambda items: wanted <= {p.event_id for p in items}, 120)
        missing = wanted - {p.event_id for p in out}
        assert not missing, (
            f"missing {len(missing)}, e.g. {sorted(missing)[:5]}; the services said:\n"
            + "\n".join(f"--- {s.log_path.name}\n{s.log_tail(40)}" for s in (*first, *second))
        )
        assert all(s.running for s in second), "\n".join(s.log_tail() for s in second)
    finally:
        after.close()
        for service in reversed(second):
            service.stop()
