"""Training overhead: examples/s of the training service against River in-process on the same data.

The service reads pre-produced ``TrainingExample`` messages (10 numeric features, a logistic
ground truth) from its own topics and learns them test-then-train with the default model; its
rate is taken from ``eddy_examples_learned_total`` on its /metrics page, between 10% and 90% of
the examples, so start-up and the group join do not count. Scheduled versions are switched off
(one version per run: the initial one), so the figure is learning, not publishing. The
baselines run in this process on the same rows over the same middle 80%: ``learn_one`` alone
(the issue's baseline), and ``predict_one`` then ``learn_one`` (what training must do to keep
its prequential score; its ratio is reported without a target).
"""

from __future__ import annotations

import itertools
import os
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bench.harness import Context, Figure, median_figure
from bench.scenarios.serving_throughput import synthetic_rows
from schemas import TrainingExample
from schemas.base import Features, Target
from services.core.datasets import default_classifier
from services.core.embedded import free_port
from services.core.kafka import make_producer
from services.core.settings import Settings
from services.core.topics import Topics

SCENARIO = "training overhead"
LEARNED = "eddy_examples_learned_total"
#: How often the counter is read: a scrape costs the service about a millisecond of CPU (with
#: the GIL held), so reading every 10 ms would slow it down by a tenth.
SAMPLE_EVERY_S = 0.1
Rows = list[tuple[Features, Target]]


def produce_examples(settings: Settings, rows: Rows) -> None:
    """The rows as labelled ``TrainingExample`` messages on ``training.examples``."""
    producer = make_producer(settings, **{"linger.ms": 20})
    topic = Topics(settings.topic_prefix)("training_examples")
    now = datetime.now(UTC)
    for i, (features, label) in enumerate(rows):
        example = TrainingExample(
            event_id=f"b-{i}", entity_id=f"e{i % 100}", ts=now, features=features, label=label
        )
        while True:
            try:
                producer.produce(topic, example.model_dump_json().encode(), b"e%d" % (i % 100))
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(60):
        raise RuntimeError(f"the broker did not acknowledge every example on {topic}")


def learned_so_far(port: int) -> float | None:
    """``eddy_examples_learned_total`` on a service's metrics page (None until it serves one)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as page:
            text = page.read().decode()
    except OSError:
        return None
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(LEARNED)
    )


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, all threads) a process has used so far (Linux)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Rate:
    """Examples per second of wall-clock time and per second of CPU time."""

    wall: float
    cpu: float


def _crossing(samples: list[tuple[float, float, float]], level: float) -> tuple[float, float]:
    """(wall, cpu) when the sampled counter reached ``level``, interpolated between samples."""
    for (t0, c0, u0), (t1, c1, u1) in itertools.pairwise(samples):
        if c0 < level <= c1:
            share = (level - c0) / (c1 - c0)
            return t0 + (t1 - t0) * share, u0 + (u1 - u0) * share
    raise RuntimeError(f"the examples counter never crossed {level:.0f} while sampled")


def service_rate(ctx: Context, rows: Rows, timeout_s: float = 300) -> Rate:
    """The training service's rate between 10% and 90% of ``rows``."""
    settings = ctx.settings()
    produce_examples(settings, rows)
    port = free_port()
    count = len(rows)
    samples: list[tuple[float, float, float]] = []  # (wall, examples learned, CPU seconds)
    env = {"EDDY_TRAINING__PUBLISH_EVERY": str(10 * count), "EDDY_METRICS_PORT": str(port)}
    with ctx.services(settings, "training", **env) as (training,):
        assert training.process is not None
        deadline = time.monotonic() + timeout_s
        while not samples or samples[-1][1] < count:
            if time.monotonic() > deadline or not training.running:
                raise RuntimeError(
                    f"training learned {samples[-1][1] if samples else 0:.0f} of {count} "
                    f"examples:\n{training.log_tail()}"
                )
            learned = learned_so_far(port)
            if learned is not None:
                samples.append((time.perf_counter(), learned, cpu_seconds(training.process.pid)))
            time.sleep(SAMPLE_EVERY_S)
    (wall_low, cpu_low), (wall_high, cpu_high) = (
        _crossing(samples, count * 0.1),
        _crossing(samples, count * 0.9),
    )
    return Rate(count * 0.8 / (wall_high - wall_low), count * 0.8 / (cpu_high - cpu_low))


