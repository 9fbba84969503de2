"""Drift against a reference window: the recent values of a subject compared with its first ones.

Data drift uses a two-sample Kolmogorov-Smirnov test per numeric feature (any change of the
distribution, not only of its mean); prediction drift compares the shares of predicted classes
with the population stability index (PSI). Both test every ``check_every`` values, fire at most
once per cool-down, and take the recent window as the new reference after firing, so one change
gives one event (the values after a finding fill a new reference). Pure logic, no I/O.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Hashable
from typing import Generic, TypeVar

import numpy as np

from services.monitoring.detectors import Finding

ValueT = TypeVar("ValueT", bound=Hashable)

#: Share given to a class absent from one window, so the PSI stays finite.
PSI_FLOOR = 1e-4


def ks_statistic(reference: np.ndarray, recent: np.ndarray) -> float:
    """The largest distance between the two empirical distribution functions."""
    reference, recent = np.sort(reference), np.sort(recent)
    points = np.concatenate([reference, recent])
    cdf_reference = np.searchsorted(reference, points, side="right") / reference.size
    cdf_recent = np.searchsorted(recent, points, side="right") / recent.size
    return float(np.max(np.abs(cdf_reference - cdf_recent)))


def ks_critical(alpha: float, n: int, m: int) -> float:
    """The statistic above which the two samples differ at significance ``alpha``."""
    return math.sqrt(-math.log(alpha / 2) * (n + m) / (2 * n * m))


def psi(reference: Counter[ValueT], recent: Counter[ValueT]) -> float:
    """Population stability index of two class distributions (0: identical)."""
    total_reference, total_recent = sum(reference.values()), sum(recent.values())
    index = 0.0
    for value in reference.keys() | recent.keys():
        p = max(reference[value] / total_reference, PSI_FLOOR)
        q = max(recent[value] / total_recent, PSI_FLOOR)
        index += (q - p) * math.log(q / p)
    return index


class _ReferenceWatch(Generic[ValueT]):
    """The windows, the test schedule and the cool-down shared by both tests."""

    detector = "reference"

    def __init__(
        self, subject: str, reference_size: int, window_size: int, check_every: int, cooldown: int
    ) -> None:
        self.subject = subject
        self.reference: list[ValueT] = []
        self.reference_size = reference_size
        self.recent: deque[ValueT] = deque(maxlen=window_size)
        self.check_every = check_every
        self.cooldown = cooldown
        self.since_check = 0
        self.quiet_for = 0

    def update(self, value: ValueT) -> Finding | None:
        """Learn one value; a finding when the recent window left the reference."""
        if len(self.reference) < self.reference_size:
            self.reference.append(value)
            return None
        self.recent.append(value)
        self.since_check += 1
        self.quiet_for = max(0, self.quiet_for - 1)
        if (
            self.since_check < self.check_every
            or len(self.recent) < (self.recent.maxlen or 0)
            or self.quiet_for
        ):
            return None
        self.since_check = 0
        finding = self._test()
        if finding is not None:
            # The recent window straddles the change: the values after it become the reference
            # of the new regime, so one change gives one finding.
            self.restart()
            self.quiet_for = self.cooldown
        return finding

    def restart(self) -> None:
        """Forget both windows (for a subject whose meaning changed, like a new model)."""
        self.reference.clear()
        self.recent.clear()
        self.since_check = 0

    def _test(self) -> Finding | None:
        raise NotImplementedError


class DistributionWatch(_ReferenceWatch[float]):
    """Data drift of one numeric feature: a KS test of recent values against the reference."""

    def __init__(
        self,
        subject: str,
        reference_size: int,
        window_size: int,
        check_every: int,
        cooldown: int,
        alpha: float,
    ) -> None:
        super().__init__(subject, reference_size, window_size, check_every, cooldown)
        self.critical = ks_critical(alpha, reference_size, window_size)
        self.detector = f"KS(alpha={alpha:g})"

    def _test(self) -> Finding | None:
        reference, recent = np.asarray(self.reference), np.asarray(self.recent)
        statistic = ks_statistic(reference, recent)
        if statistic <= self.critical:
            return None
        return Finding(
            self.subject,
            self.detector,
            float(reference.mean()),
            float(recent.mean()),
            statistic,
            len(self.recent),
            len(self.recent),
        )


class CategoryWatch(_ReferenceWatch[str]):
    """Prediction drift: the shares of predicted classes against the reference, by PSI."""

    def __init__(
        self,
        subject: str,
        reference_size: int,
        window_size: int,
        check_every: int,
        cooldown: int,
        threshold: float,
    ) -> None:
        super().__init__(subject, reference_size, window_size, check_every, cooldown)
        self.threshold = threshold
        self.detector = f"PSI(threshold={threshold:g})"

    def _test(self) -> Finding | None:
        reference, recent = Counter(self.reference), Counter(self.recent)
        index = psi(reference, recent)
        if index <= self.threshold:
            return None
        top = reference.most_common(1)[0][0]
        before = reference[top] / len(self.reference)
        after = recent[top] / len(self.recent)
        return Finding(
            self.subject, self.detector, before, after, index, len(self.recent), len(self.recent)
        )
