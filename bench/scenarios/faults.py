"""Faults: crashes, a stall, a Redis restart and a rebalance mid-stream, and what they cost.

All five services run on fresh embedded servers with a signed model, while raw events stream
at a steady rate with each label sent ``LABEL_DELAY`` events later. In turn: each service is
SIGKILLed and started again 3 s later; serving is SIGSTOPped for longer than its session
timeout, then continued; Redis is killed and started again (its append-only file brings its
state back); a second ingest and serving join the groups and leave again (two rebalances).
The broker is not restarted: the embedded one keeps everything in memory, so a restart loses
every message by design (docs/operations.md#outages).

After the stream, until everything is drained, readers that de-duplicate nothing count what a
downstream consumer sees: events accepted and predicted (distinct), predictions lost,
duplicate predictions, labels joined, duplicate examples, versions published twice, and each
fault's recovery (from a service's restart, continuation or Redis's return to the service
consuming again). It runs twice: serving at-least-once (the default) and exactly-once
(``EDDY_SERVING__TRANSACTIONAL``, read with ``isolation.level=read_committed``). Targets: 0 lost,
0 duplicates visible downstream, recovery within twice the session timeout.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from bench.harness import Context, Figure, scraped
from services.core import registry
from services.core.datasets import default_classifier, stream
from services.core.embedded import free_port
from services.core.kafka import make_consumer, make_producer
from services.core.settings import Settings
from services.core.supervisor import SERVICES, ServiceProcess, service_env
from services.core.topics import TopicRole, Topics

SCENARIO = "faults"
#: Events a second, and how many events later each label follows.
RATE, LABEL_DELAY = 100, 100
#: Seconds of stream before the first fault, between faults, and a killed service stays down.
WARM_S, BETWEEN_S, DOWN_S = 10.0, 6.0, 3.0


class Counts:
    """What one topic's reader saw: messages per event id, from a thread that reads to the end."""

    def __init__(
        self, settings: Settings, role: TopicRole, key: Callable[[dict[str, Any]], str]
    ) -> None:
        self.seen: Counter[str] = Counter()
        #: per id, where each copy was (partition@offset) and what it said: what a repeat is
        self.copies: dict[str, list[str]] = {}
        self._key = key
        self._stop = threading.Event()
        self._consumer = make_consumer(
            settings,
            f"faults-{role}-{uuid.uuid4().hex[:8]}",
            **{"isolation.level": "read_committed"},
        )
        self._consumer.subscribe([Topics(settings.topic_prefix)(role)])
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            for message in self._consumer.consume(1000, 0.2):
                if message.error() is None:
                    payload = json.loads(message.value() or b"{}")
                    key = self._key(payload)
                    self.seen[key] += 1
                    self.copies.setdefault(key, []).append(
                        f"p{message.partition()}@{message.offset()} "
                        f"v{payload.get('model_version', payload.get('version', '?'))} "
                        f"{payload.get('served_at', '')}"
                    )

    @property
    def distinct(self) -> int:
        """Distinct ids seen."""
        return len(self.seen)

    @property
    def repeats(self) -> int:
        """Messages beyond the first per id."""
        return sum(self.seen.values()) - len(self.seen)

    def repeated(self, most: int = 3) -> str:
        """The first few repeated ids with each copy's place and content (empty: none)."""
        ids = [key for key, count in self.seen.items() if count > 1][:most]
        return "; ".join(f"{key}: {' | '.join(self.copies[key])}" for key in ids)

    def close(self) -> None:
        """Stop reading."""
        self._stop.set()
        self._thread.join(10)
        self._consumer.close()


