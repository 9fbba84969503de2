"""Derived features are point-in-time: each equals a brute-force computation over the events."""

from __future__ import annotations

import json
import math
import random
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.core.aggregates import DerivedSpec, History, WindowPolicy, Windows, seconds
from services.core.feature_schema import FeatureSchema
from services.core.rejection import Rejection
from services.ingest.validation import validate_raw

SPECS = {
    "n_slide": DerivedSpec(agg="count", window="60s"),
    "sum_slide": DerivedSpec(agg="sum", of="x", window="60s"),
    "mean_tumble": DerivedSpec(agg="mean", of="x", window="100s", kind="tumbling"),
    "max_hop": DerivedSpec(agg="max", of="x", window="90s", kind="hopping", hop="40s"),
    "min_hop": DerivedSpec(agg="min", of="y", window="90s", kind="hopping", hop="30s"),
    "std_slide": DerivedSpec(agg="std", of="x", window="45s"),
    "last_y": DerivedSpec(agg="last", of="y", window="120s"),
    "n_tumble": DerivedSpec(agg="count", window="50s", kind="tumbling"),
    "gap": DerivedSpec(agg="since_last"),
    "x_back_2": DerivedSpec(agg="lag", of="x", lag=2),
    "log_x": DerivedSpec(transform="log", of="x"),
    "x_per_mean": DerivedSpec(transform="ratio", of="x", by="mean_tumble"),
    "x_bucket": DerivedSpec(transform="bucket", of="x", edges=[-1.0, 0.0, 1.0]),
}
LATENESS = 20.0
HORIZON = 120.0  # the longest window: a history keeps LATENESS + HORIZON behind its newest


@dataclass(frozen=True)
class Event:
    t: float
    id: str
    x: float
    y: float | None


def _stream(seed: int, n: int = 300) -> list[Event]:
    """Events mostly in order, some out of order, some far too late, some sent twice."""
    rng = random.Random(seed)
    events: list[Event] = []
    clock = 1_000.0
    for i in range(n):
        clock += rng.expovariate(1 / 4)
        t = clock
        if rng.random() < 0.2:
            t -= rng.uniform(0, 30)  # within or beyond the 20 s lateness
        y = None if rng.random() < 0.3 else round(rng.gauss(0, 1), 3)
        events.append(Event(round(t, 3), f"e{i}", round(rng.gauss(0, 2), 3), y))
        if rng.random() < 0.05:
            events.append(events[rng.randrange(len(events))])  # a replay
    return events


def _window(spec: DerivedSpec, t: float, e: Event) -> bool:
    """Whether ``e`` lies in the window of an event at ``t``, from the definitions alone."""
    w = spec.window_s
    if spec.kind == "sliding":
        return t - w < e.t <= t
    if spec.kind == "tumbling":
        return math.floor(e.t / w) == math.floor(t / w)
    starts = []  # every hop-aligned window holding t; the oldest one counts
    k = math.floor(t / spec.hop_s)
    while k * spec.hop_s + w > t:
        starts.append(k * spec.hop_s)
        k -= 1
    return min(starts) <= e.t <= t


