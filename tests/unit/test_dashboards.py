"""The committed Grafana dashboards are exactly what infra/grafana/build.py writes."""

from __future__ import annotations

import runpy
from pathlib import Path

FOLDER = Path(__file__).resolve().parents[2] / "infra" / "grafana" / "dashboards"


def test_committed_dashboards_match_the_generator() -> None:
    rendered = runpy.run_path(str(FOLDER.parent / "build.py"))["rendered"]()
    committed = {p.name: p.read_text(encoding="utf-8") for p in FOLDER.glob("*.json")}
    assert sorted(committed) == sorted(rendered), "a dashboard file has no generator entry"
    stale = [name for name, text in rendered.items() if committed[name] != text]
    assert stale == [], f"run `python infra/grafana/build.py`: {stale} differ"


def test_there_is_a_dashboard_for_the_loop_quality_data_and_health() -> None:
    assert {p.stem for p in FOLDER.glob("*.json")} == {
        "eddy-loop",
        "eddy-model",
        "eddy-data",
        "eddy-health",
    }
