"""Training overhead: examples/s of the training service against River in-process on the same data.

The service reads pre-produced ``TrainingExample`` messages (10 numeric features, a logistic
ground truth) from its own topics and learns them test-then-train with the default model and
the no-change baseline beside it (the leaderboard); its
rate is taken from ``eddy_examples_learned_total`` on its /metrics page, between 10% and 90% of
the examples, so start-up and the group join do not count. Scheduled versions are switched off
(one version per run: the initial one), so the figure is learning, not publishing. The
baselines run in this process on the same rows over the same middle 80%: ``learn_one`` alone;
``predict_one`` then ``learn_one`` (what test-then-train must do); that after validating each
wire message with its pydantic model (the target's baseline: the same model's work without
Kafka); and the race the service runs, validation included (the service's own per-example work
without Kafka). The ratios without a target split the gap.
"""

from __future__ import annotations

import itertools
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from bench.harness import Context, Figure, median_figure
from bench.scenarios.serving_throughput import synthetic_rows
from schemas import TrainingExample
from schemas.base import Features, Target
from schemas.models import ModelSpec
from services.core.datasets import default_classifier
from services.core.embedded import free_port
from services.core.feature_schema import FeatureSchema
from services.core.kafka import make_producer
from services.core.model_specs import baseline_spec, build_model, default_specs
from services.core.procstat import cpu_seconds
from services.core.settings import KafkaSettings, Settings
from services.core.topics import Topics
from services.training.learner import Candidate, Example, Race

SCENARIO = "training overhead"
LEARNED = "eddy_examples_learned_total"
#: How often the counter is read: a scrape costs the service about a millisecond of CPU (with
#: the GIL held), so reading every 10 ms would slow it down by a tenth.
SAMPLE_EVERY_S = 0.1
#: Messages per batch of the in-process race: what the service consumes at a time by default.
BATCH = KafkaSettings().batch_size
Rows = list[tuple[Features, Target]]
T = TypeVar("T")


def encoded_examples(rows: Rows) -> list[bytes]:
    """The rows as labelled ``TrainingExample`` messages, as they travel on the wire."""
    now = datetime.now(UTC)
    return [
        TrainingExample(
            event_id=f"b-{i}", entity_id=f"e{i % 100}", ts=now, features=features, label=label
        )
        .model_dump_json()
        .encode()
        for i, (features, label) in enumerate(rows)
    ]


def produce_examples(settings: Settings, rows: Rows) -> None:
    """The rows as labelled ``TrainingExample`` messages on ``training.examples``."""
    producer = make_producer(settings, **{"linger.ms": 20})
    topic = Topics(settings.topic_prefix)("training_examples")
    for i, value in enumerate(encoded_examples(rows)):
        while True:
            try:
                producer.produce(topic, value, b"e%d" % (i % 100))
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
    """The training service's rate between 10% and 90% of ``rows``, on servers of its own."""
    with ctx.own_servers():
        return _service_rate(ctx, rows, timeout_s)


def _service_rate(ctx: Context, rows: Rows, timeout_s: float) -> Rate:
    settings = ctx.settings()
    produce_examples(settings, rows)
    port = free_port()
    count = len(rows)
    samples: list[tuple[float, float, float]] = []  # (wall, examples learned, CPU seconds)
    env = {
        "EDDY_TRAINING__PUBLISH_EVERY": str(10 * count),
        "EDDY_TRAINING__FIRST_INTERVAL": "0",
        "EDDY_TRAINING__PUBLISH_INTERVAL_S": "0",
        "EDDY_TRAINING__SMALL_MODEL_BYTES": "0",
        "EDDY_METRICS_PORT": str(port),
    }
    with ctx.services(settings, "training", **env) as (training,):
        assert training.process is not None
        deadline = time.monotonic() + timeout_s
        while not samples or samples[-1][1] < count:
            if time.monotonic() > deadline or not training.running:
                raise RuntimeError(
                    f"training learned {samples[-1][1] if samples else 0:.0f} of {count} "
                    f"examples:\n{training.log_tail()}"
                )
            learned, cpu = learned_so_far(port), cpu_seconds(training.process.pid)
            if learned is not None and cpu is not None:
                samples.append((time.perf_counter(), learned, cpu))
            time.sleep(SAMPLE_EVERY_S)
    (wall_low, cpu_low), (wall_high, cpu_high) = (
        _crossing(samples, count * 0.1),
        _crossing(samples, count * 0.9),
    )
    return Rate(count * 0.8 / (wall_high - wall_low), count * 0.8 / (cpu_high - cpu_low))


def in_process_rate(items: Sequence[T], step: Callable[[Any, T], None]) -> Rate:
    """The rate of ``step`` on a fresh default model over the middle 80% of ``items``."""
    model = default_classifier()
    low, high = len(items) // 10, len(items) * 9 // 10
    for item in items[:low]:
        step(model, item)
    wall, cpu = time.perf_counter(), time.thread_time()
    for item in items[low:high]:
        step(model, item)
    return Rate(
        (high - low) / (time.perf_counter() - wall), (high - low) / (time.thread_time() - cpu)
    )


def learn_only(model: Any, row: tuple[Features, Target]) -> None:
    """River's ``learn_one``: the issue's baseline."""
    model.learn_one(*row)


def test_then_train(model: Any, row: tuple[Features, Target]) -> None:
    """``predict_one`` then ``learn_one``: what training must do to keep its prequential score."""
    model.predict_one(row[0])
    model.learn_one(*row)


def decode_test_then_train(model: Any, value: bytes) -> None:
    """Validate the wire message, then test-then-train: the service's work without Kafka."""
    example = TrainingExample.model_validate_json(value)
    model.predict_one(example.features)
    model.learn_one(example.features, example.label)


