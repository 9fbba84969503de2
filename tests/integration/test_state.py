"""ingest's Redis state on the real embedded Redis: dedup, feature store, window histories."""

from __future__ import annotations

from services.core.aggregates import DerivedSpec, WindowPolicy, Windows
from services.core.settings import Settings
from services.core.state import Deduplicator, FeatureStore, WindowStore, connect_redis


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


def _windows(window: str = "1m") -> Windows:
    specs = {
        "n": DerivedSpec(agg="count", window=window),
        "mean": DerivedSpec(agg="mean", of="x", window=window),
    }
    return Windows(specs, WindowPolicy(lateness="10s"))


def _feed(store: WindowStore, windows: Windows, start: int, count: int) -> list[dict]:
    """Events 1 s apart for entities a and b, a batch of 10 at a time; each one's values."""
    out = []
    for first in range(start, start + count, 10):
        histories = store.get_many(["a", "b"])
        for i in range(first, first + 10):
            derived = windows.add(histories["ab"[i % 2]], float(i), f"e{i}", {"x": float(i)})
            out.append(derived.values)
        store.put_many(histories)
    return out


def test_histories_read_back_from_redis_give_what_memory_gave(settings: Settings) -> None:
    client, windows = connect_redis(settings), _windows()
    remembering = WindowStore(client, settings.topic_prefix + "w", windows, cached=10_000)
    reading = WindowStore(client, settings.topic_prefix + "w2", windows, cached=0)
    assert _feed(remembering, windows, 0, 300) == _feed(reading, windows, 0, 300)
    remembering.forget()  # as when partitions are assigned: Redis is read again
    assert _feed(remembering, windows, 300, 50) == _feed(reading, windows, 300, 50)


def test_a_history_list_is_rewritten_once_pruned_rows_make_up_half_of_it(
    settings: Settings,
) -> None:
    client, windows = connect_redis(settings), _windows()
    store = WindowStore(client, settings.topic_prefix + "w", windows, cached=10_000)
    _feed(store, windows, 0, 1000)
    kept = len(store.get_many(["a"])["a"].times)  # 70 s of a's events, one every 2 s
    assert kept == 36
    assert client.llen(store.prefix + "a") <= 2 * kept + 1  # the layout row and the rows
    assert 0 < client.pttl(store.prefix + "a") <= windows.expire_s * 1000


def test_a_history_kept_under_other_windows_starts_afresh(settings: Settings) -> None:
    client = connect_redis(settings)
    namespace = settings.topic_prefix + "w"
    before = WindowStore(client, namespace, _windows("1m"), cached=0)
    _feed(before, _windows("1m"), 0, 100)
    changed = _windows("5m")
    after = WindowStore(client, namespace, changed, cached=0)
    assert after.get_many(["a"])["a"].times == []
    assert _feed(after, changed, 100, 10)[0] == {"n": 1.0, "mean": 100.0}


def test_a_damaged_history_starts_afresh_instead_of_failing_every_event_of_its_entity(
    settings: Settings,
) -> None:
    client, windows = connect_redis(settings), _windows()
    store = WindowStore(client, settings.topic_prefix + "w", windows, cached=0)
    _feed(store, windows, 0, 20)
    for damage in (b"not json", b'["a", "b"]', b'[1.0, "e", "x", null, null]', b"[]"):
        client.rpush(store.prefix + "a", damage)
        assert store.get_many(["a"])["a"].times == []  # read as nothing, written afresh
        assert _feed(store, windows, 100, 10)[0] == {"n": 1.0, "mean": 100.0}
        assert store.get_many(["a"])["a"].times != []


def test_memory_holds_the_most_recently_used_histories_up_to_a_number_of_rows(
    settings: Settings,
) -> None:
    client, windows = connect_redis(settings), _windows()
    store = WindowStore(client, settings.topic_prefix + "w", windows, cached=50)
    _feed(store, windows, 0, 60)  # a and b, 30 rows each: only the last stored fits in 50
    assert list(store._cache) == ["b"] and store._cached_rows == 30
    assert (
        _feed(store, windows, 60, 10)[0]
        == _feed(
            WindowStore(client, settings.topic_prefix + "w3", windows, cached=0), windows, 0, 70
        )[60]
    )
