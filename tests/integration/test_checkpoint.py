"""Checkpoints of a service state in the real Redis: signed, tied to settings, saved once acked."""

from __future__ import annotations

import pickle
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from confluent_kafka import TopicPartition

from services.core.checkpoint import Checkpointing, CheckpointStore
from services.core.embedded import EmbeddedStack

KEY = b"k" * 32
#: Set when a hostile pickle is loaded: it must never be.
LOADED: list[str] = []


class Hostile:
    """Unpickling this runs code (here: a harmless note that it ran)."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (LOADED.append, ("hostile code ran",))


@pytest.fixture
def client(stack: EmbeddedStack) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(stack.redis_url or "")
    yield connection
    connection.close()


def store(
    client: redis.Redis, key: str, signing_key: bytes = KEY, fingerprint: str = "v1"
) -> CheckpointStore:
    return CheckpointStore(client, key, signing_key, fingerprint)


@pytest.fixture
def key() -> str:
    return f"test:checkpoint:{uuid.uuid4().hex}"


def test_a_saved_state_comes_back_with_the_positions_it_covers(
    client: redis.Redis, key: str
) -> None:
    store(client, key).save(
        pickle.dumps({"seen": [1, 2, 3]}), {("features", 0): 42, ("labels", 1): 7}
    )

    saved = store(client, key).load()

    assert saved is not None
    assert saved.state == {"seen": [1, 2, 3]}
    assert saved.positions == {("features", 0): 42, ("labels", 1): 7}


def test_no_checkpoint_yet_is_none(client: redis.Redis, key: str) -> None:
    assert store(client, key).load() is None


def test_a_state_swapped_for_a_hostile_pickle_is_ignored_without_being_loaded(
    client: redis.Redis, key: str
) -> None:
    store(client, key).save(pickle.dumps({"seen": []}), {("features", 0): 1})
    client.hset(key, "state", pickle.dumps(Hostile()))

    assert store(client, key).load() is None
    assert LOADED == []


def test_moved_positions_are_ignored_too(client: redis.Redis, key: str) -> None:
    store(client, key).save(pickle.dumps({"seen": []}), {("features", 0): 100})
    client.hset(key, "positions", b'[["features", 0, 0]]')

    assert store(client, key).load() is None


def test_a_checkpoint_signed_with_another_key_or_saved_under_other_settings_is_ignored(
    client: redis.Redis, key: str
) -> None:
    store(client, key, signing_key=b"other" * 8).save(pickle.dumps(1), {})
    assert store(client, key).load() is None
    store(client, key, fingerprint="v0").save(pickle.dumps(1), {})
    assert store(client, key).load() is None
    assert store(client, key, fingerprint="v0").load() is not None


@pytest.mark.parametrize(
    "fields",
    [
        {"state": b"\x80\x05junk"},
        {"state": b"", "positions": b"not json", "fingerprint": b"v1", "signature": b"00"},
        {"signature": "é".encode(), "fingerprint": b"v1"},
    ],
)
def test_a_partial_or_garbled_checkpoint_is_ignored(
    client: redis.Redis, key: str, fields: dict[str, bytes]
) -> None:
    client.hset(key, mapping=fields)  # type: ignore[arg-type]

    assert store(client, key).load() is None


def test_a_signed_state_this_code_cannot_read_is_ignored(client: redis.Redis, key: str) -> None:
    store(client, key).save(b"\x80\x05not a pickle", {})

    assert store(client, key).load() is None


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_snapshot_is_saved_only_once_its_batch_is_acknowledged(
    client: redis.Redis, key: str
) -> None:
    clock, state = Clock(), {"count": 0}
    saver = Checkpointing(store(client, key), lambda: dict(state), 10.0, clock=clock)
    state["count"] = 1
    clock.now = 11.0

    effects = saver.after_batch({("features", 0): 5})
    state["count"] = 2  # what comes after the batch is not in its snapshot
    assert store(client, key).load() is None, "saved before the broker acknowledged the batch"
    for effect in effects:
        effect()

    saved = store(client, key).load()
    assert saved is not None
    assert saved.state == {"count": 1} and saved.positions == {("features", 0): 5}


def test_snapshots_come_at_most_every_interval_and_a_tick_saves_the_quiet_tail(
    client: redis.Redis, key: str
) -> None:
    clock, state = Clock(), {"count": 0}
    saver = Checkpointing(store(client, key), lambda: dict(state), 10.0, clock=clock)

    clock.now = 5.0
    assert saver.after_batch({("features", 0): 1}) == [], "not due yet"
    assert saver.tick().after_ack == [], "not due yet"
    state["count"] = 3
    clock.now = 12.0
    for effect in saver.tick().after_ack:  # the stream went quiet: the tick saves it
        effect()
    clock.now = 30.0
    assert saver.tick().after_ack == [], "nothing new since the last snapshot"

    saved = store(client, key).load()
    assert saved is not None and saved.state == {"count": 3}


def test_with_a_share_a_cheap_snapshot_comes_sooner_and_a_costly_one_later(
    client: redis.Redis, key: str
) -> None:
    clock, pause = Clock(), {"s": 0.0}

    def snapshot() -> dict[str, int]:
        time.sleep(pause["s"])  # what taking and pickling the state costs
        return {"count": 1}

    saver = Checkpointing(store(client, key), snapshot, 10.0, clock=clock, share=0.5, floor_s=0.1)
    assert saver.due_in() == 0.1  # nothing measured yet: the floor
    clock.now = 0.2
    assert saver.after_batch({("features", 0): 1}) != [], "cheap: due long before 10 s"
    pause["s"] = 0.1  # the next snapshot costs 0.1 s: at a share of 0.5, one every 0.2 s
    clock.now = 0.4
    assert saver.after_batch({("features", 0): 2}) != []
    assert saver.cost_s >= 0.1 and saver.due_in() >= 0.2
    clock.now = 0.55
    assert saver.after_batch({("features", 0): 3}) == [], "costly: not within twice its cost"
    clock.now = 0.4 + 10.0
    assert saver.after_batch({("features", 0): 4}) != [], "never later than the interval"


def test_a_restored_state_resumes_its_first_assignment_and_keeps_its_positions(
    client: redis.Redis, key: str
) -> None:
    clock = Clock()
    restored_at = {("features", 0): 40, ("predictions", 0): 30}
    saver = Checkpointing(store(client, key), dict, 1.0, positions=restored_at, clock=clock)

    first = saver.on_assign(
        [TopicPartition("features", 0, -1001), TopicPartition("labels", 0, -1001)]
    )
    later = saver.on_assign([TopicPartition("features", 0, -1001)])
    clock.now = 2.0
    for effect in saver.after_batch({("features", 0): 50}):
        effect()

    assert [(tp.topic, tp.offset) for tp in first] == [("features", 40), ("labels", -1001)]
    assert [tp.offset for tp in later] == [-1001], "a later assignment follows the commits"
    saved = store(client, key).load()
    assert saved is not None
    # predictions were not read since the restore, and the state has still seen them up to 30
    assert saved.positions == {("features", 0): 50, ("predictions", 0): 30}