def decode_race(wire: Sequence[bytes], batch: int = BATCH) -> Rate:
    """The service's per-example work without Kafka: validate, check the label, race.

    The race is what the service runs: the default model and the no-change baseline, each
    scored before it learns, over batches of the size the service consumes.
    """
    schema = FeatureSchema.model_validate(
        {
            "name": "synthetic",
            "features": {
                name: {"type": "float"}
                for name in TrainingExample.model_validate_json(wire[0]).features
            },
        }
    )
    specs = [*default_specs(schema), baseline_spec(schema)]

    def build(spec: ModelSpec) -> Any:
        return build_model(spec, schema)

    race = Race(
        [Candidate(s, build(s), "binary", 1000, 2000) for s in specs], specs[0].name, 2000, build
    )
    check = schema.target.check
    validate = TrainingExample.model_validate_json
    numbered = list(enumerate(wire))
    chunks = [numbered[i : i + batch] for i in range(0, len(numbered), batch)]
    low, high = len(chunks) // 10, len(chunks) * 9 // 10
    learned = sum(len(chunk) for chunk in chunks[low:high])
    wall = cpu = 0.0
    for i, chunk in enumerate(chunks[:high]):
        started, started_cpu = time.perf_counter(), time.thread_time()
        examples = []
        for offset, value in chunk:
            example = validate(value)
            examples.append(Example(example.features, check(example.label), 0, offset))  # type: ignore[arg-type]
        race.learn_many(examples)
        if i >= low:
            wall += time.perf_counter() - started
            cpu += time.thread_time() - started_cpu
    return Rate(learned / wall, learned / cpu)


def run(ctx: Context) -> list[Figure]:
    """Median examples/s of training and of the in-process loops, and the ratios."""
    count = 5_000 if ctx.quick else 30_000
    rows: Rows = [(dict(x), y) for x, y in synthetic_rows(count, seed=3)]
    wire = encoded_examples(rows)

    def baselines() -> tuple[Rate, Rate, Rate, Rate]:
        return (
            in_process_rate(rows, learn_only),
            in_process_rate(rows, test_then_train),
            in_process_rate(wire, decode_test_then_train),
            decode_race(wire),
        )

    service: list[Rate] = []
    learn: list[Rate] = []
    tested: list[Rate] = []
    decoded: list[Rate] = []
    raced: list[Rate] = []
    for i in range(ctx.repeats):
        # baselines just before and just after the service, averaged: the machine is shared,
        # and its load moves on the scale of one measurement
        before = baselines()
        service.append(service_rate(ctx, rows))
        after = baselines()
        learn.append(_mean(before[0], after[0]))
        tested.append(_mean(before[1], after[1]))
        decoded.append(_mean(before[2], after[2]))
        raced.append(_mean(before[3], after[3]))
        ctx.progress(
            f"   run {i + 1}: River learn_one {learn[-1].wall:,.0f}/s, predict_one + learn_one "
            f"{tested[-1].wall:,.0f}/s, decode + both {decoded[-1].wall:,.0f}/s, decode + "
            f"race {raced[-1].wall:,.0f}/s; training service {service[-1].wall:,.0f}/s "
            f"(per CPU-second: {learn[-1].cpu:,.0f}, {tested[-1].cpu:,.0f}, "
            f"{decoded[-1].cpu:,.0f}, {raced[-1].cpu:,.0f}, {service[-1].cpu:,.0f})"
        )
    name = f"training examples/s, {count:,} examples"
    cpu_name = f"training examples per CPU-s, {count:,} examples"
    wall, cpu = [r.wall for r in service], [r.cpu for r in service]
    target = median_figure(
        SCENARIO,
        f"{name} vs in-process decode + predict_one + learn_one",
        "ex/s",
        wall,
        [r.wall for r in decoded],
        target=">= 0.85x in-process test-then-train",
        met=lambda v, b: b is not None and v >= 0.85 * b,
        note="scheduled versions off; the same model on the same rows, each message validated, "
        "in this process; the service also runs the no-change baseline and scores both",
    )
    # (figure name, unit, service runs, baseline runs, note): reported without a target
    split = [
        (
            f"{name} vs River learn_one",
            "ex/s",
            wall,
            [r.wall for r in learn],
            "learn_one alone, without the prediction test-then-train needs",
        ),
        (
            f"{name} vs River predict_one + learn_one",
            "ex/s",
            wall,
            [r.wall for r in tested],
            "test-then-train in-process: the work training must do per example",
        ),
        (
            f"{name} vs in-process decode + race",
            "ex/s",
            wall,
            [r.wall for r in raced],
            "the service's own per-example work without Kafka (validation, label check, the "
            "default model and the baseline each scored then learning): the loop's own cost",
        ),
        (
            f"{cpu_name} vs River learn_one",
            "ex/CPU-s",
            cpu,
            [r.cpu for r in learn],
            "CPU time of the service process (all threads) vs the baseline's thread: "
            "robust to other load on a shared machine",
        ),
        (
            f"{cpu_name} vs River predict_one + learn_one",
            "ex/CPU-s",
            cpu,
            [r.cpu for r in tested],
            "as above, against test-then-train",
        ),
    ]
    return [
        target,
        *(
            median_figure(SCENARIO, figure, unit, runs, baseline, note=f"{note}; no target")
            for figure, unit, runs, baseline, note in split
        ),
    ]


def _mean(a: Rate, b: Rate) -> Rate:
    return Rate((a.wall + b.wall) / 2, (a.cpu + b.cpu) / 2)
