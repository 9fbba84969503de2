"""The loop keeps up: the highest input rate all five services sustain at once, and the slowest.

The five services run as in ``eddy demo`` (separate processes, SEA feature schema, stationary
SEA stream, versions every ``EDDY_TRAINING__PUBLISH_EVERY`` examples); this process plays
producer and label source, batching as such a source would (``SOURCE_LINGER_MS``). It offers raw
events on a ramp of rates, each step a trial of its own: fresh servers (on the embedded stack),
topics and services, a slow warm-up stream, then the step's rate for a fixed time. (On one set
of topics for the whole ramp, each step also paid for the events of the steps before it, as the
embedded broker's fetches cost more the longer a topic: three ramps from 250 ev/s held
1,500-2,000 ev/s, where ten from 1,500 held 3,000 or 4,000 in nine. On fresh topics but one
broker, its CPU still grew with what earlier steps left: ``Context.own_servers``.) Every event's
label follows it ``LABEL_DELAY_S`` later. Four times a second the bench reads each service's
consumer lag: the end offsets of its input topics minus the offsets its consumer group committed
(the admin API; a service's inputs are the topics it is declared to read plus any its group
committed on), the end offsets interpolated to the moment the committed ones were read. (Read
once a second, six points made the lag's slope too noisy: a service could fall behind at one
step and keep up at the next two.)

A service *keeps up* during a step when, over the step without its first second, the
least-squares slope of its lag is at most ``GROWTH_LIMIT`` of its input rate (messages/s that
arrived on its inputs in the window), or its lag never exceeded ``BACKLOG_LIMIT_S`` seconds of
that input. Its sustained rate is the highest step rate it kept up with, at that step and every
lower one; a service downstream of one that fell behind is credited instead with the event rate
that reached it (its input rate over its input messages per event in the warm-up) when that is
under 90% of the step's rate, and never with less than it held at a lower step (on a full
machine the producer may not offer the top step's rate at all). The loop's rate is the lowest of
the five, and the slowest service the one with the lowest (ties: the steepest relative lag
growth where they fell behind). Serving's own sustained rate in the same run is the baseline, so
the ratio says whether any stage holds the loop below serving. A service that never fell behind
has the top of the ramp as a lower bound; where that is serving's, the target is not judged met.

The embedded broker may report a partition's end offset short by up to its last record batch;
a service past that end counts as no lag on the partition. Reading the lag must stay quick: an
earlier probe that read each partition's last batch to find the true end took up to 1.5 s per
reading under load (4 readings in a 7 s step at 1,500 ev/s, against 23-24 now).
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import OffsetSpec  # type: ignore[attr-defined]

from bench.harness import (
    Context,
    Figure,
    MachineLoad,
    describe_load,
    median_figure,
)
from bench.pacing import Scheduled, send_paced
from eddy.client import EddyClient, PredictionTimeoutError
from schemas import Label, RawEvent
from services.core.datasets import sea_with_drift
from services.core.kafka import make_admin, make_producer, partitions_of
from services.core.procstat import cpu_seconds, run_queue_seconds
from services.core.settings import Settings
from services.core.supervisor import SERVICES, ServiceProcess
from services.core.topics import TopicRole, Topics, declared_topics

SCENARIO = "loop capacity"
#: Offered raw events/s, one step each, lowest first; and how long each step lasts. The ramp must
#: go past serving's own rate, or that rate is only a lower bound and the target cannot be judged
#: (``serving_measured``): serving held 7,000, the old top, in every run of 2026-11-30 21:53, and
#: with the ramp to 12,000 it held 9,000, 9,000 and 10,000 (the run of 23:22).
RAMP_QUICK = (300, 600, 1_200, 2_400)
RAMP_FULL = (250, 500, 750, 1_000, 1_500, 2_000, *range(3_000, 10_001, 1_000), 12_000)
STEP_QUICK_S = 4.0
STEP_FULL_S = 7.0
#: Each event's label is sent this long after the event.
LABEL_DELAY_S = 0.5
#: Linger of this process's producers, which stand in for the event and label sources. With the
#: services' 5 ms, at 3,000 ev/s (6,000 messages/s) the producer's own thread took 0.19 of a
#: core and the broker 0.39-0.63; with 20 ms, 0.008 and 0.29-0.37 (one run each, per-thread CPU).
SOURCE_LINGER_MS = 20
#: Lag is read this often; a step's first second is not judged (the new rate settles in).
SAMPLE_S = 0.25
SETTLE_S = 1.0
#: The slow stream every service must have caught up with before the ramp starts.
WARM_UP_RATE = 100
WARM_UP_S = 2
#: Keeping up: lag growth at most this share of the input rate ...
GROWTH_LIMIT = 0.05
#: ... or a lag never above this many seconds of input.
BACKLOG_LIMIT_S = 0.5
#: A service that received less than this share of a step's rate is credited with what it got.
REACHED_FULLY = 0.9
#: Topics each service surely reads (more are added when its group commits on them).
INPUTS: dict[str, tuple[TopicRole, ...]] = {
    "ingest": ("raw",),
    "serving": ("features",),
    "labeling": ("predictions", "labels"),
    "training": ("training_examples",),
    "monitoring": ("predictions", "training_examples"),
}
WATCHED: tuple[TopicRole, ...] = (
    "raw",
    "features",
    "predictions",
    "labels",
    "training_examples",
    "drift",
    "prediction_requests",
)


@dataclass(frozen=True)
class LagSample:
    """One reading of a service's consumer group."""

    at: float
    lag: int
    end: int
    committed: int


