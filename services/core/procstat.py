"""What Linux's /proc says of a process: the CPU time it used, and how long it waited for one.

``eddy stack up`` watches its broker with it, and the bench its services and servers.
"""

from __future__ import annotations

import os


def cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system, all threads) a process has used so far; None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            line = stat.read()
    except OSError:
        return None
    return cpu_seconds_in_stat(line, os.sysconf("SC_CLK_TCK"))


def cpu_seconds_in_stat(line: str, ticks_per_s: float) -> float:
    """User + system time of a ``/proc/<pid>/stat`` line.

    The fields are counted after the command name's closing parenthesis: the name itself may hold
    spaces and parentheses.
    """
    fields = line.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / ticks_per_s


def run_queue_seconds(pid: int) -> float | None:
    """Time a process's threads have spent ready to run but waiting for a CPU, so far.

    On a full machine a process is slowed by this wait, not by its own work: it says whether a
    service fell behind for want of a CPU. The sum of its live threads' schedstat (a thread that
    ended takes its share along); None once the process is gone, or on a kernel without it.
    """
    total = 0
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for thread in threads:
        try:
            with open(f"/proc/{pid}/task/{thread}/schedstat") as stat:
                total += int(stat.read().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return total / 1e9
