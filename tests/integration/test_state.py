"""ingest's Redis state on the real embedded Redis: de-duplication with a TTL, the feature store."""

from __future__ import annotations

from services.core.settings import Settings
from services.core.state import Deduplicator, FeatureStore, connect_redis


def test_remembered_ids_are_seen_and_each_expires_after_the_ttl(settings: Settings) -> None:
    client = connect_redis(settings)
    dedup = Deduplicator(client, settings.topic_prefix + "spec", ttl_s=600)

    dedup.remember(f"e{i}" for i in range(1000))

    assert dedup.seen(["e0", "e999", "new"]) == {"e0", "e999"}
    ttls = {client.ttl(dedup.prefix + f"e{i}") for i in (0, 500, 999)}
    assert all(0 < ttl <= 600 for ttl in ttls), ttls


def test_remembering_nothing_and_seeing_nothing_are_harmless(settings: Settings) -> None:
    dedup = Deduplicator(connect_redis(settings), settings.topic_prefix + "empty", ttl_s=60)

    dedup.remember([])

    assert dedup.seen([]) == set()


def test_the_store_keeps_the_newest_features_of_each_entity(settings: Settings) -> None:
    store = FeatureStore(connect_redis(settings), settings.topic_prefix + "spec")

    store.put_many({"a": {"x": 1.0}, "b": {"x": 2.0, "c": "FR"}})
    store.put_many({"a": {"x": 3.0}})
    store.put_many({})

    assert (store.get("a"), store.get("b"), store.get("zzz")) == (
        {"x": 3.0},
        {"x": 2.0, "c": "FR"},
        None,
    )
