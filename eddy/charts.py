"""Charts as inline SVG, for a report that opens offline: no script, no library, no network.

>>> svg = line_chart("Served accuracy", {"served": [(0, 0.5), (10, 0.75)]}, y_percent=True)
>>> svg.count('class="series"'), "<script" in svg
(1, False)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape

WIDTH, HEIGHT = 760, 260
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 28, 40
#: Series colours (colour-blind safe, after Okabe and Ito), then marker colours by kind.
COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#000000")
MARKER_COLOURS = {"drift": "#D55E00", "version": "#6b6b6b"}


@dataclass(frozen=True)
class Marker:
    """A vertical line at ``x`` with a short label: a drift event, a version swap."""

    x: float
    label: str
    kind: str = "version"


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high].

    >>> _ticks(0, 1)
    [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    """
    if high <= low:
        return [low]
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    return [round(first + i * step, 12) for i in range(int((high - first) / step + 1e-9) + 1)]


def _label(value: float, percent: bool) -> str:
    if percent:
        return f"{value * 100:.0f}%"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:g}"


def line_chart(
    title: str,
    series: Mapping[str, Sequence[tuple[float, float]]],
    markers: Sequence[Marker] = (),
    x_label: str = "",
    y_label: str = "",
    y_percent: bool = False,
    y_from_zero: bool = False,
) -> str:
    """An SVG line chart of each series (name → (x, y) points), with vertical markers."""
    points = [p for values in series.values() for p in values if math.isfinite(p[1])]
    if not points:
        return _empty(title, "nothing to draw yet")
    xs = [x for x, _ in points] + [m.x for m in markers]
    x_low, x_high = min(xs), max(xs)
    y_low, y_high = min(y for _, y in points), max(y for _, y in points)
    if y_from_zero or y_percent:
        y_low = min(y_low, 0.0)
    if y_percent:
        y_high = max(y_high, 1.0) if y_high > 0.5 else y_high
    if y_high == y_low:
        y_high = y_low + (abs(y_low) or 1.0)
    if x_high == x_low:
        x_high = x_low + 1
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def sx(x: float) -> float:
        return LEFT + (x - x_low) / (x_high - x_low) * plot_w

    def sy(y: float) -> float:
        return TOP + plot_h - (y - y_low) / (y_high - y_low) * plot_h

    parts = [_open(title)]
    for tick in _ticks(y_low, y_high):
        y = sy(tick)
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{_label(tick, y_percent)}</text>"
        )
    for tick in _ticks(x_low, x_high, 6):
        x = sx(tick)
        parts.append(
            f'<text x="{x:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle">'
            f"{_label(tick, False)}</text>"
        )
    parts.append(
        f'<text x="{LEFT + plot_w / 2:.0f}" y="{HEIGHT - 6}" text-anchor="middle" class="axis">'
        f"{escape(x_label)}</text>"
        f'<text x="14" y="{TOP + plot_h / 2:.0f}" text-anchor="middle" class="axis" '
        f'transform="rotate(-90 14 {TOP + plot_h / 2:.0f})">{escape(y_label)}</text>'
    )
    for row, marker in enumerate(sorted(markers, key=lambda m: m.x)):
        x = sx(marker.x)
        colour = MARKER_COLOURS.get(marker.kind, "#6b6b6b")
        parts.append(
            f'<g class="marker {escape(marker.kind)}"><line x1="{x:.1f}" x2="{x:.1f}" '
            f'y1="{TOP}" y2="{TOP + plot_h}" stroke="{colour}" stroke-dasharray="4 3"/>'
            f'<text x="{x + 3:.1f}" y="{TOP + 10 + 12 * (row % 3)}" fill="{colour}">'
            f"{escape(marker.label)}</text>"
            f"</g>"
        )
    widths = [24 + 7 * len(name) for name in series]
    legend_x = WIDTH - RIGHT - sum(widths)
    for i, (name, values) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        drawn = [(sx(x), sy(y)) for x, y in values if math.isfinite(y)]
        if drawn:
            path = " ".join(
                f"{'M' if j == 0 else 'L'}{x:.1f},{y:.1f}" for j, (x, y) in enumerate(drawn)
            )
            if len(drawn) == 1:  # a single point: a short tick, so that it shows
                path += f" L{drawn[0][0] + 2:.1f},{drawn[0][1]:.1f}"
            parts.append(
                f'<path class="series" d="{path}" fill="none" stroke="{colour}" '
                f'stroke-width="2"><title>{escape(name)}</title></path>'
            )
        if len(series) > 1:
            parts.append(
                f'<rect x="{legend_x}" y="8" width="10" height="10" fill="{colour}"/>'
                f'<text x="{legend_x + 14}" y="17">{escape(name)}</text>'
            )
            legend_x += widths[i]
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(title: str, counts: Mapping[str, float], unit: str = "") -> str:
    """A horizontal SVG bar chart, largest first."""
    if not counts:
        return _empty(title, "none")
    items = sorted(counts.items(), key=lambda item: -item[1])
    height = TOP + 26 * len(items) + 12
    largest = max(value for _, value in items) or 1
    label_w = 150
    parts = [_open(title, height)]
    for i, (name, value) in enumerate(items):
        y = TOP + 26 * i
        width = (WIDTH - label_w - 90) * value / largest
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 15}" text-anchor="end">{escape(name)}</text>'
            f'<rect class="series" x="{label_w}" y="{y + 3}" width="{max(width, 1):.1f}" '
            f'height="16" fill="{COLOURS[0]}"><title>{escape(name)}</title></rect>'
            f'<text x="{label_w + width + 6:.1f}" y="{y + 15}">{value:,.0f}{escape(unit)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _open(title: str, height: int = HEIGHT) -> str:
    return (
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" '
        f'role="img" aria-label="{escape(title)}"><text x="{LEFT}" y="18" class="title">'
        f"{escape(title)}</text>"
    )


def _empty(title: str, why: str) -> str:
    return f'{_open(title, 60)}<text x="{LEFT}" y="44" class="empty">{escape(why)}</text></svg>'
