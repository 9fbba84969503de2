"""A share of time that some work may take: versions get 10% of a core, say.

A token bucket in seconds: it fills at ``share`` seconds per second, up to ``burst_s``, and
each piece of work spends the CPU time it took in this thread. Time spent waiting (for the
broker's acknowledgement, say) costs the service nothing and is not counted: counted, it held
back the versions after a drift on the embedded broker, whose acknowledgements take tens of
milliseconds. Within the share, work comes when it is due; beyond it, it waits. A slow stream
never runs out (versions on schedule), a fast one spends at most the share on them (a version
every few dozen examples at thousands a second would otherwise be most of training's work).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class TimeBudget:
    """Seconds of work allowed: ``share`` of the time that passes, at most ``burst_s`` saved."""

    def __init__(
        self,
        share: float,
        burst_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        work_clock: Callable[[], float] = time.thread_time,
    ) -> None:
        self.share = share
        self.burst_s = burst_s
        self.clock = clock
        self.work_clock = work_clock
        self._left = burst_s
        self._at = clock()

    def allows(self) -> bool:
        """True while some of the share is left (work that overdraws it waits until it is back)."""
        return self.left() > 0

    def left(self) -> float:
        """Seconds of work the budget holds now."""
        now = self.clock()
        self._left = min(self.burst_s, self._left + (now - self._at) * self.share)
        self._at = now
        return self._left

    def spend(self, seconds: float) -> None:
        """Count ``seconds`` of work done."""
        self._left = self.left() - seconds

    @contextmanager
    def spending(self) -> Iterator[None]:
        """Count the CPU time the block takes in this thread."""
        started = self.work_clock()
        try:
            yield
        finally:
            self.spend(self.work_clock() - started)
