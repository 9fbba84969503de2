"""Hostile soak: 100,000 generated hostile messages through the running loop, good ones among them.

All five services run on fresh embedded servers with a signed model. A seeded generator writes
hostile messages of many kinds (below) to ``events.raw``, ``labels``, ``prediction.requests``
and ``models``, with one good raw event after every ``GOOD_EVERY`` of them, as fast as the
producer goes. The scenario then waits until ingest has consumed every raw message and every
good event is predicted, and reports: services alive, good events predicted (target: all), raw
messages that went to the dead-letter topic, and each service's resident memory before and
halfway and at the end (target: flat, growing by less than a quarter in the second half).

Kinds: random bytes, text that is not UTF-8, truncated JSON, JSON that is not an object, 30,000
levels of nesting, 70 KB messages, repeated keys, times in year 9999 and year 1, markup and
spaces in ids, wrong feature types, unknown features, NaN and 1e999 literals, 1e308 values,
missing fields, unknown envelope fields; labels of the wrong type, for unknown events, huge or
nested; prediction requests with bad features; model messages that are malformed or signed by
another key.
"""

from __future__ import annotations

import itertools
import json
import random
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from bench.harness import Context, Figure, scraped
from schemas import Prediction
from services.core import registry
from services.core.datasets import default_classifier, stream
from services.core.embedded import free_port
from services.core.kafka import make_consumer, make_producer
from services.core.settings import Settings
from services.core.supervisor import SERVICES, ServiceProcess, service_env
from services.core.topics import TopicRole, Topics

SCENARIO = "hostile soak"
HOSTILE_FULL, HOSTILE_QUICK = 100_000, 10_000
#: One good raw event after every this many hostile messages.
GOOD_EVERY = 20
#: A service may grow by this share of its resident memory and still count as flat.
FLAT_SHARE = 0.25

Message = tuple[TopicRole, bytes | None, bytes]


def _good_rows() -> Iterator[dict[str, Any]]:
    """Phishing rows, again and again (the deployment's feature schema)."""
    rows = [dict(features) for features, _label in stream("phishing")]
    return itertools.cycle(rows)


def _event(event_id: str, features: object, **changes: object) -> dict[str, object]:
    event: dict[str, object] = {
        "event_id": event_id,
        "entity_id": "soak",
        "ts": datetime.now(UTC).isoformat(),
        "features": features,
    }
    event.update(changes)
    return event


