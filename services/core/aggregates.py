"""Derived features: per-entity windowed aggregates and transforms, point-in-time in event time.

A feature schema declares them in ``[derived.<name>]`` tables; ingest computes them for each
accepted event and carries them in its feature event, so the model, its training examples,
monitoring and the label page all see the same values. Pure logic: the history of an entity
comes in and goes out as a plain value (``History``), kept in Redis by ``WindowStore``.

Each event's aggregates are as of its own time: they cover the entity's events whose
(event time, event id) comes at or before the event's own, never a later one, whatever order
they arrived in. Windows, for an event at time t:

- ``sliding``: events in (t - window, t];
- ``tumbling``: events since the start of t's window (windows aligned on the Unix epoch);
- ``hopping``: events since the start of the oldest of the windows that hold t (windows start
  every ``hop``, aligned on the epoch), that is from ``(floor((t - window) / hop) + 1) * hop``.

An event seen again (a replay after a crash) is not added twice and gets the aggregates it got
the first time, while its entity's history still holds it. An event more than the schema's
``lateness`` behind the newest event of its entity is too late: it updates no window and
carries no aggregate (transforms of its own features still apply).

>>> windows = Windows({"n": DerivedSpec(agg="count", window="1h")})
>>> history = History()
>>> [windows.add(history, t, f"e{t}", {}).values["n"] for t in (0, 1800, 3600, 3601)]
[1.0, 2.0, 2.0, 3.0]
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.base import FeatureValue

Aggregation = Literal["count", "sum", "mean", "min", "max", "std", "last", "since_last", "lag"]
Transform = Literal["ratio", "log", "bucket"]
WindowKind = Literal["sliding", "tumbling", "hopping"]

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")


def seconds(duration: str | float) -> float:
    """A duration (``"90s"``, ``"15m"``, ``"1h"``, ``"7d"`` or a number of seconds) in seconds.

    >>> seconds("15m"), seconds(2.5)
    (900.0, 2.5)
    """
    if isinstance(duration, int | float) and not isinstance(duration, bool):
        value = float(duration)
    else:
        found = _DURATION.match(str(duration))
        if found is None:
            raise ValueError(
                f"{duration!r} is not a duration: write a number and a unit, s, m, h or d "
                '(e.g. "90s", "15m", "1h", "7d")'
            )
        value = float(found[1]) * _UNITS[found[2]]
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{duration!r}: a duration is a finite number of seconds, at least 0")
    return value


class DerivedSpec(BaseModel):
    """One derived feature: an aggregate over a window of the entity's events, or a transform.

    ``count`` needs no ``of``; ``since_last`` (seconds since the entity's previous event) and
    ``lag`` (the value ``lag`` events back) need no window; the other aggregates take the
    numeric feature ``of`` over ``window``. Transforms apply to the event's own values, raw or
    derived before them: ``log`` is ln(1 + x) (missing for x <= -1), ``ratio`` is ``of / by``
    (missing when ``by`` is 0), ``bucket`` is how many ``edges`` are at or below x.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    agg: Aggregation | None = None
    transform: Transform | None = None
    of: str | None = Field(None, description="The feature aggregated or transformed.")
    window: str | float | None = Field(None, description='Window length, e.g. "1h".')
    kind: WindowKind = "sliding"
    hop: str | float | None = Field(None, description="How far a hopping window moves.")
    lag: int = Field(1, ge=1, le=100, description="How many events back, for `lag`.")
    by: str | None = Field(None, description="The denominator of a `ratio`.")
    edges: list[float] | None = Field(None, description="Sorted bucket edges, for `bucket`.")

    @model_validator(mode="after")
    def _consistent(self) -> DerivedSpec:
        if (self.agg is None) == (self.transform is None):
            raise ValueError("declare either `agg` (an aggregate) or `transform`, not both")
        needs_of = self.transform is not None or self.agg not in ("count", "since_last")
        if needs_of and not self.of:
            raise ValueError(f"`{self.agg or self.transform}` needs `of`: the feature it reads")
        windowed = self.agg is not None and self.agg not in ("since_last", "lag")
        if windowed and self.window is None:
            raise ValueError(f'`{self.agg}` needs a `window` (e.g. "1h")')
        if not windowed and self.window is not None:
            raise ValueError(f"`{self.agg or self.transform}` takes no window")
        if self.window is not None and self.window_s <= 0:
            raise ValueError("a window is longer than 0 s")
        if (self.kind == "hopping") != (self.hop is not None):
            raise ValueError("a `hop` goes with kind = 'hopping', and a hopping window needs one")
        if self.hop is not None and not 0 < self.hop_s <= self.window_s:
            raise ValueError("a hop is longer than 0 s and at most the window")
        if (self.transform == "ratio") != (self.by is not None):
            raise ValueError("`by` goes with transform = 'ratio', and a ratio needs it")
        if (self.transform == "bucket") != (self.edges is not None):
            raise ValueError("`edges` go with transform = 'bucket', and buckets need them")
        if self.edges is not None and (not self.edges or self.edges != sorted(self.edges)):
            raise ValueError("bucket `edges` are a non-empty, sorted list")
        return self

    @property
    def window_s(self) -> float:
        """The window in seconds (0 without one)."""
        return 0.0 if self.window is None else seconds(self.window)

    @property
    def hop_s(self) -> float:
        """The hop in seconds (0 without one)."""
        return 0.0 if self.hop is None else seconds(self.hop)


class WindowPolicy(BaseModel):
    """The ``[windows]`` table of a feature schema: how late an event may be, how much is kept."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lateness: str | float = Field(
        "0s",
        description="How far behind its entity's newest event an event may be and still update "
        "the windows it belongs to; a later one carries no aggregate (counted).",
    )
    max_events: int = Field(
        1000, ge=1, le=1_000_000, description="Events kept per entity at most (the oldest go)."
    )
    expire_after: str | float = Field(
        "1d",
        description="An entity's history is forgotten after this long without events (at least "
        "its longest window and the lateness).",
    )

    @model_validator(mode="after")
    def _durations(self) -> WindowPolicy:
        seconds(self.lateness)
        seconds(self.expire_after)
        return self


@dataclass
class Derived:
    """What an event gets: its derived values, and whether it came too late to count."""

    values: dict[str, FeatureValue]
    late: bool = False
    replayed: bool = False


@dataclass
class History:
    """One entity's recent events, sorted by (event time, event id): what its windows see.

    Kept by column, so that a window is a slice: ``times``, ``ids``, ``columns`` (the value of
    each aggregated feature, None where missing) and ``kept`` (the aggregates each event got,
    for an event seen again), in the order its ``Windows`` names them. ``watermark`` is the
    newest time accepted; ``added`` the rows (``[time, id, values..., aggregates...]``) added
    since the history was last stored, and ``stored`` how many rows its store holds (-1: it
    must be written afresh).
    """

    times: list[float] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    columns: list[list[float | None]] = field(default_factory=list)
    kept: list[list[Any]] = field(default_factory=list)
    watermark: float = -math.inf
    added: list[list[Any]] = field(default_factory=list)
    stored: int = 0

    @classmethod
    def of(cls, rows: list[list[Any]], width: int) -> History:
        """A history from stored rows in any order (a row stored twice counts once).

        ``width``: how many feature values a row holds before its aggregates.
        """
        unique = {(row[0], row[1]): row for row in rows}
        ordered = [unique[key] for key in sorted(unique)]
        times = [row[0] for row in ordered]
        return cls(
            times,
            [row[1] for row in ordered],
            [[row[2 + i] for row in ordered] for i in range(width)],
            [row[2 + width :] for row in ordered],
            max(times, default=-math.inf),
            [],
            len(rows),
        )

    def rows(self) -> list[list[Any]]:
        """Every row, as stored: ``[time, id, values..., aggregates...]``."""
        return [
            [t, event_id, *(column[i] for column in self.columns), *self.kept[i]]
            for i, (t, event_id) in enumerate(zip(self.times, self.ids, strict=True))
        ]


class Windows:
    """The schema's derived features, compiled once: adds events to histories, as of their time.

    >>> windows = Windows({"s": DerivedSpec(agg="sum", of="amount", window="1h")})
    >>> history = History()
    >>> [windows.add(history, t, str(t), {"amount": 10.0 * t}).values for t in (1, 2, 3601)]
    [{'s': 10.0}, {'s': 30.0}, {'s': 36030.0}]
    """

    def __init__(self, specs: Mapping[str, DerivedSpec], policy: WindowPolicy | None = None):
        policy = policy or WindowPolicy()
        self.specs = dict(specs)
        self.read = aggregated_features(specs)
        column = {name: i for i, name in enumerate(self.read)}
        aggregates = {n: s for n, s in specs.items() if s.agg is not None}
        self.names = list(aggregates)
        self.lateness = seconds(policy.lateness)
        self.max_events = policy.max_events
        self.horizon = max((s.window_s for s in aggregates.values()), default=0.0)
        self.keep_last = max((s.lag for s in aggregates.values() if s.agg == "lag"), default=1)
        self.expire_s = max(seconds(policy.expire_after), self.horizon + self.lateness)
        #: windowed aggregates grouped by window: (kind, window, hop) -> [(name, agg, column)]
        self.windows: dict[tuple[str, float, float], list[tuple[str, str, int]]] = {}
        #: since_last and lag: (name, agg, column, lag)
        self.steps: list[tuple[str, str, int, int]] = []
        for name, spec in aggregates.items():
            col = column.get(spec.of or "", -1)
            if spec.agg in ("since_last", "lag"):
                self.steps.append((name, spec.agg or "", col, spec.lag))
            else:
                group = (spec.kind, spec.window_s, spec.hop_s)
                self.windows.setdefault(group, []).append((name, spec.agg or "", col))
        self.transforms = [(n, s) for n, s in specs.items() if s.transform is not None]
        self.layout = hashlib.blake2b(
            json.dumps([self.read, [(n, s.model_dump()) for n, s in aggregates.items()]]).encode(),
            digest_size=8,
        ).hexdigest()

    def add(
        self, history: History, t: float, event_id: str, features: Mapping[str, FeatureValue]
    ) -> Derived:
        """Add one event (unless held already or too late) and work out its derived features.

        An event the history holds already gets the aggregates it got the first time: a batch
        run again after a crash sends the same values, even where its window was trimmed since.
        """
        times, ids = history.times, history.ids
        if not history.columns and self.read:
            history.columns = [[] for _ in self.read]
        at = bisect.bisect_left(times, t)
        while at < len(times) and times[at] == t and ids[at] < event_id:
            at += 1
        if at < len(times) and times[at] == t and ids[at] == event_id:
            again: dict[str, FeatureValue] = {
                n: v for n, v in zip(self.names, history.kept[at], strict=True) if v is not None
            }
            return Derived(self._transformed(features, again), replayed=True)
        if t < history.watermark - self.lateness:
            return Derived(self._transformed(features, {}), late=True)
        read = [_number(features.get(name)) for name in self.read]
        times.insert(at, t)
        ids.insert(at, event_id)
        for column, value in zip(history.columns, read, strict=True):
            column.insert(at, value)
        if t > history.watermark:
            history.watermark = t
        values = self._aggregates(history, at, t)
        kept = [values.get(name) for name in self.names]
        history.kept.insert(at, kept)
        history.added.append([t, event_id, *read, *kept])
        self._prune(history)
        return Derived(self._transformed(features, values))

    def _aggregates(self, history: History, at: int, t: float) -> dict[str, FeatureValue]:
        """The aggregates of the event at position ``at`` (time ``t``), over the rows to it."""
        times, columns = history.times, history.columns
        out: dict[str, FeatureValue] = {}
        for name, agg, col, lag in self.steps:
            if agg == "since_last":
                if at > 0:
                    out[name] = t - times[at - 1]
            elif at >= lag and (value := columns[col][at - lag]) is not None:
                out[name] = value
        end = at + 1
        for (kind, window, hop), specs in self.windows.items():
            if kind == "tumbling":
                start = math.floor(t / window) * window
            elif kind == "hopping":
                start = (math.floor((t - window) / hop) + 1) * hop
            else:
                start = math.nextafter(t - window, math.inf)  # (t - window, t]
            first = bisect.bisect_left(times, start, 0, end)
            for name, agg, col in specs:
                if agg == "count":
                    out[name] = float(end - first)
                    continue
                values = columns[col][first:end]
                if None in values:
                    values = [v for v in values if v is not None]
                result = _summary(agg, values)  # type: ignore[arg-type]
                if result is not None and math.isfinite(result):
                    out[name] = result
        return out

    def _prune(self, history: History) -> None:
        """Forget what no acceptable event's window can reach; keep what lags look back on."""
        times = history.times
        oldest = history.watermark - self.lateness - self.horizon
        if times[0] >= oldest and len(times) <= self.max_events:
            return
        cut = bisect.bisect_left(times, oldest)
        cut = min(cut, max(len(times) - self.keep_last, 0))
        cut = max(cut, len(times) - self.max_events)
        if cut > 0:
            del times[:cut]
            del history.ids[:cut]
            del history.kept[:cut]
            for column in history.columns:
                del column[:cut]

    def _transformed(
        self, features: Mapping[str, Any], values: dict[str, FeatureValue]
    ) -> dict[str, FeatureValue]:
        """``values`` with the transforms added, in declaration order (each sees those before)."""
        if not self.transforms:
            return values
        seen = {**features, **values}
        for name, spec in self.transforms:
            x = _number(seen.get(spec.of or ""))
            value: float | None = None
            if x is not None:
                if spec.transform == "log":
                    value = math.log1p(x) if x > -1 else None
                elif spec.transform == "bucket":
                    value = float(bisect.bisect_right(spec.edges or [], x))
                else:
                    by = _number(seen.get(spec.by or ""))
                    value = x / by if by else None
            if value is not None and math.isfinite(value):
                values[name] = value
                seen[name] = value
        return values


def aggregated_features(specs: Mapping[str, DerivedSpec]) -> list[str]:
    """The features the aggregates read, in a fixed order (a history row's value columns)."""
    return sorted({s.of for s in specs.values() if s.agg is not None and s.of is not None})


def _summary(agg: str, values: list[float]) -> float | None:
    try:
        return _summarised(agg, values)
    except OverflowError:  # a sum beyond floats: no value rather than a wrong one
        return None


def _summarised(agg: str, values: list[float]) -> float | None:
    if agg == "sum":
        return math.fsum(values)
    if not values:
        return None
    if agg == "mean":
        return math.fsum(values) / len(values)
    if agg == "min":
        return min(values)
    if agg == "max":
        return max(values)
    if agg == "last":
        return values[-1]
    mean = math.fsum(values) / len(values)  # std: of the population (0 for one value)
    return math.sqrt(math.fsum((v - mean) ** 2 for v in values) / len(values))


def _number(value: Any) -> float | None:
    """A feature value as a float for aggregation; None if missing or not a number."""
    if type(value) is float:
        return value if math.isfinite(value) else None
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def check_derived(specs: Mapping[str, DerivedSpec], raw: Mapping[str, str]) -> None:
    """A ValueError unless every derived feature reads a numeric feature declared before it.

    ``raw``: the schema's own features and their types.
    """
    known = {n for n, kind in raw.items() if kind in ("float", "int", "bool")}
    for name, spec in specs.items():
        if name in raw:
            raise ValueError(f"derived feature {name!r} has the name of a raw feature")
        for needed in (spec.of, spec.by):
            if needed is None:
                continue
            if spec.agg is not None and needed not in known - set(specs):
                raise ValueError(
                    f"derived {name!r}: {needed!r} is not a numeric raw feature of the schema "
                    "(aggregates read raw features)"
                )
            if needed not in known:
                raise ValueError(
                    f"derived {name!r}: {needed!r} is not a numeric feature declared before it"
                )
        known.add(name)
