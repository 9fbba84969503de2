"""Topics are declared once in infra/topics.toml and created by `eddy topics create`."""

from __future__ import annotations

from services.core.kafka import create_topics, list_topics, partitions_of
from services.core.settings import Settings
from services.core.topics import Topics


def test_every_declared_topic_exists_with_its_partition_count(settings: Settings) -> None:
    on_broker = list_topics(settings)
    for name, spec in Topics(settings.topic_prefix).all():
        assert on_broker.get(name) == partitions_of(spec, settings), name


def test_creating_topics_again_creates_nothing(settings: Settings) -> None:
    created, existing = create_topics(settings)
    assert created == []
    assert sorted(existing) == sorted(name for name, _ in Topics(settings.topic_prefix).all())
