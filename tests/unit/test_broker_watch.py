"""`eddy stack up` says when its broker got busy, and why; quiet otherwise."""

from __future__ import annotations

import os
import subprocess
import sys

from services.core.embedded import BUSY_BROKER_CORES, BrokerWatch
from services.core.procstat import cpu_seconds, cpu_seconds_in_stat


class _Readings:
    """A clock and a CPU counter that the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0
        self.used: float | None = 0.0

    def clock(self) -> float:
        return self.now

    def cpu(self, pid: int) -> float | None:
        return self.used

    def advance(self, seconds: float, cores: float) -> None:
        self.now += seconds
        assert self.used is not None
        self.used += seconds * cores


def _watch(readings: _Readings) -> BrokerWatch:
    return BrokerWatch(123, clock=readings.clock, cpu=readings.cpu)


def test_a_quiet_broker_gets_no_warning() -> None:
    readings = _Readings()
    watch = _watch(readings)
    readings.advance(60, cores=BUSY_BROKER_CORES / 2)
    assert watch.check() is None


def test_a_busy_broker_gets_a_warning_with_its_load_and_the_way_out() -> None:
    readings = _Readings()
    watch = _watch(readings)
    readings.advance(60, cores=0.9)
    warning = watch.check()
    assert warning is not None
    assert "0.90 of a core over the last 60 s" in warning
    assert "EDDY_KAFKA_BOOTSTRAP" in warning


def test_each_check_judges_only_the_time_since_the_last() -> None:
    readings = _Readings()
    watch = _watch(readings)
    readings.advance(60, cores=1.0)
    assert watch.check() is not None
    readings.advance(60, cores=0.1)  # a busy minute before does not count again
    assert watch.check() is None


def test_a_broker_that_is_gone_gets_no_warning() -> None:
    readings = _Readings()
    watch = _watch(readings)
    readings.advance(60, cores=1.0)
    readings.used = None
    assert watch.check() is None


def test_cpu_seconds_are_user_plus_system_ticks_counted_after_the_command_name() -> None:
    # pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
    line = "4242 (tansu) broker (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 130 0 0 20 0 9\n"
    assert cpu_seconds_in_stat(line, ticks_per_s=100) == 3.8


def test_a_process_that_is_gone_has_no_cpu_seconds() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: its /proc entry is gone
    assert cpu_seconds(child.pid) is None
    assert cpu_seconds(os.getpid()) is not None