def hostile(rng: random.Random, n: int, row: dict[str, Any]) -> Message:
    """The ``n``-th hostile message: a kind chosen by ``rng``, built around a real row."""
    raw_json = json.dumps(_event(f"h-{n}", row)).encode()
    first = next(iter(row))
    kinds: list[Callable[[], Message]] = [
        lambda: ("raw", None, rng.randbytes(rng.randint(0, 200))),
        lambda: ("raw", None, b"\xff\xfe" + raw_json),
        lambda: ("raw", None, raw_json[: rng.randint(1, len(raw_json) - 1)]),
        lambda: ("raw", None, rng.choice([b"[]", b"42", b'"text"', b"null", b"true"])),
        lambda: ("raw", None, b"[" * 30_000 + b"]" * 30_000),
        lambda: ("raw", None, raw_json.replace(b'"event_id"', b'"event_id": "x", "event_id"', 1)),
        lambda: (
            "raw",
            None,
            json.dumps(_event(f"h-{n}", row, ts="9999-12-31T23:59:59Z")).encode(),
        ),
        lambda: (
            "raw",
            None,
            json.dumps(_event(f"h-{n}", row, ts="0001-01-01T00:00:00Z")).encode(),
        ),
        lambda: ("raw", None, json.dumps(_event(f"<script>{n}</script>", row)).encode()),
        lambda: ("raw", None, json.dumps(_event(f"h {n}", row)).encode()),
        lambda: ("raw", None, json.dumps(_event(f"h-{n}", {**row, first: "lots"})).encode()),
        lambda: ("raw", None, json.dumps(_event(f"h-{n}", {**row, "zz": 1})).encode()),
        lambda: ("raw", None, raw_json.replace(b": ", b': NaN, "x": ', 1)),
        lambda: ("raw", None, json.dumps(_event(f"h-{n}", {**row, first: 1e308})).encode()),
        lambda: ("raw", None, json.dumps({"event_id": f"h-{n}", "features": row}).encode()),
        lambda: ("raw", None, json.dumps(_event(f"h-{n}", row, extra={"a": [1, 2]})).encode()),
        lambda: (
            "raw",
            None,
            json.dumps(_event(f"h-{n}", {f"u{i}": i for i in range(300)})).encode(),
        ),
        lambda: ("labels", None, json.dumps({"event_id": f"g-{n}", "label": "UP"}).encode()),
        lambda: ("labels", None, json.dumps({"event_id": f"nobody-{n}", "label": True}).encode()),
        lambda: ("labels", None, json.dumps({"event_id": f"g-{n}", "label": {"a": [1]}}).encode()),
        lambda: ("labels", None, b'{"event_id": "g-1", "label": "' + b"x" * 5000 + b'"}'),
        lambda: (
            "prediction_requests",
            None,
            json.dumps({"request_id": f"r-{n}", "features": {**row, first: "x"}}).encode(),
        ),
        lambda: ("prediction_requests", None, rng.randbytes(rng.randint(1, 100))),
    ]
    if n % 5_000 == 0:  # rare: big messages and model records
        kinds = [
            lambda: ("raw", None, b'{"event_id": "' + b"a" * 70_000 + b'"}'),
            lambda: ("models", b"default", b'{"not": "a model version"}'),
            lambda: ("models", b"default", _forged_version(n)),
        ]
    return rng.choice(kinds)()


def _forged_version(n: int) -> bytes:
    """A well-formed version record signed by a key nobody trusts."""
    return json.dumps(
        {
            "model_name": "default",
            "version": 1_000 + n,
            "flavour": "river",
            "artifact_uri": "file:///etc/passwd",
            "sha256": "0" * 64,
            "key_id": "hmac:0123456789abcdef",
            "signature": "0" * 64,
            "trigger": "manual",
        }
    ).encode()


