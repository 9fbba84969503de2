"""End-to-end latency: a raw event produced → its prediction received, through ingest and serving.

Raw events (10 numeric features, checked by a declared feature schema) are offered at fixed
rates for a fixed time by a paced producer (bench/pacing.py) with Eddy's client settings; a
reader in the same process notes when each event's prediction arrives, so a latency is two
readings of one clock. The baseline is the same paced stream through two chained bare
confluent-kafka relays (raw → features → predictions), each a competent at-least-once loop:
wait for the first message, take the rest already fetched, decode the JSON, add a field,
encode, produce, then flush and commit the batch. The relays use the same librdkafka latency
settings as Eddy (``fetch.wait.max.ms``, ``linger.ms``), so the ratio is Eddy's own overhead.
Each rate runs on fresh servers, topics and processes, for both.

A rate is *held* when the backlog (events sent but not yet predicted) stays bounded: at every
10 ms step of the last second of sending it is at most half a second's worth of events
(0.5 x rate), and every prediction arrives within 2 s after the last event was sent. An event
whose prediction never came counts in the percentiles as arriving at that 2 s deadline.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from bench.harness import Context, Figure, median_figure
from bench.pacing import ArrivalClock, Trace, at_rate, percentile, send_paced
from bench.scenarios.serving_throughput import FEATURES, publish_model, synthetic_rows
from eddy.client import EddyClient, PredictionTimeoutError
from schemas import RawEvent
from services.core.embedded import spawn_child, stop_child
from services.core.kafka import make_producer
from services.core.settings import Settings
from services.core.topics import TopicRole, Topics

SCENARIO = "latency"
#: Offered rates (events/s), lowest first.
RATES_QUICK = (500, 2_000)
RATES_FULL = (500, 2_000, 5_000, 10_000)
#: The rate the p99 target is judged at, and the target.
TARGET_RATE = 2_000
TARGET_P99_MS = 25.0
#: Every prediction must arrive this long after the last event was sent for a rate to hold.
DRAIN_S = 2.0
#: A held rate's backlog in the last second of sending is at most this many seconds of events.
BACKLOG_LIMIT_S = 0.5
QUANTILES = (50, 95, 99)


@dataclass
class RateResult:
    """What one offered rate gave on one pipeline."""

    rate: int
    quantiles_ms: dict[int, float]
    held: bool


def feature_schema_file(workdir: Path) -> Path:
    """A feature schema (TOML) for the 10 synthetic float features, written once."""
    path = workdir / "latency-features.toml"
    if not path.exists():
        lines = ['name = "bench"', 'description = "10 synthetic floats (bench)."', ""]
        for name in FEATURES:
            lines += [f"[features.{name}]", 'type = "float"', ""]
        path.write_text("\n".join(lines), encoding="utf-8")
    return path


def raw_events(count: int, tag: str) -> tuple[list[str], list[tuple[bytes | None, bytes]]]:
    """``count`` serialised raw events (ids ``{tag}-{i}``): their ids and (key, value) pairs."""
    rows = synthetic_rows(min(count, 2_000), seed=3)
    now = datetime.now(UTC)
    ids: list[str] = []
    messages: list[tuple[bytes | None, bytes]] = []
    for i in range(count):
        event = RawEvent(
            event_id=f"{tag}-{i}",
            entity_id=f"e{i % 100}",
            ts=now,
            features=rows[i % len(rows)][0],
        )
        ids.append(event.event_id)
        messages.append((event.entity_id.encode(), event.model_dump_json().encode()))
    return ids, messages


def held(trace: Trace) -> bool:
    """The module docstring's rule: bounded backlog while sending, all answered soon after."""
    last = trace.sent[-1]
    if any(a is None or a > last + DRAIN_S for a in trace.arrived):
        return False
    return trace.max_backlog(last - 1.0, last) <= BACKLOG_LIMIT_S * trace.rate


