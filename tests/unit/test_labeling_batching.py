"""labeling's consumer waits for data to pile up, unless told not to."""

from __future__ import annotations

from services.core.settings import KafkaSettings, LabelingSettings, Settings
from services.labeling.service import FETCH_MIN_BYTES, batching


def test_labelings_fetches_wait_for_bigger_batches_and_other_kafka_settings_stay() -> None:
    settings = Settings(kafka=KafkaSettings(extra={"security.protocol": "SSL"}))
    batched = batching(settings)

    assert batched.kafka.fetch_wait_max_ms == settings.labeling.fetch_wait_ms
    assert batched.kafka.extra == {
        "security.protocol": "SSL",
        "fetch.min.bytes": str(FETCH_MIN_BYTES),
    }
    assert settings.kafka.extra == {"security.protocol": "SSL"}, "the original was changed"


def test_a_fetch_wait_of_zero_changes_nothing() -> None:
    settings = Settings(labeling=LabelingSettings(fetch_wait_ms=0))
    assert batching(settings) is settings


def test_labeling_waits_its_own_time_whatever_the_kafka_wait() -> None:
    for kafka_wait_ms in (10, 500):
        settings = Settings(kafka=KafkaSettings(fetch_wait_max_ms=kafka_wait_ms))
        assert batching(settings).kafka.fetch_wait_max_ms == settings.labeling.fetch_wait_ms


def test_fetch_min_bytes_set_by_the_operator_wins() -> None:
    settings = Settings(kafka=KafkaSettings(extra={"fetch.min.bytes": "1"}))

    assert batching(settings).kafka.extra == {"fetch.min.bytes": "1"}