@dataclass
class StepVerdict:
    """How one service did during one step."""

    kept_up: bool
    growth: float
    input_rate: float
    throughput: float


@dataclass
class LoopResult:
    """Per-service sustained rates of one run, and where each first fell behind."""

    sustained: dict[str, float]
    top_of_ramp: dict[str, bool]
    throughput_when_behind: dict[str, float] = field(default_factory=dict)
    growth_when_behind: dict[str, float] = field(default_factory=dict)
    #: Each step's CPU use per process (services, servers, this bench), in cores.
    cpu_by_step: list[dict[str, float]] = field(default_factory=list)
    #: Each step's time per process spent waiting for a CPU (run queue), in seconds per second.
    wait_by_step: list[dict[str, float]] = field(default_factory=list)
    #: Each step's whole-machine load: ``busy`` and ``stolen`` (by the host) cores.
    load_by_step: list[dict[str, float]] = field(default_factory=list)
    #: The first step (index) at which some service fell behind, if one did.
    first_behind_step: int | None = None

    @property
    def loop_rate(self) -> float:
        """The rate every service sustained."""
        return min(self.sustained.values())

    @property
    def slowest(self) -> str | None:
        """The service that fell behind first, if any did."""
        behind = [s for s in self.sustained if not self.top_of_ramp[s]]
        if not behind:
            return None
        return min(behind, key=lambda s: (self.sustained[s], -self.growth_when_behind.get(s, 0.0)))


class LagProbe:
    """Consumer lag of each service's group, read with the admin API."""

    def __init__(self, settings: Settings) -> None:
        self.admin = make_admin(settings)
        self.topics = Topics(settings.topic_prefix)
        specs = declared_topics()
        self.partitions = {
            role: [
                TopicPartition(self.topics(role), p)
                for p in range(partitions_of(specs[role], settings))
            ]
            for role in WATCHED
        }
        self.watched = {self.topics(role) for role in WATCHED}

    def sample(self) -> dict[str, LagSample]:
        """Service → its lag now.

        The committed offsets (all groups at once) are read between two readings of the end
        offsets, which are interpolated to that moment: under load one reading takes up to a
        few hundred ms, and read one after the other, that time would count as lag (in
        proportion to the input rate).
        """
        ends_at, ends = self._ends()
        at, committed = self._committed()
        after_at, after = self._ends()
        share = (at - ends_at) / (after_at - ends_at) if after_at > ends_at else 1.0
        for key, end in after.items():
            ends[key] += round(share * (end - ends[key]))
        samples = {}
        for service in SERVICES:
            done_at = committed[service]
            inputs = {
                (tp.topic, tp.partition) for role in INPUTS[service] for tp in self.partitions[role]
            }
            inputs |= {key for key in done_at if key in ends}
            end = sum(ends[key] for key in inputs)
            done = sum(done_at.get(key, 0) for key in inputs)
            lag = sum(max(0, ends[key] - done_at.get(key, 0)) for key in inputs)
            samples[service] = LagSample(at, lag, end, done)
        return samples

    def _ends(self) -> tuple[float, dict[tuple[str, int], int]]:
        """Every watched partition's end offset, and the middle of the time it took to read.

        The embedded broker may report an end short of the truth by up to the last record
        batch; a consumer past it then counts as no lag on that partition (never negative).
        Reading that batch to find the true end made a reading take up to 1.5 s under load.
        """
        started = time.monotonic()
        wanted = [tp for tps in self.partitions.values() for tp in tps]
        latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]
        futures = self.admin.list_offsets(dict.fromkeys(wanted, latest))
        ends = {(tp.topic, tp.partition): f.result().offset for tp, f in futures.items()}
        return (started + time.monotonic()) / 2, ends

    def _committed(self) -> tuple[float, dict[str, dict[tuple[str, int], int]]]:
        """Service → its group's committed offsets, all asked at once; and the middle moment."""
        started = time.monotonic()
        futures = {
            service: next(
                iter(
                    self.admin.list_consumer_group_offsets(
                        [ConsumerGroupTopicPartitions(self.topics.group(service))]
                    ).values()
                )
            )
            for service in SERVICES
        }
        committed = {
            service: {
                (tp.topic, tp.partition): tp.offset
                for tp in future.result().topic_partitions
                if tp.offset >= 0 and tp.topic in self.watched
            }
            for service, future in futures.items()
        }
        return (started + time.monotonic()) / 2, committed


