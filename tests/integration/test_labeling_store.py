"""labeling's Redis store on the real embedded Redis: batches spread over shards, one slot each."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable

import pytest
import redis
from confluent_kafka import Message
from redis.crc import key_slot

from schemas import FeatureEvent, Label
from schemas.predictions import prediction_json
from services.core.runtime import Runtime
from services.core.settings import Settings
from services.core.state import connect_redis
from services.core.stream import BatchHandler, Effects, StopSignal
from services.core.topics import Topics
from services.labeling.pending import CHANNEL_NAME, PendingEvent, PendingStore
from services.labeling.service import Labeling
from tests.integration.support import feature_events

#: Shards of the stores under test: every script call then covers several.
SHARDS = 8


def _served(event: FeatureEvent) -> bytes:
    """The champion's prediction of an event, as serving writes it."""
    return prediction_json(
        event.event_id, event.entity_id, event.ts, event.features, "default", 1, True, None
    )


def _store(
    settings: Settings,
    pending_ttl_s: float = 60.0,
    shards: int = SHARDS,
    clock: Callable[[], float] = time.time,
) -> PendingStore:
    return PendingStore(
        connect_redis(settings),
        f"{settings.topic_prefix}labeling",
        pending_ttl_s,
        clock=clock,
        shards=shards,
    )


def test_every_key_one_script_call_touches_is_in_the_slot_of_its_shards_due_set(
    settings: Settings,
) -> None:
    store = _store(settings)
    ids = [f"ev-{i}" for i in range(200)]
    store.add_predictions(dict.fromkeys(ids, b"{}"))
    store.park_labels(dict.fromkeys(ids[:50], b"{}"))
    keys = [k.decode() for k in store.client.scan_iter(f"eddy:{{{settings.topic_prefix}*")]

    slots: dict[int, set[int]] = defaultdict(set)
    for key in keys:
        shard = int(key.split("}", 1)[0].rsplit(":", 1)[1])
        slots[shard].add(key_slot(key.encode()))
    assert len(keys) == 200 + SHARDS, "one hash per event and one due set per shard"
    assert all(len(found) == 1 for found in slots.values()), "a shard's keys span slots"
    assert len({slot for found in slots.values() for slot in found}) == SHARDS
    assert all(store.prefixes[store.shard_of(i)] + "event:" + i in keys for i in ids)


def test_a_batch_over_every_shard_comes_back_whole_and_in_each_events_own_state(
    settings: Settings,
) -> None:
    store = _store(settings)
    ids = [f"ev-{i}" for i in range(100)]
    store.add_predictions({i: f"p{i}".encode() for i in ids[:60]})
    parked = store.park_labels({i: f"l{i}".encode() for i in ids[40:]})
    added = store.add_predictions({i: f"q{i}".encode() for i in ids})

    assert parked == {
        i: PendingEvent(prediction=f"p{i}".encode() if int(i[3:]) < 60 else None) for i in ids[40:]
    }, "a label reports the state before it was parked"
    for i in ids:
        n = int(i[3:])
        assert added[i] == PendingEvent(
            prediction=f"q{i}".encode(), early_label=f"l{i}".encode() if n >= 60 else None
        ), "a prediction stored again replaces the one before"


def test_a_label_for_an_event_whose_prediction_is_here_is_not_parked(settings: Settings) -> None:
    store = _store(settings)
    store.add_predictions({"ev-1": b"p"})
    first = store.park_labels({"ev-1": b"yes"})
    second = store.park_labels({"ev-1": b"no"})

    assert first == second == {"ev-1": PendingEvent(prediction=b"p")}
    assert store.lookup(["ev-1"])["ev-1"].early_label is None


def test_only_the_first_label_of_an_event_without_a_prediction_is_parked(
    settings: Settings,
) -> None:
    store = _store(settings)
    first = store.park_labels({"ev-1": b"yes"})
    second = store.park_labels({"ev-1": b"no"})

    assert first == {"ev-1": PendingEvent()}
    assert second == {"ev-1": PendingEvent(early_label=b"yes")}
    assert store.lookup(["ev-1"])["ev-1"] == PendingEvent(early_label=b"yes")


