"""Topic roles resolved to broker names, with the tenant prefix, from ``infra/topics.toml``."""

from __future__ import annotations

from typing import Any

import pytest

from services.core.exceptions import ConfigurationError
from services.core.kafka import partitions_of
from services.core.settings import KafkaSettings, Settings
from services.core.topics import TopicRole, Topics, declared_topics


def test_role_resolves_to_its_declared_name() -> None:
    topics = Topics()

    assert topics("raw") == "events.raw"
    assert topics("dlq") == "events.dlq"
    assert topics("training_examples") == "training.examples"


def test_prefix_is_prepended_to_every_topic() -> None:
    topics = Topics("tenant-a.")

    assert topics("features") == "tenant-a.features"
    assert all(name.startswith("tenant-a.") for name, _ in topics.all())


def test_consumer_group_is_named_after_the_service_with_the_prefix() -> None:
    assert Topics().group("ingest") == "eddy-ingest"
    assert Topics("test-7.").group("serving") == "test-7.eddy-serving"


def test_all_lists_every_declared_topic_once() -> None:
    names = [name for name, _ in Topics("p.").all()]

    assert len(names) == len(set(names)) == len(declared_topics())
    assert "p.models" in names


def test_unknown_role_raises_configuration_error_naming_it() -> None:
    role: Any = "clicks"

    with pytest.raises(ConfigurationError, match="'clicks' is not declared"):
        Topics()(role)


def test_declared_roles_are_exactly_the_topic_role_literal() -> None:
    assert set(declared_topics()) == set(TopicRole.__args__)  # type: ignore[attr-defined]


def test_models_and_drift_topics_keep_their_history() -> None:
    specs = declared_topics()

    assert specs["models"].partitions == 1
    assert specs["models"].config["retention.ms"] == "-1"
    assert specs["drift"].config["retention.ms"] == "-1"


@pytest.mark.parametrize("role", sorted(declared_topics()))
def test_every_topic_has_partitions_and_string_configs(role: TopicRole) -> None:
    spec = declared_topics()[role]

    assert spec.role == role
    assert spec.partitions >= 1
    assert all(isinstance(v, str) for v in spec.config.values())


def test_topics_get_their_declared_partitions_unless_a_count_is_set() -> None:
    features = declared_topics()["features"]
    assert partitions_of(features, Settings()) == features.partitions == 3
    one_each = Settings(kafka=KafkaSettings(topic_partitions=1))
    assert partitions_of(features, one_each) == 1