def judge(samples: Sequence[LagSample]) -> StepVerdict:
    """Whether a service kept up over a step's samples (the module docstring's rule)."""
    if len(samples) < 2:
        return StepVerdict(True, 0.0, 0.0, 0.0)
    span = samples[-1].at - samples[0].at
    input_rate = (samples[-1].end - samples[0].end) / span
    throughput = (samples[-1].committed - samples[0].committed) / span
    mean_t = statistics.fmean(s.at for s in samples)
    mean_lag = statistics.fmean(s.lag for s in samples)
    spread = sum((s.at - mean_t) ** 2 for s in samples)
    slope = sum((s.at - mean_t) * (s.lag - mean_lag) for s in samples) / spread
    growth = slope / input_rate if input_rate > 0 else 0.0
    bounded = max(s.lag for s in samples) <= BACKLOG_LIMIT_S * input_rate
    return StepVerdict(growth <= GROWTH_LIMIT or bounded, growth, input_rate, throughput)


def schedule(
    settings: Settings, ramp: Sequence[int], step_s: float, tag: str = "loop"
) -> list[Scheduled]:
    """Raw events at each step's rate, back to back, each label ``LABEL_DELAY_S`` after."""
    topics = Topics(settings.topic_prefix)
    raw_topic, labels_topic = topics("raw"), topics("labels")
    total = sum(int(rate * step_s) for rate in ramp)
    rows = sea_with_drift(total, None, seed=7)
    now = datetime.now(UTC)
    messages: list[Scheduled] = []
    offset, i = 0.0, 0
    for rate in ramp:
        for k in range(int(rate * step_s)):
            features, label = next(rows)
            due = offset + k / rate
            event = RawEvent(
                event_id=f"{tag}-{i}", entity_id=f"sensor-{i % 32}", ts=now, features=features
            )
            messages.append(
                Scheduled(
                    due, raw_topic, event.entity_id.encode(), event.model_dump_json().encode()
                )
            )
            answer = Label(event_id=event.event_id, label=label)
            messages.append(
                Scheduled(
                    due + LABEL_DELAY_S,
                    labels_topic,
                    answer.event_id.encode(),
                    answer.model_dump_json().encode(),
                )
            )
            i += 1
        offset += step_s
    messages.sort(key=lambda m: m.due_s)
    return messages


def _wait_until_serving(settings: Settings, services: list[ServiceProcess]) -> None:
    deadline = time.monotonic() + 90
    with EddyClient(settings) as client:
        while True:
            _check(services)
            if client.serving_answers():
                return
            if time.monotonic() > deadline:
                raise PredictionTimeoutError("serving did not answer within 90 s")


def _check(services: list[ServiceProcess]) -> None:
    for service in services:
        if not service.running:
            raise RuntimeError(f"{service.name} exited:\n{service.log_tail()}")