class Pipeline:
    """Raw events in, predictions out: the paced producer and the arrival clock of one run.

    ``watched`` is the topic whose arrivals are timed: ``raw`` itself times one hop through the
    broker alone.
    """

    def __init__(self, settings: Settings, watched: TopicRole = "predictions") -> None:
        self.settings = settings
        topics = Topics(settings.topic_prefix)
        self.raw_topic = topics("raw")
        self.producer = make_producer(settings)
        self.clock = ArrivalClock(settings, [topics(watched)])
        self.clock.start()

    def warm_up(self, tag: str, timeout_s: float = 60.0) -> None:
        """Until one event comes through (every consumer group joined), then a short stream."""
        deadline = time.monotonic() + timeout_s
        sent: list[str] = []
        while not any(e in self.clock.arrivals for e in sent):
            if time.monotonic() > deadline:
                raise RuntimeError(f"no prediction came through within {timeout_s:.0f} s")
            ids, messages = raw_events(1, f"{tag}-probe{len(sent)}")
            self.producer.produce(self.raw_topic, messages[0][1], messages[0][0])
            self.producer.flush(5)
            sent += ids
            time.sleep(0.1)
        ids, messages = raw_events(400, f"{tag}-warm")
        send_paced(self.producer, at_rate(400, self.raw_topic, messages))
        if not self.clock.wait_for(ids, 10):
            raise RuntimeError("the warm-up stream was not predicted within 10 s")

    def offer(self, rate: int, duration_s: float, tag: str) -> RateResult:
        """Offer ``rate`` events/s for ``duration_s``; latencies and whether it held."""
        ids, messages = raw_events(int(rate * duration_s), tag)
        sent = send_paced(self.producer, at_rate(rate, self.raw_topic, messages))
        self.clock.wait_for(ids, sent[-1] + DRAIN_S - time.monotonic())
        arrivals = self.clock.arrivals
        trace = Trace(rate, sent, [arrivals.get(e) for e in ids])
        latencies = trace.latencies_ms(missing_at=sent[-1] + DRAIN_S)
        return RateResult(rate, {q: percentile(latencies, q) for q in QUANTILES}, held(trace))

    def close(self) -> None:
        """Stop the clock and the producer."""
        self.clock.close()
        self.producer.flush(10)


def _offer_one(
    settings: Settings, rate: int, duration_s: float, watched: TopicRole = "predictions"
) -> RateResult:
    pipeline = Pipeline(settings, watched)
    try:
        pipeline.warm_up("w")
        return pipeline.offer(rate, duration_s, f"r{rate}")
    finally:
        pipeline.close()


def _wait_until_serving(settings: Settings, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    with EddyClient(settings) as client:
        while True:
            try:
                client.predict(dict.fromkeys(FEATURES, 5.0), timeout_s=2.0)
                return
            except PredictionTimeoutError:
                if time.monotonic() > deadline:
                    raise


def eddy_run(ctx: Context, rates: tuple[int, ...], duration_s: float) -> list[RateResult]:
    """Every rate through ingest and serving, each on fresh servers, topics, model and processes.

    Fresh for each rate because the embedded broker keeps everything and slows as it fills
    (``Context.own_servers``): each rate would also pay for the events of every rate before it.
    """
    schema = str(feature_schema_file(ctx.workdir))
    results = []
    for rate in rates:
        with ctx.own_servers():
            settings = ctx.settings()
            publish_model(settings)
            with ctx.services(settings, "ingest", "serving", EDDY_INGEST__FEATURE_SCHEMA=schema):
                _wait_until_serving(settings)
                results.append(_offer_one(settings, rate, duration_s))
    return results


def baseline_run(ctx: Context, rates: tuple[int, ...], duration_s: float) -> list[RateResult]:
    """Every rate through two chained bare relays, each on fresh servers, topics and processes."""
    results = []
    for rate in rates:
        with ctx.own_servers():
            settings = ctx.settings()
            topics = Topics(settings.topic_prefix)
            with (
                _relay(ctx, settings, topics("raw"), topics("features"), "ingested"),
                _relay(ctx, settings, topics("features"), topics("predictions"), "predicted"),
            ):
                results.append(_offer_one(settings, rate, duration_s))
    return results


def hop_run(ctx: Context, rates: tuple[int, ...], duration_s: float) -> list[RateResult]:
    """Every rate produced and read back with no process between, each on fresh servers.

    The floor a broker puts under every hop: a prediction is three such hops (raw → ingest →
    serving → its reader).
    """
    results = []
    for rate in rates:
        with ctx.own_servers():
            results.append(_offer_one(ctx.settings(), rate, duration_s, watched="raw"))
    return results


@contextmanager
def _relay(ctx: Context, settings: Settings, source: str, sink: str, mark: str) -> Iterator[None]:
    kafka = settings.kafka
    code = (
        "from bench.scenarios.latency import bare_relay; "
        f"bare_relay({settings.kafka_bootstrap!r}, {source!r}, {sink!r}, {mark!r}, "
        f"{kafka.fetch_wait_max_ms}, {kafka.linger_ms})"
    )
    process = spawn_child([sys.executable, "-c", code], ctx.workdir / f"relay-{mark}.log")
    try:
        yield
    finally:
        stop_child(process)


def bare_relay(
    bootstrap: str, source: str, sink: str, mark: str, fetch_wait_max_ms: int, linger_ms: int
) -> None:
    """The baseline hop: at-least-once relay of JSON events, one field added, until SIGTERM."""
    import uuid

    from confluent_kafka import Consumer, Producer

    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bare-relay-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 3000,
            "heartbeat.interval.ms": 600,
            "fetch.wait.max.ms": fetch_wait_max_ms,
        }
    )
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": linger_ms,
            "acks": "all",
            "enable.idempotence": True,
        }
    )
    consumer.subscribe([source])
    while not stopping:
        first = consumer.poll(0.2)
        if first is None:
            continue
        for message in [first, *consumer.consume(499, 0)]:
            if message.error() is not None:
                continue
            event = json.loads(message.value() or b"{}")
            event[mark] = True
            producer.produce(sink, json.dumps(event).encode(), message.key())
        producer.flush()
        consumer.commit(asynchronous=False)
    consumer.close()


