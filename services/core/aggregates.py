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

An event seen again (a replay after a crash) is not added twice: its aggregates are worked out
again as of its time. An event more than the schema's ``lateness`` behind the newest event of
its entity is too late: it updates no window and carries no aggregate (transforms of its own
features still apply).

>>> spec = DerivedSpec(agg="sum", of="amount", window="1h")
>>> spec.window_s
3600.0
>>> history = History()
>>> [history.add(t, str(t), {"amount": 10.0 * t}, {"s": spec}).values for t in (1, 2, 3601)]
[{'s': 10.0}, {'s': 30.0}, {'s': 36030.0}]
"""

from __future__ import annotations

import bisect
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

    def window_start(self, t: float) -> float:
        """The earliest event time the window of an event at ``t`` covers (inclusive)."""
        if self.kind == "tumbling":
            return math.floor(t / self.window_s) * self.window_s
        if self.kind == "hopping":
            return (math.floor((t - self.window_s) / self.hop_s) + 1) * self.hop_s
        return math.nextafter(t - self.window_s, math.inf)  # (t - window, t]


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

    ``rows`` are ``[time, event_id, value of each aggregated feature..., each aggregate it
    got...]``; ``watermark`` is the newest event time accepted. A plain value, so that it goes
    to Redis and back as JSON; ``layout`` names the columns, and a history kept under another
    layout (the schema's derived features changed) is started afresh.
    """

    rows: list[list[Any]] = field(default_factory=list)
    watermark: float = -math.inf

    def add(
        self,
        t: float,
        event_id: str,
        features: Mapping[str, FeatureValue],
        specs: Mapping[str, DerivedSpec],
        policy: WindowPolicy | None = None,
    ) -> Derived:
        """Add one event (unless held already or too late) and work out its derived features.

        An event the history holds already gets the aggregates it got the first time: a batch
        run again after a crash sends the same values, even where its window was trimmed since.
        """
        policy = policy or WindowPolicy()
        read = aggregated_features(specs)
        names = [name for name, spec in specs.items() if spec.agg is not None]
        key = [t, event_id]
        at = bisect.bisect_left(self.rows, key, key=lambda row: row[:2])
        if at < len(self.rows) and self.rows[at][:2] == key:
            kept = self.rows[at][2 + len(read) :]
            values = {n: v for n, v in zip(names, kept, strict=True) if v is not None}
            return Derived(transforms({**features, **values}, specs, values), replayed=True)
        if t < self.watermark - seconds(policy.lateness):
            return Derived(transforms(dict(features), specs), late=True)
        row = [t, event_id, *(_number(features.get(name)) for name in read)]
        self.rows.insert(at, row)
        self.watermark = max(self.watermark, t)
        values = aggregate(self.rows[: at + 1], t, specs, read)
        row.extend(values.get(name) for name in names)
        self._prune(specs, policy)
        return Derived(transforms({**features, **values}, specs, values))

    def _prune(self, specs: Mapping[str, DerivedSpec], policy: WindowPolicy) -> None:
        """Forget what no acceptable event's window can reach; keep what lags look back on."""
        horizon = max((s.window_s for s in specs.values()), default=0.0)
        oldest = self.watermark - seconds(policy.lateness) - horizon
        keep_last = max((s.lag for s in specs.values() if s.agg == "lag"), default=1)
        cut = bisect.bisect_left(self.rows, oldest, key=lambda row: row[0])
        cut = min(cut, max(len(self.rows) - keep_last, 0))
        cut = max(cut, len(self.rows) - policy.max_events)
        if cut > 0:
            del self.rows[:cut]

    def to_json(self, layout: str = "") -> dict[str, Any]:
        """The history as JSON-ready data."""
        return {"w": self.watermark, "e": self.rows, "l": layout}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None, layout: str = "") -> History:
        """A history back from ``to_json``; an empty one for None or another layout."""
        if not data or data.get("l", "") != layout:
            return cls()
        return cls([list(row) for row in data["e"]], float(data["w"]))


def layout(specs: Mapping[str, DerivedSpec]) -> str:
    """Names a history's columns: the aggregated features, then the aggregates, each spelt out."""
    aggregates = {n: s.model_dump(exclude_defaults=True) for n, s in specs.items() if s.agg}
    return json.dumps([aggregated_features(specs), aggregates], sort_keys=True)


def aggregated_features(specs: Mapping[str, DerivedSpec]) -> list[str]:
    """The features the aggregates read, in a fixed order (a history row's value columns)."""
    return sorted({s.of for s in specs.values() if s.agg is not None and s.of is not None})


def aggregate(
    rows: list[list[Any]], t: float, specs: Mapping[str, DerivedSpec], read: list[str]
) -> dict[str, FeatureValue]:
    """The aggregates of an event at ``t`` whose history up to and including it is ``rows``."""
    column = {name: 2 + i for i, name in enumerate(read)}
    times = [row[0] for row in rows]
    out: dict[str, FeatureValue] = {}
    for name, spec in specs.items():
        if spec.agg is None:
            continue
        if spec.agg == "since_last":
            if len(rows) > 1:
                out[name] = t - rows[-2][0]
            continue
        if spec.agg == "lag":
            if len(rows) > spec.lag:
                value = rows[-1 - spec.lag][column[spec.of or ""]]
                if value is not None:
                    out[name] = value
            continue
        start = bisect.bisect_left(times, spec.window_start(t))
        if spec.agg == "count":
            out[name] = float(len(rows) - start)
            continue
        col = column[spec.of or ""]
        values = [row[col] for row in rows[start:] if row[col] is not None]
        result = _summary(spec.agg, values)
        if result is not None:
            out[name] = result
    return out


def _summary(agg: str, values: list[float]) -> float | None:
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


def transforms(
    features: dict[str, Any],
    specs: Mapping[str, DerivedSpec],
    out: dict[str, FeatureValue] | None = None,
) -> dict[str, FeatureValue]:
    """The transforms, in declaration order, over the event's values (each sees those before)."""
    out = {} if out is None else out
    for name, spec in specs.items():
        if spec.transform is None:
            continue
        x = _number(features.get(spec.of or ""))
        value: float | None = None
        if x is not None:
            if spec.transform == "log":
                value = math.log1p(x) if x > -1 else None
            elif spec.transform == "bucket":
                value = float(bisect.bisect_right(spec.edges or [], x))
            else:
                by = _number(features.get(spec.by or ""))
                value = x / by if by else None
        if value is not None and math.isfinite(value):
            out[name] = value
            features[name] = value
    return out


def _number(value: Any) -> float | None:
    """A feature value as a float for aggregation; None if missing or not a number."""
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
