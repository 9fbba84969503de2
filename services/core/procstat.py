"""What Linux's /proc says of a process: the CPU time it has used.

``eddy stack up`` watches its broker with it, and the bench its services and servers.
"""

from __future__ import annotations

import os


def cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system, all threads) a process has used so far; None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