def _warm_up(
    settings: Settings, probe: LagProbe, services: list[ServiceProcess]
) -> dict[str, float]:
    """A short slow stream, until every group caught up; each service's input messages per event.

    A service downstream of one that falls behind receives fewer events than are offered: its
    input rate over these counts is the event rate it really had to sustain.
    """
    producer = make_producer(settings, **{"linger.ms": SOURCE_LINGER_MS})
    send_paced(producer, schedule(settings, [WARM_UP_RATE], WARM_UP_S, tag="warm"))
    events = WARM_UP_RATE * WARM_UP_S
    deadline = time.monotonic() + 60
    while True:
        _check(services)
        samples = probe.sample()
        if all(s.committed > 0 and s.lag <= 20 for s in samples.values()):
            return {service: max(s.end / events, 1.0) for service, s in samples.items()}
        if time.monotonic() > deadline:
            raise RuntimeError(f"the loop did not catch up with the warm-up stream: {samples}")
        time.sleep(0.5)


@contextmanager
def _sending(
    settings: Settings, messages: list[Scheduled], start_at: float
) -> Iterator[threading.Event]:
    stop = threading.Event()
    producer = make_producer(settings, **{"linger.ms": SOURCE_LINGER_MS})
    thread = threading.Thread(
        target=send_paced, args=(producer, messages, stop, start_at), daemon=True
    )
    thread.start()
    try:
        yield stop
    finally:
        stop.set()
        thread.join(60)


@dataclass
class StepRun:
    """One step's trial: each service's verdict, the CPU used, and input messages per event."""

    verdicts: dict[str, StepVerdict]
    cpu: dict[str, float]
    waits: dict[str, float]
    load: dict[str, float]
    per_event: dict[str, float]


def loop_run(ctx: Context, ramp: Sequence[int], step_s: float) -> LoopResult:
    """One ramp, each step a trial of its own on fresh servers and services; sustained rates.

    Fresh because the embedded broker keeps everything and slows as it fills (``Context.
    own_servers``): each step would also pay for the events of every step before it, and the
    ramp would measure its own length as much as the services.
    """
    verdicts: dict[str, list[StepVerdict]] = {s: [] for s in SERVICES}
    cpu_by_step: list[dict[str, float]] = []
    wait_by_step: list[dict[str, float]] = []
    load_by_step: list[dict[str, float]] = []
    per_event: dict[str, float] = {}
    for rate in ramp:
        step = _step_run(ctx, rate, step_s)
        per_event = per_event or step.per_event
        for service in SERVICES:
            verdicts[service].append(step.verdicts[service])
        cpu_by_step.append(step.cpu)
        wait_by_step.append(step.waits)
        load_by_step.append(step.load)
        ctx.progress(f"     {rate:>6,} ev/s: " + _step_line(verdicts))
        ctx.progress("          CPU (cores): " + _cpu_line(step.cpu, step.load))
        ctx.progress("          waited for a CPU (s/s): " + _cpu_line(step.waits, {}))
        if all(not all(v.kept_up for v in verdicts[s]) for s in SERVICES):
            break
    result = _result(ramp, verdicts, per_event)
    result.cpu_by_step = cpu_by_step
    result.wait_by_step = wait_by_step
    result.load_by_step = load_by_step
    return result


def _step_run(ctx: Context, rate: int, step_s: float) -> StepRun:
    """``rate`` raw events/s for ``step_s`` through five fresh services on fresh servers."""
    with ctx.own_servers():
        return _trial(ctx, rate, step_s)


def _trial(ctx: Context, rate: int, step_s: float) -> StepRun:
    settings = ctx.settings(model_name="sea")
    settings = settings.model_copy(
        update={"ingest": settings.ingest.model_copy(update={"feature_schema": "sea"})}
    )
    messages = schedule(settings, [rate], step_s)
    with ctx.services(settings, *SERVICES) as services:
        _wait_until_serving(settings, services)
        probe = LagProbe(settings)
        per_event = _warm_up(settings, probe, services)
        pids = {
            **{p.name: p.process.pid for p in services if p.process is not None},
            **ctx.server_pids,
            "bench": os.getpid(),
        }
        window: list[dict[str, LagSample]] = []
        start = time.monotonic() + 0.2
        with _sending(settings, messages, start):
            time.sleep(max(0.0, start - time.monotonic()))
            cpu, machine = CpuMeter(pids), MachineLoad()
            # a reading takes time (more under load): one that would not end within the
            # step is not started, so the step is judged on its own rate only
            due, took = start + SETTLE_S, 0.0
            while due + took <= start + step_s:
                time.sleep(max(0.0, due - time.monotonic()))
                _check(services)
                began = time.monotonic()
                window.append(probe.sample())
                took = time.monotonic() - began
                due = max(due + SAMPLE_S, time.monotonic())
            used, waits, load = cpu.cores(), cpu.waits(), machine.cores()
    verdicts = {service: judge([w[service] for w in window]) for service in SERVICES}
    return StepRun(verdicts, used, waits, load, per_event)


