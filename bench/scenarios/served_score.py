"""Served score: what the loop actually served, against the same models learned in this process.

For every stream of ``bench.loop_runs`` (binary: SEA and Agrawal with abrupt and gradual drift,
Bananas, Phishing; multi-class: LED with a drift, ImageSegments; regression: Friedman with a
drift, TrumpApproval), labels 100 events late, default settings:

- one model (the target's default): served accuracy (or MAE) over the whole stream against the
  same model test-then-train in this process with the labels as late. The gap is what the
  loop costs: versions published every few hundred examples, the first one untrained, the
  delay of each hop.
- selection among three candidates and the no-change baseline (``infra/models/<task>.toml``:
  a linear model, a Hoeffding adaptive tree, an adaptive random forest): served score against
  the best single candidate in this process with the same label delay, and whether the loop
  beat every single candidate.
"""

from __future__ import annotations

from bench.harness import Context, Figure, median_figure
from bench.loop_runs import (
    LoopStream,
    candidate_specs,
    in_process_score,
    is_regression,
    loop_reports,
    loop_streams,
    served_score,
)
from eddy.demo import LoopReport

SCENARIO = "served score"


def _one_model(stream: LoopStream, reports: list[LoopReport]) -> Figure:
    regression = is_regression(stream)
    baseline = in_process_score(stream, candidate_specs(stream)[0])
    served = [served_score(report) for report in reports]
    if regression:
        return median_figure(
            SCENARIO,
            f"{stream.label}: served MAE vs the same model in process, labels as late",
            "",
            served,
            [baseline],
            target="<= 1.03x in process",
            met=lambda v, b: b is not None and v <= 1.03 * b,
            note=f"whole stream; {stream.cadence}",
        )
    return median_figure(
        SCENARIO,
        f"{stream.label}: served accuracy vs the same model in process, labels as late",
        "%",
        [100 * a for a in served],
        [100 * baseline],
        target=">= 0.97x in process",
        met=lambda v, b: b is not None and v >= 0.97 * b,
        note=f"whole stream; {stream.cadence}",
    )


def _selection(stream: LoopStream, reports: list[LoopReport]) -> Figure:
    regression = is_regression(stream)
    singles = {spec.name: in_process_score(stream, spec) for spec in candidate_specs(stream)}
    best_name = (min if regression else max)(singles, key=lambda name: singles[name])
    best = singles[best_name]
    served = [served_score(report) for report in reports]
    served_median = sorted(served)[len(served) // 2]
    beats_all = served_median < best if regression else served_median > best
    shown = ", ".join(
        f"{name} {value:.3f}" if regression else f"{name} {100 * value:.1f}%"
        for name, value in sorted(singles.items())
    )
    note = (
        f"in process, labels as late: {shown}; best single: {best_name}; selection "
        f"{'beats' if beats_all else 'does not beat'} every single candidate; {stream.cadence}"
    )
    if regression:
        return median_figure(
            SCENARIO,
            f"{stream.label}: served MAE vs the best single candidate in process",
            "",
            served,
            [best],
            target="<= 1.02x best single",
            met=lambda v, b: b is not None and v <= 1.02 * b,
            note=note,
        )
    return median_figure(
        SCENARIO,
        f"{stream.label}: served accuracy vs the best single candidate in process",
        "%",
        [100 * a for a in served],
        [100 * best],
        target=">= 0.98x best single",
        met=lambda v, b: b is not None and v >= 0.98 * b,
        note=note,
    )


def run(ctx: Context) -> list[Figure]:
    """Per stream: the one-model figures, then the selection figures."""
    figures = [_one_model(stream, loop_reports(ctx, stream)) for stream in loop_streams(ctx.quick)]
    for stream in loop_streams(ctx.quick):
        racing = stream.with_candidates()
        figures.append(_selection(racing, loop_reports(ctx, racing)))
    return figures