def _brute(events: list[Event]) -> list[tuple[dict[str, float], bool]]:
    accepted: dict[str, Event] = {}
    first: dict[str, dict[str, float]] = {}
    watermark = -math.inf
    out = []
    for e in events:
        # an event seen again is known while the history still holds it; an older one is late
        kept = e.id in accepted and e.t >= watermark - LATENESS - HORIZON
        if not kept and e.t < watermark - LATENESS:
            values: dict[str, float] = {"log_x": math.log1p(e.x)} if e.x > -1 else {}
            values["x_bucket"] = float(sum(edge <= e.x for edge in (-1.0, 0.0, 1.0)))
            out.append((values, True))
            continue
        if kept:  # the values it got the first time
            out.append((first[e.id], False))
            continue
        accepted[e.id] = e
        watermark = max(watermark, e.t)
        upto = sorted(
            (a for a in accepted.values() if (a.t, a.id) <= (e.t, e.id)), key=lambda a: (a.t, a.id)
        )
        values = {}
        for name, spec in SPECS.items():
            if spec.agg == "since_last":
                if len(upto) > 1:
                    values[name] = e.t - upto[-2].t
            elif spec.agg == "lag":
                if len(upto) > 2:
                    values[name] = upto[-3].x
            elif spec.agg is not None:
                inside = [a for a in upto if _window(spec, e.t, a)]
                if spec.agg == "count":
                    values[name] = float(len(inside))
                    continue
                got = [getattr(a, spec.of or "") for a in inside]
                got = [v for v in got if v is not None]
                if spec.agg == "sum":
                    values[name] = sum(got)
                elif got and spec.agg == "mean":
                    values[name] = sum(got) / len(got)
                elif got and spec.agg in ("min", "max"):
                    values[name] = min(got) if spec.agg == "min" else max(got)
                elif got and spec.agg == "last":
                    values[name] = got[-1]
                elif got:
                    mean = sum(got) / len(got)
                    values[name] = math.sqrt(sum((v - mean) ** 2 for v in got) / len(got))
        if e.x > -1:
            values["log_x"] = math.log1p(e.x)
        if values.get("mean_tumble"):
            values["x_per_mean"] = e.x / values["mean_tumble"]
        values["x_bucket"] = float(sum(edge <= e.x for edge in (-1.0, 0.0, 1.0)))
        first[e.id] = values
        out.append((values, False))
    return out


def _derive(events: list[Event], batch: int = 1) -> list[tuple[dict[str, float], bool]]:
    """Through Windows, the rows stored as JSON and read back every ``batch`` events."""
    windows = Windows(SPECS, WindowPolicy(lateness=LATENESS, max_events=10_000))
    stored: list[list[object]] = []
    out = []
    for start in range(0, len(events), batch):
        history = History.of(json.loads(json.dumps(stored)), len(windows.read))
        for e in events[start : start + batch]:
            features = {"x": e.x, **({"y": e.y} if e.y is not None else {})}
            derived = windows.add(history, e.t, e.id, features)
            out.append((derived.values, derived.late))
        stored = history.rows()
    return out


def _same(got: dict[str, float], expected: dict[str, float]) -> bool:
    return got.keys() == expected.keys() and all(
        math.isclose(got[k], expected[k], rel_tol=1e-9, abs_tol=1e-9) for k in got
    )


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("batch", [1, 37])
def test_every_aggregate_equals_a_brute_force_computation_with_late_and_replayed_events(
    seed: int, batch: int
) -> None:
    events = _stream(seed)
    expected = _brute(events)
    got = _derive(events, batch)
    assert sum(late for _, late in expected) > 0  # the stream has events too late to count
    assert len({e.id for e in events}) < len(events)  # and replays
    for i, ((values, late), (want, want_late)) in enumerate(zip(got, expected, strict=True)):
        assert late == want_late and _same(values, want), (i, events[i], values, want)


def test_replaying_the_same_input_gives_the_same_values() -> None:
    events = _stream(11)
    assert _derive(events, 1) == _derive(events, 50)


def test_an_event_seen_again_is_counted_once_and_gets_its_own_values_again() -> None:
    windows = Windows({"n": DerivedSpec(agg="count", window="1h")}, WindowPolicy(lateness="1m"))
    history = History()
    first = windows.add(history, 10.0, "a", {}).values
    windows.add(history, 5.0, "late but in time", {})
    again = windows.add(history, 10.0, "a", {})
    assert again.replayed and again.values == first == {"n": 1.0}  # not {"n": 2.0}
    assert windows.add(history, 30.0, "c", {}).values == {"n": 3.0}


def test_history_is_bounded_by_its_windows_and_by_max_events() -> None:
    specs = {
        "n": DerivedSpec(agg="count", window="10s"),
        "back": DerivedSpec(agg="lag", of="x", lag=3),
    }
    windows = Windows(specs, WindowPolicy(lateness="5s"))
    history = History()
    for t in range(1000):
        windows.add(history, float(t), str(t), {"x": float(t)})
    assert len(history.times) == 16  # 10 s window + 5 s lateness, both ends in
    assert windows.add(history, 1000.0, "z", {"x": 0.0}).values == {"n": 10.0, "back": 997.0}
    capped = Windows({"n": DerivedSpec(agg="count", window="1d")}, WindowPolicy(max_events=7))
    history = History()
    for t in range(100):
        capped.add(history, float(t), str(t), {})
    assert len(history.times) == len(history.kept) == 7