class CpuMeter:
    """CPU time the given processes use from now on, and their wait for a CPU meanwhile.

    Both per second of the meter's time: CPU as cores, the wait as seconds (all threads).
    """

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.started = time.monotonic()
        self.before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        self.waited_before = {name: run_queue_seconds(pid) for name, pid in pids.items()}

    def cores(self) -> dict[str, float]:
        """Cores each process used since the meter started (a process gone is left out)."""
        return self._rates(self.before, cpu_seconds)

    def waits(self) -> dict[str, float]:
        """Seconds per second each process's threads waited for a CPU since the meter started.

        Summed over threads, so it may exceed 1; a process gone is left out.
        """
        return self._rates(self.waited_before, run_queue_seconds)

    def _rates(
        self, before: dict[str, float | None], reading: Callable[[int], float | None]
    ) -> dict[str, float]:
        elapsed = time.monotonic() - self.started
        rates = {}
        for name, pid in self.pids.items():
            then, now = before[name], reading(pid)
            if then is not None and now is not None and elapsed > 0:
                rates[name] = (now - then) / elapsed
        return rates


def _result(
    ramp: Sequence[int], verdicts: dict[str, list[StepVerdict]], per_event: dict[str, float]
) -> LoopResult:
    """Sustained rates in raw events/s: each step's rate, or what reached a service if less."""
    result = LoopResult({}, {})
    behind_at = [
        next((k for k, v in enumerate(steps) if not v.kept_up), None) for steps in verdicts.values()
    ]
    result.first_behind_step = min((k for k in behind_at if k is not None), default=None)
    for service, steps in verdicts.items():
        held = 0.0
        for rate, verdict in zip(ramp, steps, strict=False):
            if not verdict.kept_up:
                result.throughput_when_behind[service] = verdict.throughput / per_event[service]
                result.growth_when_behind[service] = verdict.growth
                break
            reached = verdict.input_rate / per_event[service]
            # a step that did not reach the service in full (upstream fell behind, or the
            # producer could not offer the rate) credits what came, never less than before
            held = max(held, float(rate) if reached >= REACHED_FULLY * rate else reached)
        result.sustained[service] = held
        result.top_of_ramp[service] = service not in result.growth_when_behind
    return result


def run(ctx: Context) -> list[Figure]:
    """The loop's sustained rate against serving's, and each service's."""
    ramp = RAMP_QUICK if ctx.quick else RAMP_FULL
    step_s = STEP_QUICK_S if ctx.quick else STEP_FULL_S
    runs: list[LoopResult] = []
    for i in range(ctx.repeats):
        runs.append(loop_run(ctx, ramp, step_s))
        r = runs[-1]
        ctx.progress(
            f"   run {i + 1}: loop {r.loop_rate:,.0f} ev/s, slowest {r.slowest or 'none'}; "
            + ", ".join(f"{s} {r.sustained[s]:,.0f}" for s in SERVICES)
        )
    serving = [r.sustained["serving"] for r in runs]
    figures = [loop_figure(runs, ramp, step_s)]
    for service in SERVICES:
        if service == "serving":
            continue
        figures.append(
            median_figure(
                SCENARIO,
                f"{service} sustained input rate",
                "ev/s",
                [r.sustained[service] for r in runs],
                serving,
                note=_service_note(service, runs),
            )
        )
    return figures + _cpu_figures(ramp, runs)


_UNJUDGED = (
    "; not judged met: serving kept up at the top of the ramp in most runs, so its own rate is "
    "only a lower bound"
)


def loop_figure(runs: Sequence[LoopResult], ramp: Sequence[int], step_s: float) -> Figure:
    """The headline: the rate all five sustain against serving's own, judged where it can be."""
    measured = serving_measured(runs)
    slowest = Counter(r.slowest or "none" for r in runs)
    ramp_text = f"ramp {', '.join(f'{r:,}' for r in ramp)} ev/s, {step_s:.0f} s each"
    return median_figure(
        SCENARIO,
        "input rate all five services sustain",
        "ev/s",
        [r.loop_rate for r in runs],
        [r.sustained["serving"] for r in runs],
        target=">= 1.0x serving's own",
        met=lambda v, b: measured and b is not None and v >= b,
        note=f"slowest: {_counts(slowest, len(runs))}; {ramp_text}; "
        "baseline: serving's sustained rate in the same run" + ("" if measured else _UNJUDGED),
    )


