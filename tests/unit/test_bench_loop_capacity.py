"""The loop-capacity benchmark's verdicts: who kept up, where the loop fell behind, CPU use."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from bench.scenarios.loop_capacity import (
    CpuMeter,
    LagSample,
    LoopResult,
    StepVerdict,
    _cpu_figures,
    _result,
    judge,
    loop_figure,
)
from services.core.procstat import run_queue_seconds
from services.core.supervisor import SERVICES


def samples(lags: list[int], rate: int = 1000, every_s: float = 0.25) -> list[LagSample]:
    """Readings at ``rate`` messages/s in, with the given lags."""
    return [
        LagSample(i * every_s, lag, int(i * every_s * rate), int(i * every_s * rate) - lag)
        for i, lag in enumerate(lags)
    ]


def test_a_lag_that_stays_flat_keeps_up() -> None:
    assert judge(samples([120, 90, 150, 110, 130, 100, 140, 120])).kept_up


def test_a_lag_that_grows_past_the_backlog_limit_falls_behind() -> None:
    verdict = judge(samples([100 + 150 * i for i in range(24)]))
    assert not verdict.kept_up
    assert verdict.growth > 0.5


def kept(ok: bool, rate: float = 1000.0) -> StepVerdict:
    return StepVerdict(ok, 0.0 if ok else 0.3, rate, rate if ok else rate / 2)


def test_the_loop_falls_behind_at_the_first_step_any_service_does() -> None:
    ramp = (500, 1000, 2000)
    verdicts = {s: [kept(True, r) for r in ramp] for s in SERVICES}
    verdicts["labeling"] = [kept(True, 500), kept(True, 1000), kept(False, 2000)]
    verdicts["ingest"] = [kept(True, 500), kept(False, 1000), kept(False, 2000)]
    result = _result(ramp, verdicts, dict.fromkeys(SERVICES, 1.0))
    assert result.first_behind_step == 1
    assert result.slowest == "ingest"
    assert result.loop_rate == 500


def test_no_service_behind_leaves_no_step() -> None:
    ramp = (500, 1000)
    verdicts = {s: [kept(True, r) for r in ramp] for s in SERVICES}
    result = _result(ramp, verdicts, dict.fromkeys(SERVICES, 1.0))
    assert result.first_behind_step is None
    assert result.slowest is None


def test_the_cpu_meter_counts_a_busy_process_and_leaves_out_one_that_is_gone() -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    meter = CpuMeter({"me": os.getpid(), "gone": gone.pid})
    deadline = time.process_time() + 0.2
    while time.process_time() < deadline:
        pass
    cores = meter.cores()
    assert set(cores) == {"me"}
    assert 0.1 < cores["me"] <= 1.5
    waits = meter.waits()
    assert set(waits) == {"me"}
    assert waits["me"] >= 0.0


def test_a_process_waits_for_a_cpu_only_while_another_holds_the_one_it_may_use() -> None:
    """Two busy processes pinned to one CPU: each waits about as long as the other runs."""
    if not hasattr(os, "sched_setaffinity") or run_queue_seconds(os.getpid()) is None:
        pytest.skip("no per-thread scheduler statistics here")
    cpu = min(os.sched_getaffinity(0))
    spin = (
        f"import os, time\nos.sched_setaffinity(0, {{{cpu}}})\n"
        "end = time.process_time() + 0.4\nwhile time.process_time() < end: pass\n"
    )
    busy = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(2)]
    meter = CpuMeter({f"spinner {i}": p.pid for i, p in enumerate(busy)})
    time.sleep(0.3)
    waits = meter.waits()
    for process in busy:
        process.wait()

    assert set(waits) == {"spinner 0", "spinner 1"}
    assert sum(waits.values()) > 0.2  # one CPU for two: one of them always waits


def test_the_cpu_figures_say_where_the_machine_stood_at_the_step_the_loop_fell_behind() -> None:
    ramp = (1_000, 2_000)
    runs = []
    for busy in (1.9, 1.7, 1.8):
        result = LoopResult({s: 1_000.0 for s in SERVICES}, dict.fromkeys(SERVICES, False))
        result.first_behind_step = 1
        result.cpu_by_step = [{"labeling": 0.1, "broker": 0.1}, {"labeling": 0.3, "broker": 0.5}]
        result.wait_by_step = [{"labeling": 0.0}, {"labeling": busy / 2, "broker": 0.9}]
        result.load_by_step = [{"busy": 0.5, "stolen": 0.0}, {"busy": busy, "stolen": 0.1}]
        runs.append(result)

    figures = {f.name: f for f in _cpu_figures(ramp, runs)}

    assert figures["CPU of labeling where the loop fell behind"].value == 0.3
    assert figures["CPU of all these processes where the loop fell behind"].value == 0.8
    assert figures["CPU of the whole machine busy where the loop fell behind"].value == 1.8
    stolen = figures["CPU of the whole machine stolen by the host where the loop fell behind"]
    assert stolen.value == 0.1
    assert stolen.note.startswith("at 2,000, 2,000, 2,000 ev/s")
    assert figures["time labeling waited for a CPU where the loop fell behind"].value == 0.9
    assert not any("broker waited" in name for name in figures)  # waits: services only


def test_without_a_machine_load_the_cpu_figures_are_only_the_processes() -> None:
    result = LoopResult({s: 1_000.0 for s in SERVICES}, dict.fromkeys(SERVICES, False))
    result.first_behind_step = 0
    result.cpu_by_step = [{"labeling": 0.3}]
    result.load_by_step = [{}]

    names = [f.name for f in _cpu_figures((1_000,), [result])]

    assert names == [
        "CPU of labeling where the loop fell behind",
        "CPU of all these processes where the loop fell behind",
    ]


def run_result(held: dict[str, float], top: float) -> LoopResult:
    """One run's sustained rates; a service that held ``top`` (the ramp's end) never fell behind."""
    return LoopResult(dict(held), {s: rate >= top for s, rate in held.items()})


def test_the_loop_meets_its_target_when_every_stage_holds_serving_s_measured_rate() -> None:
    held = dict.fromkeys(SERVICES, 9_000.0)
    runs = [run_result(held, top=12_000) for _ in range(3)]

    figure = loop_figure(runs, (9_000, 10_000, 12_000), 7.0)

    assert figure.value == figure.baseline == 9_000
    assert figure.met is True


def test_a_stage_below_serving_misses_the_target() -> None:
    held = {**dict.fromkeys(SERVICES, 9_000.0), "labeling": 7_000.0}
    runs = [run_result(held, top=12_000) for _ in range(3)]

    figure = loop_figure(runs, (7_000, 9_000, 12_000), 7.0)

    assert figure.value == 7_000
    assert figure.met is False
    assert "slowest: labeling (3/3 runs)" in figure.note


def test_a_loop_that_holds_the_top_of_a_short_ramp_is_not_judged_met() -> None:
    held = dict.fromkeys(SERVICES, 7_000.0)
    runs = [run_result(held, top=7_000) for _ in range(2)]
    runs.append(run_result({**held, "serving": 6_000.0, "labeling": 6_000.0}, top=7_000))

    figure = loop_figure(runs, (6_000, 7_000), 7.0)

    assert figure.value == figure.baseline == 7_000
    assert figure.met is False
    assert "only a lower bound" in figure.note