def test_a_hash_of_the_layout_before_predictions_carried_features_is_not_joined(
    settings: Settings,
) -> None:
    store = _store(settings)
    key = store.prefixes[store.shard_of("ev-old")] + "event:ev-old"
    store.client.hset(key, mapping={"features": b"f", "prediction": b'{"no": "features"}'})
    parked = store.park_labels({"ev-old": b"l"})

    assert parked == {"ev-old": PendingEvent()}, "an old prediction was taken for a served one"
    assert store.lookup(["ev-old"])["ev-old"] == PendingEvent(early_label=b"l")
    assert store.client.pttl(key) > 0, "the parked label has its safety TTL"


def test_a_closed_event_takes_no_more_predictions_or_labels(settings: Settings) -> None:
    store = _store(settings)
    store.add_predictions({"ev-1": b"p"})
    store.settle(joined=["ev-1"], tasked=[])
    after = (store.add_predictions({"ev-1": b"p"}), store.park_labels({"ev-1": b"l"}))

    assert all(states == {"ev-1": PendingEvent(labeled=True)} for states in after)
    assert store.lookup(["ev-1"]) == {"ev-1": PendingEvent(labeled=True)}
    assert store.pop_expired(10) == {}, "a joined event is no longer due"


def test_the_store_works_on_after_the_server_forgot_its_scripts(settings: Settings) -> None:
    store = _store(settings)
    store.park_labels({"ev-1": b"l"})
    store.client.script_flush()
    added = store.add_predictions({"ev-1": b"p"})

    assert added == {"ev-1": PendingEvent(prediction=b"p", early_label=b"l")}


def test_one_exchange_stores_predictions_then_parks_labels(settings: Settings) -> None:
    store = _store(settings)
    store.park_labels({"ev-early": b"l0"})
    predicted, parked = store.exchange(
        {"ev-early": b"p0", "ev-1": b"p1"}, {"ev-1": b"l1", "ev-2": b"l2"}
    )

    assert predicted == {
        "ev-early": PendingEvent(prediction=b"p0", early_label=b"l0"),
        "ev-1": PendingEvent(prediction=b"p1"),
    }
    assert parked == {
        "ev-1": PendingEvent(prediction=b"p1"),
        "ev-2": PendingEvent(),
    }, "labels see what the predictions of the same exchange stored"
    assert store.lookup(["ev-1", "ev-2"]) == {
        "ev-1": PendingEvent(prediction=b"p1"),
        "ev-2": PendingEvent(early_label=b"l2"),
    }


def test_an_exchange_after_the_server_forgot_its_scripts_still_runs_every_part(
    settings: Settings,
) -> None:
    store = _store(settings)
    store.client.script_flush()
    predicted, parked = store.exchange({"ev-1": b"p"}, {"ev-2": b"l"})

    assert predicted == {"ev-1": PendingEvent(prediction=b"p")}
    assert parked == {"ev-2": PendingEvent()}
    assert store.exchange({}, {}) == ({}, {})


def test_exchanges_and_settles_sent_ahead_run_in_order_whichever_result_is_read_first(
    settings: Settings,
) -> None:
    store = _store(settings)
    first = store.send_exchange({}, {"ev-1": b"l"})
    second = store.send_exchange({"ev-1": b"p"}, {"ev-2": b"l"})
    settled = store.send_settle(joined=["ev-1"], tasked=[])
    third = store.send_exchange({}, {"ev-1": b"l"})

    assert third.result() == ({}, {"ev-1": PendingEvent(labeled=True)}), "after the settle"
    settled()
    assert second.result() == (
        {"ev-1": PendingEvent(prediction=b"p", early_label=b"l")},
        {"ev-2": PendingEvent()},
    )
    assert first.result() == ({}, {"ev-1": PendingEvent()})


def test_an_exchange_whose_connection_broke_runs_again_through_the_client_then_reconnects(
    settings: Settings,
) -> None:
    store = _store(settings)
    store.exchange({}, {"ev-1": b"l"})  # opens the store's own connection
    own = [c for c in store.client.client_list() if c["name"] == CHANNEL_NAME]
    assert len(own) == 1, "the store's connection is named in CLIENT LIST"
    store.client.client_kill_filter(_id=own[0]["id"])  # as a restarting server would

    predicted, _parked = store.send_exchange({"ev-1": b"p"}, {}).result()
    assert predicted == {"ev-1": PendingEvent(prediction=b"p", early_label=b"l")}

    store.exchange({"ev-2": b"p"}, {})
    again = [c for c in store.client.client_list() if c["name"] == CHANNEL_NAME]
    assert len(again) == 1 and again[0]["id"] != own[0]["id"], "the store's connection is back"