def _rss_mb(process: ServiceProcess) -> float:
    """Resident memory now (VmRSS), in MiB."""
    assert process.process is not None
    with open(f"/proc/{process.process.pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as page:
            return bool(page.status == 200)
    except (OSError, urllib.error.HTTPError):
        return False


def _drained(port: int, sent: int, timeout_s: float) -> None:
    """Wait until ingest has consumed ``sent`` raw messages (or the time is up)."""
    deadline = time.monotonic() + timeout_s
    while scraped(port, "eddy_messages_consumed_total", 'topic="') < sent:
        if time.monotonic() > deadline:
            return
        time.sleep(0.5)


def _predicted(settings: Settings, wanted: set[str], timeout_s: float) -> set[str]:
    """Which of ``wanted`` were predicted, reading ``predictions`` until all are or time is up."""
    consumer = make_consumer(settings, f"soak-{uuid.uuid4().hex}")
    consumer.subscribe([Topics(settings.topic_prefix)("predictions")])
    seen: set[str] = set()
    deadline = time.monotonic() + timeout_s
    try:
        while not wanted <= seen and time.monotonic() < deadline:
            for message in consumer.consume(1000, 0.5):
                if message.error() is None:
                    event_id = Prediction.model_validate_json(message.value() or b"").event_id
                    if event_id in wanted:
                        seen.add(event_id)
    finally:
        consumer.close()
    return seen


def run(ctx: Context) -> list[Figure]:
    """One soak on fresh servers: counts, liveness and memory."""
    count = HOSTILE_QUICK if ctx.quick else HOSTILE_FULL
    with ctx.own_servers():
        return _soak(ctx, count)


def _soak(ctx: Context, count: int) -> list[Figure]:
    settings = ctx.settings()
    model = default_classifier()
    for features, label in itertools.islice(stream("phishing"), 500):
        model.learn_one(features, label)
    registry.publish(settings, settings.model_name, registry.serialize_river(model))
    ports = {name: free_port() for name in SERVICES}
    processes = [
        ServiceProcess(
            name,
            {**service_env(settings), "EDDY_METRICS_PORT": str(ports[name])},
            ctx.workdir / f"soak-{name}-{uuid.uuid4().hex[:6]}.log",
        ).start()
        for name in SERVICES
    ]
    try:
        deadline = time.monotonic() + 120
        while not all(_ready(port) for port in ports.values()) and time.monotonic() < deadline:
            time.sleep(0.5)
        before = {p.name: _rss_mb(p) for p in processes}
        rng, rows = random.Random(7), _good_rows()
        producer = make_producer(settings, **{"linger.ms": 20})
        topics = Topics(settings.topic_prefix)
        good: set[str] = set()
        raw_sent = 0
        started = time.monotonic()
        halfway: dict[str, float] = {}
        for half in (range(count // 2), range(count // 2, count)):
            for n in half:
                role, key, value = hostile(rng, n, next(rows))
                raw_sent += role == "raw"
                _produce(producer, topics(role), key, value)
                if n % GOOD_EVERY == GOOD_EVERY - 1:
                    event_id = f"g-{n}"
                    good.add(event_id)
                    event = json.dumps(_event(event_id, next(rows))).encode()
                    _produce(producer, topics("raw"), b"soak", event)
                    raw_sent += 1
            producer.flush(120)
            _drained(ports["ingest"], raw_sent, timeout_s=600)
            ctx.progress(f"   {half.stop:,} hostile messages sent and consumed by ingest")
            if not halfway:  # warm: memory from here on must stay flat
                halfway = {p.name: _rss_mb(p) for p in processes if p.running}
        sent_s = time.monotonic() - started
        predicted = _predicted(settings, good, timeout_s=600)
        drained_s = time.monotonic() - started
        rejected = scraped(ports["ingest"], "eddy_rejected_total")
        alive = [p for p in processes if p.running]
        after = {p.name: _rss_mb(p) for p in alive}
        warm = {name: (before[name], rss) for name, rss in halfway.items()}
        ctx.progress(
            f"   {count:,} hostile sent in {sent_s:.0f} s, all handled after {drained_s:.0f} s; "
            f"{len(predicted):,}/{len(good):,} good predicted; {rejected:,.0f} of {raw_sent:,} "
            f"raw messages rejected by ingest; alive: {[p.name for p in alive]}"
        )
    finally:
        for process in reversed(processes):
            process.stop()
    figures = [
        Figure(
            SCENARIO,
            f"services alive after {count:,} hostile messages",
            len(alive),
            "services",
            baseline=len(processes),
            target="all",
            met=len(alive) == len(processes),
        ),
        Figure(
            SCENARIO,
            "good events among them predicted",
            len(predicted),
            "events",
            baseline=len(good),
            target="all",
            met=predicted == good,
            note=f"one good raw event after every {GOOD_EVERY} hostile messages",
        ),
        Figure(
            SCENARIO,
            "hostile raw messages ingest sent to the dead-letter topic",
            rejected,
            "messages",
            baseline=raw_sent - len(good),
            target="all",
            met=rejected == raw_sent - len(good),
            note="baseline: hostile raw messages sent; every kind above is one ingest refuses",
        ),
    ]
    for name, (start, middle) in warm.items():
        end = after.get(name)
        if end is None:
            continue
        figures.append(
            Figure(
                SCENARIO,
                f"resident memory of {name}: second half of the soak",
                end,
                "MB",
                baseline=middle,
                target=f"< {1 + FLAT_SHARE:.2f}x halfway",
                met=end < middle * (1 + FLAT_SHARE),
                note=f"VmRSS halfway and at the end; {start:.0f} MB before the soak",
            )
        )
    return figures


def _produce(producer: object, topic: str, key: bytes | None, value: bytes) -> None:
    while True:
        try:
            producer.produce(topic, value, key)  # type: ignore[attr-defined]
            return
        except BufferError:
            producer.poll(0.05)  # type: ignore[attr-defined]