def test_lags_look_back_past_the_window_horizon() -> None:
    windows = Windows(
        {"back": DerivedSpec(agg="lag", of="x", lag=2), "gap": DerivedSpec(agg="since_last")}
    )
    history = History()
    for t in (0.0, 1e6, 2e6):
        derived = windows.add(history, t, str(t), {"x": t})
    assert derived.values == {"back": 0.0, "gap": 1e6}


def test_a_sum_beyond_floats_gives_no_value_rather_than_an_error() -> None:
    windows = Windows({"s": DerivedSpec(agg="sum", of="x", window="1h")})
    history = History()
    windows.add(history, 1.0, "a", {"x": 1.7e308})
    assert windows.add(history, 2.0, "b", {"x": 1.7e308}).values == {}


@pytest.mark.parametrize(
    ("table", "says"),
    [
        ({"agg": "sum", "window": "1h"}, "needs `of`"),
        ({"agg": "mean", "of": "amount"}, "needs a `window`"),
        ({"agg": "lag", "of": "amount", "window": "1h"}, "takes no window"),
        ({"agg": "sum", "of": "amount", "window": "1 hour"}, "not a duration"),
        ({"agg": "sum", "of": "amount", "window": "1h", "kind": "hopping"}, "needs one"),
        ({"agg": "sum", "of": "amount", "window": "1h", "kind": "hopping", "hop": "2h"}, "at most"),
        ({"agg": "sum", "of": "note", "window": "1h"}, "not a numeric raw feature"),
        ({"agg": "sum", "of": "nope", "window": "1h"}, "not a numeric raw feature"),
        ({"transform": "ratio", "of": "amount"}, "needs it"),
        ({"transform": "bucket", "of": "amount", "edges": [3, 1]}, "sorted"),
        ({"transform": "log", "of": "later"}, "declared before it"),
        ({"agg": "sum", "transform": "log", "of": "amount"}, "not both"),
    ],
)
def test_a_bad_derived_feature_is_refused_with_what_to_fix(table: dict, says: str) -> None:
    schema = {
        "name": "t",
        "features": {"amount": {"type": "float"}, "note": {"type": "string"}},
        "derived": {"bad": table, "later": {"transform": "log", "of": "amount"}},
    }
    with pytest.raises(ValueError, match=says):
        FeatureSchema.model_validate(schema)


def test_a_derived_feature_is_a_model_feature_and_an_optional_number_to_serving() -> None:
    schema = FeatureSchema.model_validate(
        {
            "name": "t",
            "features": {"amount": {"type": "float"}},
            "derived": {"spend_1h": {"agg": "sum", "of": "amount", "window": "1h"}},
        }
    )
    assert schema.model_features() == ["amount", "spend_1h"]
    served = schema.served()
    assert served.features["spend_1h"].type == "float" and not served.features["spend_1h"].required
    assert served.model_features() == schema.model_features()


def test_durations_read_as_people_write_them() -> None:
    assert [seconds(d) for d in ("90s", "15m", "1.5h", "7d", 3)] == [90, 900, 5400, 604800, 3]
    with pytest.raises(ValueError, match="not a duration"):
        seconds("soon")


def test_the_schema_in_the_docs_is_valid_and_a_raw_event_cannot_send_a_derived_feature() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "features.md").read_text()
    blocks = re.findall(r"```toml\n(.*?)```", docs, re.S)
    schema = FeatureSchema.model_validate(tomllib.loads("\n".join(blocks)))
    assert len(schema.derived) == 8 and schema.target.type == "binary"
    event = {"amount": 12.0, "channel": "web", "day": 3, "email": "a@b.c"}
    raw = {"event_id": "e1", "entity_id": "card-1", "ts": "2026-12-05T07:00:00Z"}
    ok = validate_raw(json.dumps({**raw, "features": event}).encode(), schema, 65536, pii_key=b"k")
    assert not isinstance(ok, Rejection) and "spend_1h" not in ok.features
    sent = {**event, "spend_1h": 5.0}
    refused = validate_raw(json.dumps({**raw, "features": sent}).encode(), schema, 65536)
    assert isinstance(refused, Rejection) and refused.reason == "unknown_field"