class Loop:
    """The five services, each restartable, with a metrics port of its own."""

    def __init__(self, ctx: Context, settings: Settings, env: dict[str, str]) -> None:
        self.ctx, self.settings, self.env = ctx, settings, env
        self.processes: dict[str, ServiceProcess] = {}
        self.ports: dict[str, int] = {}
        self.extra: list[ServiceProcess] = []
        for name in SERVICES:
            self.start(name)

    def start(self, name: str) -> ServiceProcess:
        """Start ``name`` (again) on a fresh metrics port."""
        self.ports[name] = free_port()
        process = ServiceProcess(
            name,
            {**self.env, "EDDY_METRICS_PORT": str(self.ports[name])},
            self.ctx.workdir / f"faults-{name}-{uuid.uuid4().hex[:6]}.log",
        ).start()
        self.processes[name] = process
        return process

    def consumed(self, name: str) -> float:
        """Messages ``name`` consumed since it started (0 while its page does not answer)."""
        return scraped(self.ports[name], "eddy_messages_consumed_total")

    def consuming_again(self, name: str, since: float, timeout_s: float = 60.0) -> float:
        """Seconds until ``name`` consumed more than ``since`` (the timeout if it never did)."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if self.consumed(name) > since:
                return time.monotonic() - started
            time.sleep(0.05)
        return timeout_s

    def stop(self) -> None:
        """Stop every service, the extra instances first."""
        for process in [*self.extra, *reversed(self.processes.values())]:
            process.stop()


class Stream:
    """Raw events at ``RATE`` a second, each label ``LABEL_DELAY`` events after its event."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sent = 0
        self.labels = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Stream:
        """Start streaming."""
        self._thread.start()
        return self

    def _run(self) -> None:
        topics = Topics(self.settings.topic_prefix)
        producer = make_producer(self.settings)
        rows = itertools.cycle(list(stream("phishing")))
        pending: list[tuple[str, bool]] = []
        started = time.monotonic()
        for n in itertools.count():
            if self._stop.is_set():
                break
            features, label = next(rows)
            event_id = f"f-{n}"
            entity = f"e-{n % 50}"
            event = {
                "event_id": event_id,
                "entity_id": entity,
                "ts": datetime.now(UTC).isoformat(),
                "features": features,
            }
            producer.produce(topics("raw"), json.dumps(event).encode(), entity)
            self.sent += 1
            pending.append((event_id, bool(label)))
            if len(pending) > LABEL_DELAY:
                labelled, value = pending.pop(0)
                body = json.dumps({"event_id": labelled, "label": value}).encode()
                producer.produce(topics("labels"), body, labelled.encode())
                self.labels += 1
            producer.poll(0)
            pause = started + (n + 1) / RATE - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        for labelled, value in pending:  # the last labels come too, as late as the rest
            body = json.dumps({"event_id": labelled, "label": value}).encode()
            producer.produce(topics("labels"), body, labelled.encode())
            self.labels += 1
        producer.flush(60)

    def stop(self) -> None:
        """Stop streaming and send the labels still owed."""
        self._stop.set()
        self._thread.join(120)


def run(ctx: Context) -> list[Figure]:
    """The faults in turn, serving at-least-once and then exactly-once."""
    figures: list[Figure] = []
    for mode, transactional in (("at-least-once", False), ("exactly-once", True)):
        with ctx.own_servers():
            figures += _faults(ctx, mode, transactional)
    return figures


