"""The report page: every chart present even with nothing to draw, and no markup from data."""

from __future__ import annotations

from eddy.charts import Marker, bar_chart, line_chart
from eddy.report import ReportData, render


def test_a_report_of_an_empty_stack_has_every_chart_saying_there_is_nothing_yet() -> None:
    page = render(ReportData("m", "binary", "accuracy"))
    assert page.count('class="chart"') == 6
    assert page.count("nothing to draw yet") == 5 and "<script" not in page


def test_names_from_the_data_are_text_never_markup() -> None:
    hostile = "<img src=x onerror=alert(1)>"
    chart = line_chart(hostile, {hostile: [(0, 1.0), (1, 2.0)]}, [Marker(0.5, hostile, "drift")])
    bars = bar_chart("reasons", {hostile: 3})
    page = render(ReportData(hostile, "binary", "accuracy", leaderboard={hostile: [(1, 0.5)]}))
    for text in (chart, bars, page):
        assert "<img" not in text and "&lt;img src=x onerror=alert(1)&gt;" in text


def test_markers_close_together_take_different_rows_so_their_labels_do_not_overlap() -> None:
    chart = line_chart("s", {"a": [(0, 0.0), (100, 1.0)]}, [Marker(50, "v2"), Marker(51, "v3")])
    rows = {
        part.split('" fill')[0]
        for part in chart.split('<text x="')[1:]
        if "v2" in part or "v3" in part
    }
    assert len({row.split('y="')[1] for row in rows}) == 2


def test_a_single_point_still_draws_a_visible_mark() -> None:
    chart = line_chart("one", {"a": [(5, 0.5)]})
    path = chart.split('d="')[1].split('"')[0]
    assert path.count("L") == 1  # a short tick from the point


def test_windows_of_an_empty_stream_are_none() -> None:
    from eddy.report import _spacing

    assert _spacing(0) == (1, 50) and _spacing(10_000) == (50, 500)