def test_a_label_replayed_in_an_exchange_sent_before_its_join_was_marked_gives_no_example(
    settings: Settings,
) -> None:
    # the stream loop sends the next batch's exchange before the one before it is acknowledged;
    # that exchange may run before the marks, and its reply then shows the event still open
    labeling = Labeling(
        Runtime(
            "labeling",
            settings,
            Topics(settings.topic_prefix),
            connect_redis(settings),
            StopSignal(),
            0,
        )
    )
    event = feature_events(1)[0]
    labels = Topics(settings.topic_prefix)("labels")
    label = Label(event_id=event.event_id, label=True).model_dump_json().encode()

    def messages(value: bytes) -> list[Message]:
        return [Message(topic="t", partition=0, offset=0, key=b"k", value=value)]

    labeling.on_predictions(messages(_served(event)))
    first = labeling.submit({labels: messages(label)}).result()
    replayed = labeling.submit({labels: messages(label)})  # sent; its result is read later
    for effect in [*first.after_ack, *first.before_commit]:  # acknowledged: the join is marked
        effect()
    second = replayed.result()

    assert [json.loads(o.value)["event_id"] for o in first.outputs] == [event.event_id]
    assert second.outputs == [] and second.after_ack == []
    assert labeling.counts.totals == {"joined": 1, "duplicate": 1}
    assert labeling.joining == set()


def test_a_label_repeated_while_its_join_is_in_flight_gives_one_example(
    settings: Settings,
) -> None:
    event = feature_events(1)[0]
    label = Label(event_id=event.event_id, label=True).model_dump_json().encode()
    runtime = Runtime(
        "labeling",
        settings,
        Topics(settings.topic_prefix),
        connect_redis(settings),
        StopSignal(),
        0,
    )
    labeling = Labeling(runtime)

    def batch(handler: BatchHandler, value: bytes) -> Effects:
        return handler([Message(topic="t", partition=0, offset=0, key=b"k", value=value)])

    batch(labeling.on_predictions, _served(event))
    first = batch(labeling.on_labels, label)  # produced, not yet acknowledged
    second = batch(labeling.on_labels, label)
    for effect in [*first.after_ack, *second.after_ack, *first.before_commit]:
        effect()
    third = batch(labeling.on_labels, label)

    assert [json.loads(o.value)["event_id"] for o in first.outputs] == [event.event_id]
    assert second.outputs == [] and third.outputs == []
    assert labeling.counts.totals == {"joined": 1, "duplicate": 2}


def test_every_event_key_keeps_a_ttl_whatever_happened_to_it(settings: Settings) -> None:
    # the pending time passes on the store's clock, not Redis's: the TTLs (10 x the pending
    # time, 600 s here) must not run out while a loaded machine runs the test
    now = [time.time()]
    store = _store(settings, pending_ttl_s=60.0, clock=lambda: now[0])
    store.add_predictions({f"ev-{i}": b"p" for i in (0, 1, 3, 9)})
    store.park_labels({"ev-2": b"l", "ev-8": b"l"})
    store.settle(joined=["ev-0", "ev-1", "ev-7"], tasked=["ev-3", "ev-6"])  # ev-7 never stored
    now[0] += 61.0
    store.pop_expired(100)
    keys = list(store.client.scan_iter(f"eddy:{{{settings.topic_prefix}*:event:*"))
    ttls = {key.decode().rsplit(":", 1)[1]: store.client.pttl(key) for key in keys}

    assert set(ttls) == {"ev-0", "ev-1", "ev-2", "ev-3", "ev-7", "ev-8", "ev-9"}
    assert all(ttl > 0 for ttl in ttls.values()), ttls
    assert store.lookup(["ev-6"])["ev-6"] == PendingEvent(), "a task marks no unknown event"


def test_a_script_reply_that_leaves_out_events_is_an_error_not_events_silently_dropped(
    settings: Settings,
) -> None:
    store = _store(settings, shards=1)
    plan = store._add({"ev-1": b"{}", "ev-2": b"{}"})  # the plan of one exchange's first call

    with pytest.raises(redis.ResponseError, match="replied 4 values for 2 events"):
        store._states([plan], [[None, None, None, None]])  # one event's fields only