def _faults(ctx: Context, mode: str, transactional: bool) -> list[Figure]:
    settings = ctx.settings()
    model = default_classifier()
    for features, label in itertools.islice(stream("phishing"), 500):
        model.learn_one(features, label)
    registry.publish(settings, settings.model_name, registry.serialize_river(model))
    env = service_env(settings)
    if transactional:
        env["EDDY_SERVING__TRANSACTIONAL"] = "true"
    session_s = settings.kafka.session_timeout_ms / 1000
    readers = {
        "features": Counts(settings, "features", lambda m: m.get("event_id", "")),
        "predictions": Counts(settings, "predictions", lambda m: m.get("event_id", "")),
        "examples": Counts(settings, "training_examples", lambda m: m.get("event_id", "")),
        "models": Counts(settings, "models", lambda m: str(m.get("version", ""))),
    }
    loop = Loop(ctx, settings, env)
    source = Stream(settings)
    recovery: dict[str, float] = {}
    try:
        source.start()
        time.sleep(WARM_S)
        for name in SERVICES:
            loop.processes[name].kill()
            time.sleep(DOWN_S)
            loop.start(name)
            recovery[f"SIGKILL of {name}"] = loop.consuming_again(name, 0)
            ctx.progress(
                f"   {mode}: {name} killed, back in {recovery[f'SIGKILL of {name}']:.1f} s"
            )
            time.sleep(BETWEEN_S)

        serving = loop.processes["serving"]
        assert serving.process is not None
        before = loop.consumed("serving")
        os.kill(serving.process.pid, signal.SIGSTOP)
        time.sleep(2 * session_s + 2)
        os.kill(serving.process.pid, signal.SIGCONT)
        recovery["SIGSTOP of serving"] = loop.consuming_again("serving", before)
        ctx.progress(f"   {mode}: serving stalled, back in {recovery['SIGSTOP of serving']:.1f} s")
        time.sleep(BETWEEN_S)

        if ctx.stack is not None:
            ctx.stack.crash("redis")  # SIGKILL: nothing more saved
            time.sleep(DOWN_S)
            before = loop.consumed("ingest")
            ctx.stack.restart_redis()
            recovery["Redis restart"] = loop.consuming_again("ingest", before)
            ctx.progress(
                f"   {mode}: Redis restarted, ingest back in {recovery['Redis restart']:.1f} s"
            )
            time.sleep(BETWEEN_S)

        # a second instance of its own name: under the first's it would take over (fence it)
        extra_env = {**env, "EDDY_METRICS_PORT": "0", "EDDY_SERVING__INSTANCE": "second"}
        loop.extra = [
            ServiceProcess(name, extra_env, ctx.workdir / f"faults-{name}-2.log").start()
            for name in ("ingest", "serving")
        ]
        time.sleep(BETWEEN_S)
        for process in loop.extra:
            process.stop()
        ctx.progress(f"   {mode}: a second ingest and serving joined and left")
        time.sleep(BETWEEN_S)
    finally:
        source.stop()
        sent = {f"f-{n}" for n in range(source.sent)}
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not (
            sent <= set(readers["predictions"].seen)
            and readers["examples"].distinct >= source.labels
        ):
            time.sleep(0.5)
        time.sleep(3)  # repeats arrive after the last first copy, if at all
        alive = [name for name, process in loop.processes.items() if process.running]
        loop.stop()
        for reader in readers.values():
            reader.close()
    return _figures(mode, source, sent, readers, recovery, alive, session_s)


def _figures(
    mode: str,
    source: Stream,
    sent: set[str],
    readers: dict[str, Counts],
    recovery: dict[str, float],
    alive: list[str],
    session_s: float,
) -> list[Figure]:
    predictions, examples = readers["predictions"], readers["examples"]
    lost = len(sent - set(predictions.seen))
    versions_twice = sum(1 for count in readers["models"].seen.values() if count > 1)
    note = (
        f"{source.sent:,} events at {RATE}/s, labels {LABEL_DELAY} events late; "
        f"{readers['features'].distinct:,} accepted ({readers['features'].repeats} repeats), "
        f"services alive at the end: {len(alive)} of {len(SERVICES)}"
    )
    slowest = max(recovery, key=lambda k: recovery[k]) if recovery else ""
    return [
        Figure(SCENARIO, f"{mode}: events lost (sent, never predicted)", lost, "events",
               baseline=source.sent, target="0", met=lost == 0, note=note),
        Figure(SCENARIO, f"{mode}: duplicate predictions a downstream consumer sees",
               predictions.repeats, "messages", baseline=predictions.distinct, target="0",
               met=predictions.repeats == 0,
               note="read_committed reader, no de-duplication; consumers may drop repeats by "
               "event_id" + (f"; first repeats: {predictions.repeated()}"
                             if predictions.repeats else "")),
        Figure(SCENARIO, f"{mode}: labels joined", examples.distinct, "examples",
               baseline=source.labels, target="all", met=examples.distinct == source.labels,
               note=f"{examples.repeats} duplicate examples"),
        Figure(SCENARIO, f"{mode}: versions published twice", versions_twice, "versions",
               baseline=len(readers["models"].seen), target="0", met=versions_twice == 0),
        Figure(SCENARIO, f"{mode}: slowest recovery ({slowest})", recovery.get(slowest, 0.0),
               "s", baseline=2 * session_s, target="<= 2x session timeout",
               met=max(recovery.values(), default=0.0) <= 2 * session_s,
               note="; ".join(f"{k} {v:.1f} s" for k, v in recovery.items())),
    ]  # fmt: skip