def run(ctx: Context) -> list[Figure]:
    """Median p50/p95/p99 per rate and the highest rate held, for Eddy and the bare relays.

    Beside them, one hop's p50 and p99 with nothing between producer and reader.
    """
    rates = RATES_QUICK if ctx.quick else RATES_FULL
    duration_s = 3.0 if ctx.quick else 8.0
    eddy: list[list[RateResult]] = []
    bare: list[list[RateResult]] = []
    hop: list[list[RateResult]] = []
    for i in range(ctx.repeats):
        hop.append(hop_run(ctx, rates, duration_s))
        bare.append(baseline_run(ctx, rates, duration_s))
        eddy.append(eddy_run(ctx, rates, duration_s))
        ctx.progress(
            f"   run {i + 1}: "
            + "; ".join(
                _describe(e, b, h) for e, b, h in zip(eddy[-1], bare[-1], hop[-1], strict=True)
            )
        )
    figures = []
    for k, rate in enumerate(rates):
        for q in QUANTILES:
            judged = q == 99 and rate == TARGET_RATE
            figures.append(
                median_figure(
                    SCENARIO,
                    f"p{q} raw event → prediction at {rate:,} ev/s",
                    "ms",
                    [run[k].quantiles_ms[q] for run in eddy],
                    [run[k].quantiles_ms[q] for run in bare],
                    target=f"<= {TARGET_P99_MS:.0f} ms" if judged else "",
                    met=(lambda v, _b: v <= TARGET_P99_MS) if judged else None,
                    note="baseline: two chained bare confluent-kafka relays",
                )
            )
        for q in (50, 99):
            figures.append(
                median_figure(
                    SCENARIO,
                    f"p{q} one hop, produced → read back, at {rate:,} ev/s",
                    "ms",
                    [run[k].quantiles_ms[q] for run in hop],
                    note="no process between: the broker's floor under each of a "
                    "prediction's three hops",
                )
            )
    figures.append(
        median_figure(
            SCENARIO,
            f"highest rate held of {', '.join(f'{r:,}' for r in rates)} ev/s",
            "ev/s",
            [_highest_held(run) for run in eddy],
            [_highest_held(run) for run in bare],
            note=f"held: backlog <= {BACKLOG_LIMIT_S} s of events, all predicted "
            f"within {DRAIN_S:.0f} s",
        )
    )
    return figures


def _highest_held(results: list[RateResult]) -> float:
    return float(max((r.rate for r in results if r.held), default=0))


def _describe(eddy: RateResult, bare: RateResult, hop: RateResult) -> str:
    def one(r: RateResult) -> str:
        held_mark = "" if r.held else " (not held)"
        return f"p50 {r.quantiles_ms[50]:.1f} p99 {r.quantiles_ms[99]:.1f} ms{held_mark}"

    return f"{eddy.rate:,}/s eddy {one(eddy)}, bare {one(bare)}, one hop {one(hop)}"
