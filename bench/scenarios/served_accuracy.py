"""Served accuracy: what the loop actually served, against River's prequential accuracy in-process.

For each stream of ``bench.loop_runs`` (SEA and Agrawal with abrupt and gradual drift, and River's
bundled Bananas and Phishing), the five services run as in production: every event is
predicted by the version in serving, its label comes back late, training learns it and
publishes versions, serving swaps them in. The figure is the accuracy of the predictions that
were served, over the whole stream; the baseline is the same default model learning the same
rows test-then-train in this process, which always predicts with everything learned so far.
The gap is the price of serving: labels arrive late, versions come every N examples, and the
first version is untrained.
"""

from __future__ import annotations

from bench.harness import Context, Figure, median_figure
from bench.loop_runs import (
    LoopStream,
    loop_reports,
    loop_streams,
    prequential_hits,
    served_accuracy,
)

SCENARIO = "served accuracy"


def _figure(stream: LoopStream, served: list[float], prequential: float) -> Figure:
    return median_figure(
        SCENARIO,
        f"{stream.label}: served accuracy vs prequential",
        "%",
        [100 * a for a in served],
        [100 * prequential],
        target=">= 0.97x prequential",
        met=lambda v, b: b is not None and v >= 0.97 * b,
        note=f"whole stream; {stream.cadence}",
    )


def run(ctx: Context) -> list[Figure]:
    """Per stream: median served accuracy over the runs, and River's prequential accuracy."""
    figures = []
    for stream in loop_streams(ctx.quick):
        hits = prequential_hits(stream)
        prequential = sum(hits) / len(hits)
        served = [served_accuracy(report) for report in loop_reports(ctx, stream)]
        figures.append(_figure(stream, served, prequential))
    return figures
