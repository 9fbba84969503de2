"""Services authenticate to Redis, a client without the password is refused, no secret leaks.

The embedded Redis runs with a password here (from a 0600 config file, not its command line).
The embedded broker cannot run with SASL: tansu 0.6.0 keeps users in its storage, its only local
storage is memory, and with ``--authentication`` on it refuses the request that would create
the first user (docs/operations.md#authentication). Kafka's SASL settings are covered by the
client configuration tests; the secret sweep below includes the SASL password all the same.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from pydantic import SecretStr

from schemas import Label, Prediction, TrainingExample
from services.core.embedded import EmbeddedStack, tuned_for_embedded
from services.core.kafka import create_topics
from services.core.settings import KafkaSettings, LabelingSettings, Settings
from services.core.supervisor import ServiceProcess, service_env
from tests.integration.support import (
    TopicReader,
    everything_in_redis,
    everything_on_topics,
    phishing_events,
    produce,
)

SECRETS = {
    "redis password": f"redis-{secrets.token_hex(12)}",
    "signing key": f"signing-{secrets.token_hex(12)}",
    "pii key": f"pii-{secrets.token_hex(12)}",
    "sasl password": f"sasl-{secrets.token_hex(12)}",
    "session key": f"session-{secrets.token_hex(12)}",
}
EVENTS = 300


@pytest.fixture
def locked_stack(tmp_path: Path) -> Iterator[EmbeddedStack]:
    with EmbeddedStack(
        workdir=tmp_path / "stack", redis_password=SECRETS["redis password"]
    ) as stack:
        yield stack


@pytest.fixture
def locked_settings(locked_stack: EmbeddedStack, tmp_path: Path) -> Settings:
    settings = Settings(
        kafka_bootstrap=locked_stack.kafka_bootstrap,
        redis_url=locked_stack.redis_url,
        redis_password=SecretStr(SECRETS["redis password"]),
        topic_prefix=f"t{uuid.uuid4().hex[:10]}.",
        signing_key=SecretStr(SECRETS["signing key"]),
        pii_key=SecretStr(SECRETS["pii key"]),
        registry_dir=tmp_path / "registry",
        kafka=tuned_for_embedded(KafkaSettings(sasl_password=SecretStr(SECRETS["sasl password"]))),
        labeling=LabelingSettings(ui_session_key=SecretStr(SECRETS["session key"])),
    )
    create_topics(settings)
    return settings


def test_a_redis_client_without_the_password_or_with_a_wrong_one_is_refused(
    locked_stack: EmbeddedStack, locked_settings: Settings
) -> None:
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(locked_stack.redis_url).set("eddy:probe", "1")
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(locked_stack.redis_url, password="wrong").ping()
    from services.core.state import connect_redis

    assert connect_redis(locked_settings).ping()


def test_the_loop_runs_with_redis_authentication_on_and_no_secret_leaks(
    locked_stack: EmbeddedStack, locked_settings: Settings, tmp_path: Path
) -> None:
    env = service_env(locked_settings)
    services = [
        ServiceProcess(name, env, tmp_path / f"{name}.log").start()
        for name in ("ingest", "serving", "labeling", "training", "monitoring")
    ]
    command_lines = []
    try:
        for service in services:
            assert service.process is not None
            command_lines.append(Path(f"/proc/{service.process.pid}/cmdline").read_bytes())
        events = phishing_events(EVENTS, prefix="auth")
        produce(
            locked_settings,
            "raw",
            [(e.entity_id.encode(), e.model_dump_json().encode()) for e in events]
            + [(b"x", b'{"event_id": "hostile", "features": "not an object"}')],
        )
        predictions = TopicReader(locked_settings, "predictions", Prediction)
        predicted = predictions.read_until(lambda items: len(items) >= EVENTS, 120)
        produce(
            locked_settings,
            "labels",
            [(p.event_id.encode(), Label(event_id=p.event_id, label=True).model_dump_json()
              .encode()) for p in predicted],
        )  # fmt: skip
        examples = TopicReader(locked_settings, "training_examples", TrainingExample)
        learned = examples.read_until(lambda items: len(items) >= EVENTS, 120)
        predictions.close()
        examples.close()
    finally:
        for service in reversed(services):
            service.stop()

    assert {p.event_id for p in predicted} == {e.event_id for e in events}
    assert len({x.event_id for x in learned}) == EVENTS
    assert all(s.process is not None and s.process.returncode == 0 for s in services), [
        s.log_tail() for s in services
    ]
    redis_pid = locked_stack.pids[1]
    command_lines.append(Path(f"/proc/{redis_pid}/cmdline").read_bytes())
    places = {
        "logs": b"".join(s.log_path.read_bytes() for s in services),
        "command lines": b"\n".join(command_lines),
        "registry": b"".join(
            p.read_bytes() for p in locked_settings.registry_dir.rglob("*") if p.is_file()
        ),
        "topics": everything_on_topics(locked_settings),
        "redis": everything_in_redis(locked_settings),
    }
    assert len(places["registry"]) > 0 and b"hostile" in places["topics"], "nothing was swept"
    config = locked_stack.workdir / "valkey.conf"  # type: ignore[operator]
    assert SECRETS["redis password"].encode() in config.read_bytes(), "where Redis reads it"
    assert config.stat().st_mode & 0o077 == 0, "a file only its owner reads"
    for what, secret in SECRETS.items():
        for where, content in places.items():
            assert secret.encode() not in content, f"the {what} is in the {where}"
