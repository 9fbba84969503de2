"""Services off the path to a prediction let fetched data pile up, unless told not to."""

from __future__ import annotations

from services.core.kafka import FETCH_MIN_BYTES, batching_fetches
from services.core.settings import KafkaSettings, Settings


def test_a_batching_consumer_waits_for_bigger_batches_and_other_kafka_settings_stay() -> None:
    settings = Settings(kafka=KafkaSettings(extra={"security.protocol": "SSL"}))
    batched = batching_fetches(settings, 100)

    assert batched.kafka.fetch_wait_max_ms == 100
    assert batched.kafka.extra == {
        "security.protocol": "SSL",
        "fetch.min.bytes": str(FETCH_MIN_BYTES),
    }
    assert settings.kafka.extra == {"security.protocol": "SSL"}, "the original was changed"


def test_a_fetch_wait_of_zero_changes_nothing() -> None:
    settings = Settings()
    assert batching_fetches(settings, 0) is settings


def test_the_service_wait_applies_whatever_the_kafka_wait() -> None:
    for kafka_wait_ms in (10, 500):
        settings = Settings(kafka=KafkaSettings(fetch_wait_max_ms=kafka_wait_ms))
        assert batching_fetches(settings, 100).kafka.fetch_wait_max_ms == 100


def test_fetch_min_bytes_set_by_the_operator_wins() -> None:
    settings = Settings(kafka=KafkaSettings(extra={"fetch.min.bytes": "1"}))

    assert batching_fetches(settings, 100).kafka.extra == {"fetch.min.bytes": "1"}


def test_labeling_and_monitoring_batch_their_fetches_and_training_does_not() -> None:
    settings = Settings()
    assert settings.labeling.fetch_wait_ms == settings.monitoring.fetch_wait_ms == 100
    # a training fetch held for data delays the versions serving gets (served accuracy)
    assert settings.training.fetch_wait_ms == 0
