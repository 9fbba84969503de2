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


def test_a_fetch_wait_no_longer_than_the_kafka_one_changes_nothing() -> None:
    settings = Settings(kafka=KafkaSettings(fetch_wait_max_ms=50))
    for wait_ms in (0, 50):
        unchanged = settings.model_copy(
            update={"labeling": LabelingSettings(fetch_wait_ms=wait_ms)}
        )
        assert batching(unchanged) is unchanged


def test_fetch_min_bytes_set_by_the_operator_wins() -> None:
    settings = Settings(kafka=KafkaSettings(extra={"fetch.min.bytes": "1"}))

    assert batching(settings).kafka.extra == {"fetch.min.bytes": "1"}