def serving_measured(runs: Sequence[LoopResult]) -> bool:
    """Serving fell behind within the ramp in most runs, so its own rate is measured.

    Where it held the top of the ramp, the loop holding it too shows only that the ramp was too
    short: a stage may still limit the loop below serving's own rate.
    """
    return 2 * sum(not r.top_of_ramp["serving"] for r in runs) > len(runs)


def _cpu_figures(ramp: Sequence[int], runs: list[LoopResult]) -> list[Figure]:
    """Where the CPU went at the step where the loop first fell behind (what filled the box)."""
    at = [
        (ramp[r.first_behind_step], r.cpu_by_step[r.first_behind_step])
        for r in runs
        if r.first_behind_step is not None and r.first_behind_step < len(r.cpu_by_step)
    ]
    if not at:
        return []
    steps = ", ".join(f"{rate:,}" for rate, _ in at)
    names = list(dict.fromkeys(name for _, cores in at for name in cores))
    figures = [
        median_figure(
            SCENARIO,
            f"CPU of {name} where the loop fell behind",
            "cores",
            [cores[name] for _, cores in at if name in cores],
            note=f"at {steps} ev/s",
        )
        for name in names
    ]
    figures.append(
        median_figure(
            SCENARIO,
            "CPU of all these processes where the loop fell behind",
            "cores",
            [sum(cores.values()) for _, cores in at],
            note=f"at {steps} ev/s; the machine has {os.cpu_count()} cores",
        )
    )
    waits = _at_first_behind(runs, lambda r: r.wait_by_step)
    figures += _figures_of(
        waits,
        {name: f"time {name} waited for a CPU where the loop fell behind" for name in SERVICES},
        "s/s",
        note=f"at {steps} ev/s; its threads' run-queue time per second (schedstat)",
    )
    loads = _at_first_behind(runs, lambda r: r.load_by_step)
    figures += _figures_of(
        loads,
        {
            key: f"CPU of the whole machine {what} where the loop fell behind"
            for key, what in (("busy", "busy"), ("stolen", "stolen by the host"))
        },
        "cores",
        note=f"at {steps} ev/s; the machine has {os.cpu_count()} cores",
    )
    return figures


def _at_first_behind(
    runs: Sequence[LoopResult], by_step: Callable[[LoopResult], list[dict[str, float]]]
) -> list[dict[str, float]]:
    """Each run's readings at the step where the loop first fell behind, where it did."""
    return [
        by_step(r)[r.first_behind_step]
        for r in runs
        if r.first_behind_step is not None and r.first_behind_step < len(by_step(r))
    ]


def _figures_of(
    readings: list[dict[str, float]], names: dict[str, str], unit: str, note: str
) -> list[Figure]:
    """A median figure per key of ``names`` (key → figure name) that some reading has."""
    figures = []
    for key, name in names.items():
        values = [reading[key] for reading in readings if key in reading]
        if values:
            figures.append(median_figure(SCENARIO, name, unit, values, note=note))
    return figures


def _service_note(service: str, runs: list[LoopResult]) -> str:
    behind = [r.throughput_when_behind[service] for r in runs if not r.top_of_ramp[service]]
    at_top = len(runs) - len(behind)
    parts = []
    if behind:
        parts.append(f"consumed {statistics.median(behind):,.0f} ev/s when it fell behind")
    if at_top:
        parts.append(f"never behind in {at_top}/{len(runs)} runs (a lower bound)")
    return "; ".join(parts)


def _cpu_line(cores: dict[str, float], load: dict[str, float]) -> str:
    shares = [f"{name} {used:.2f}" for name, used in cores.items()]
    line = ", ".join([*shares, f"total {sum(cores.values()):.2f}"])
    return f"{line}; {describe_load(load)}" if load else line


def _step_line(verdicts: dict[str, list[StepVerdict]]) -> str:
    return ", ".join(
        f"{s} {'ok' if v[-1].kept_up else 'BEHIND'} (in {v[-1].input_rate:,.0f}/s, "
        f"lag {v[-1].growth:+.0%} of it per s)"
        for s, v in verdicts.items()
    )


def _counts(names: Counter[str], runs: int) -> str:
    return ", ".join(f"{name} ({n}/{runs} runs)" for name, n in names.most_common())