def in_process_rate(rows: Rows, step: Callable[[Any, Features, Target], None]) -> Rate:
    """The rate of ``step`` on a fresh default model over the middle 80% of ``rows``."""
    model = default_classifier()
    low, high = len(rows) // 10, len(rows) * 9 // 10
    for features, label in rows[:low]:
        step(model, features, label)
    wall, cpu = time.perf_counter(), time.thread_time()
    for features, label in rows[low:high]:
        step(model, features, label)
    return Rate(
        (high - low) / (time.perf_counter() - wall), (high - low) / (time.thread_time() - cpu)
    )


def learn_only(model: Any, features: Features, label: Target) -> None:
    """River's ``learn_one``: the issue's baseline."""
    model.learn_one(features, label)


def test_then_train(model: Any, features: Features, label: Target) -> None:
    """``predict_one`` then ``learn_one``: the work training does per example."""
    model.predict_one(features)
    model.learn_one(features, label)


def run(ctx: Context) -> list[Figure]:
    """Median examples/s of training and of both in-process loops, and the ratios."""
    count = 5_000 if ctx.quick else 30_000
    rows: Rows = [(dict(x), y) for x, y in synthetic_rows(count, seed=3)]
    service: list[Rate] = []
    learn: list[Rate] = []
    tested: list[Rate] = []
    for i in range(ctx.repeats):
        # baselines just before and just after the service, averaged: the machine is shared,
        # and its load moves on the scale of one measurement
        before = (in_process_rate(rows, learn_only), in_process_rate(rows, test_then_train))
        service.append(service_rate(ctx, rows))
        after = (in_process_rate(rows, learn_only), in_process_rate(rows, test_then_train))
        learn.append(_mean(before[0], after[0]))
        tested.append(_mean(before[1], after[1]))
        ctx.progress(
            f"   run {i + 1}: River learn_one {learn[-1].wall:,.0f}/s, predict_one + learn_one "
            f"{tested[-1].wall:,.0f}/s; training service {service[-1].wall:,.0f}/s "
            f"(per CPU-second: {learn[-1].cpu:,.0f}, {tested[-1].cpu:,.0f}, {service[-1].cpu:,.0f})"
        )
    name = f"training examples/s, {count:,} examples"
    cpu_name = f"training examples per CPU-s, {count:,} examples"
    scheduled_off = "scheduled versions off; in-process baseline on the same rows and model"
    return [
        median_figure(
            SCENARIO,
            f"{name} vs River learn_one",
            "ex/s",
            [r.wall for r in service],
            [r.wall for r in learn],
            target=">= 0.85x learn_one",
            met=lambda v, b: b is not None and v >= 0.85 * b,
            note=scheduled_off,
        ),
        median_figure(
            SCENARIO,
            f"{name} vs River predict_one + learn_one",
            "ex/s",
            [r.wall for r in service],
            [r.wall for r in tested],
            note="test-then-train in-process: the work training must do per example; no target",
        ),
        median_figure(
            SCENARIO,
            f"{cpu_name} vs River learn_one",
            "ex/CPU-s",
            [r.cpu for r in service],
            [r.cpu for r in learn],
            note="CPU time of the service process (all threads) vs the baseline's thread: "
            "robust to other load on a shared machine; no target",
        ),
        median_figure(
            SCENARIO,
            f"{cpu_name} vs River predict_one + learn_one",
            "ex/CPU-s",
            [r.cpu for r in service],
            [r.cpu for r in tested],
            note="as above, against test-then-train; no target",
        ),
    ]


def _mean(a: Rate, b: Rate) -> Rate:
    return Rate((a.wall + b.wall) / 2, (a.cpu + b.cpu) / 2)
