"""The embedded broker's client tuning: applied where the operator set nothing, and exported."""

from __future__ import annotations

import pytest

from services.core.embedded import EMBEDDED_KAFKA, EmbeddedStack, tuned_for_embedded
from services.core.settings import KafkaSettings, Settings


def test_defaults_suit_a_real_cluster() -> None:
    assert KafkaSettings().fetch_wait_max_ms == 500
    assert KafkaSettings().topic_partitions is None  # as declared in infra/topics.toml


def test_the_embedded_tuning_replaces_defaults() -> None:
    tuned = tuned_for_embedded(KafkaSettings())
    assert tuned.fetch_wait_max_ms == 20
    assert tuned.session_timeout_ms == 3000
    assert tuned.topic_partitions == 1


def test_a_value_the_operator_set_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDDY_KAFKA__FETCH_WAIT_MAX_MS", "40")
    tuned = tuned_for_embedded(Settings().kafka)
    assert tuned.fetch_wait_max_ms == 40
    assert tuned.session_timeout_ms == 3000


def test_other_settings_are_untouched() -> None:
    tuned = tuned_for_embedded(KafkaSettings(batch_size=77, extra={"client.id": "x"}))
    assert (tuned.batch_size, tuned.extra) == (77, {"client.id": "x"})


def test_the_stack_exports_its_tuning_for_services_started_elsewhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = EmbeddedStack(kafka_bootstrap="127.0.0.1:1", redis_url="redis://127.0.0.1:2/0").env()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    kafka = Settings().kafka
    assert {field: getattr(kafka, field) for field in EMBEDDED_KAFKA} == EMBEDDED_KAFKA
