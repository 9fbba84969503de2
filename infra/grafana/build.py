"""Writes Eddy's Grafana dashboards (infra/grafana/dashboards/*.json) from one short description.

Run ``python infra/grafana/build.py`` after changing a panel; a test checks that the committed
JSON is what this script writes, and another evaluates every query on a real Prometheus.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DATASOURCE = {"type": "prometheus", "uid": "eddy-prometheus"}
FOLDER = Path(__file__).resolve().parent / "dashboards"

#: A panel: (title, description, unit, [(expr, legend)]). A row: a plain string.
Panel = tuple[str, str, str, list[tuple[str, str]]]

P99 = "histogram_quantile(0.99, sum by (le{by}) (rate({metric}_bucket[1m])))"


def quantiles(metric: str, by: str = "") -> list[tuple[str, str]]:
    """p50, p95 and p99 of a histogram (optionally per a label)."""
    label = f"{{{{{by}}}}} " if by else ""
    extra = f", {by}" if by else ""
    return [
        (P99.replace("0.99", q).format(by=extra, metric=metric), f"{label}p{int(float(q) * 100)}")
        for q in ("0.5", "0.95", "0.99")
    ]


DASHBOARDS: dict[str, tuple[str, str, list[str | Panel]]] = {
    "eddy-loop": ("Eddy: the loop at a glance", "Throughput per topic, consumer lag, latency.", [
        "Throughput",
        ("Messages consumed / s", "Per service and input topic.", "cps",
         [("sum by (service, topic) (rate(eddy_messages_consumed_total[1m]))",
           "{{service}} <- {{topic}}")]),
        ("Messages produced / s", "Per service and output topic, once acknowledged.", "cps",
         [("sum by (service, topic) (rate(eddy_messages_produced_total[1m]))",
           "{{service}} -> {{topic}}")]),
        "Lag and latency",
        ("Consumer lag", "Messages behind the end of each input topic.", "short",
         [("sum by (service, topic) (eddy_consumer_lag_messages)", "{{service}} <- {{topic}}")]),
        ("Ingest to prediction latency", "From ingest accepting an event to serving predicting it.",
         "s", quantiles("eddy_prediction_latency_seconds")),
        ("Batch handling time p99", "Handling one batch, per service.", "s",
         [(P99.format(by=", service", metric="eddy_batch_processing_seconds"), "{{service}}")]),
    ]),
    "eddy-model": ("Eddy: model quality", "Served accuracy, drift and versions over time.", [
        "Quality",
        ("Accuracy of served predictions", "Rolling, over the last labelled predictions.",
         "percentunit", [('eddy_kpi{kpi="accuracy"}', "served {{model}}"),
                         ("eddy_prequential_score", "prequential {{model}}")]),
        ("Candidates: the leaderboard", "Each candidate's prequential accuracy (MAE for "
         "numbers) over the recent window; the champion is the one serving.", "short",
         [('eddy_candidate_score{metric=~"accuracy|mae"}', "{{candidate}}")]),
        ("Label coverage", "Share of matured predictions that got a label.", "percentunit",
         [('eddy_kpi{kpi="label_coverage"}', "{{model}}")]),
        ("KPI breaches", "1 while a KPI is outside its configured bounds.", "short",
         [("max by (model, kpi) (eddy_kpi_breach)", "{{model}} {{kpi}}")]),
        "Drift and versions",
        ("Drift events", "Per kind, over 5 minutes.", "short",
         [("sum by (kind) (increase(eddy_drift_events_total[5m]))", "{{kind}}")]),
        ("Model version in serving", "The champion's version.", "none",
         [('max by (model) (eddy_model_version{variant="champion"})', "{{model}}")]),
        ("Versions published", "Per trigger, over 5 minutes.", "short",
         [("sum by (trigger) (increase(eddy_versions_published_total[5m]))", "{{trigger}}")]),
        ("Alerts", "KPI alerts per state, over 5 minutes.", "short",
         [("sum by (kpi, state) (increase(eddy_alerts_total[5m]))", "{{kpi}} {{state}}")]),
    ]),
    "eddy-data": ("Eddy: data quality", "Rejects, duplicates, labels and data drift.", [
        "Inputs",
        ("Dead letters / s", "Inputs sent to events.dlq, per reason.", "cps",
         [("sum by (reason) (rate(eddy_rejected_total[5m]))", "{{reason}}")]),
        ("Duplicates dropped / s", "Per service.", "cps",
         [("sum by (service) (rate(eddy_duplicates_total[5m]))", "{{service}}")]),
        ("Data drift events", "Per feature, over 15 minutes.", "short",
         [('sum by (subject) (increase(eddy_drift_events_total{kind="data"}[15m]))',
           "{{subject}}")]),
        "Labels",
        ("Labels / s", "Per outcome.", "cps",
         [("sum by (outcome) (rate(eddy_labels_total[5m]))", "{{outcome}}")]),
        ("Label delay", "From event time to its labelled example.", "s",
         quantiles("eddy_label_delay_seconds")),
        ("Predictions never labelled / s", "Expired without a label.", "cps",
         [("sum(rate(eddy_predictions_unlabeled_total[5m]))", "unlabelled")]),
        ("Label requests / s", "Labeling tasks for people.", "cps",
         [("sum(rate(eddy_labeling_tasks_total[5m]))", "tasks")]),
    ]),
    "eddy-health": ("Eddy: service health", "Each service's resources and its work.", [
        "Resources",
        ("Resident memory", "Per service.", "bytes",
         [("max by (job) (process_resident_memory_bytes)", "{{job}}")]),
        ("CPU", "Cores used per service.", "short",
         [("sum by (job) (rate(process_cpu_seconds_total[1m]))", "{{job}}")]),
        "Work",
        ("Batches / s", "Per service.", "cps",
         [("sum by (service) (rate(eddy_batch_processing_seconds_count[1m]))", "{{service}}")]),
        ("Examples learned / s", "Training.", "cps",
         [("sum by (model) (rate(eddy_examples_learned_total[1m]))", "{{model}}")]),
        ("Model swaps and refusals", "Serving, over 15 minutes.", "short",
         [("sum by (model) (increase(eddy_model_swaps_total[15m]))", "swaps {{model}}"),
          ("sum by (reason) (increase(eddy_models_refused_total[15m]))", "refused {{reason}}")]),
        ("Drift candidates rejected", "Versions that failed validation, over 15 minutes.", "short",
         [("sum by (model) (increase(eddy_versions_rejected_total[15m]))", "{{model}}")]),
    ]),
}  # fmt: skip

#: Annotations on the model-quality dashboard: when drift was detected, when the version changed.
ANNOTATIONS = [
    ("Drift events", "sum by (kind) (increase(eddy_drift_events_total[1m])) > 0", "red"),
    ("Version changes", 'changes(eddy_model_version{variant="champion"}[1m]) > 0', "blue"),
]


def _panel(panel_id: int, panel: Panel, x: int, y: int) -> dict[str, Any]:
    title, description, unit, queries = panel
    return {
        "id": panel_id, "type": "timeseries", "title": title, "description": description,
        "datasource": DATASOURCE, "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                    "tooltip": {"mode": "multi", "sort": "desc"}},
        "targets": [{"datasource": DATASOURCE, "refId": chr(ord("A") + i), "expr": expr,
                     "legendFormat": legend, "range": True}
                    for i, (expr, legend) in enumerate(queries)],
    }  # fmt: skip


def dashboard(uid: str) -> dict[str, Any]:
    """One dashboard as Grafana's JSON model."""
    title, description, items = DASHBOARDS[uid]
    panels: list[dict[str, Any]] = []
    x, y = 0, 0
    for item in items:
        if isinstance(item, str):
            y += 8 if x else 0
            x = 0
            panels.append({"id": len(panels) + 1, "type": "row", "title": item, "collapsed": False,
                           "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})  # fmt: skip
            y += 1
            continue
        panels.append(_panel(len(panels) + 1, item, x, y))
        x, y = (12, y) if x == 0 else (0, y + 8)
    annotations: list[dict[str, Any]] = [
        {"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True,
         "hide": True, "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts",
         "type": "dashboard"},
    ]  # fmt: skip
    if uid == "eddy-model":
        annotations += [{"datasource": DATASOURCE, "enable": True, "expr": expr,
                         "iconColor": color, "name": name, "step": "15s",
                         "titleFormat": name, "useValueForTime": False}
                        for name, expr, color in ANNOTATIONS]  # fmt: skip
    return {
        "uid": uid, "title": title, "description": description, "tags": ["eddy"],
        "schemaVersion": 39, "version": 1, "editable": True, "graphTooltip": 1,
        "timezone": "browser", "refresh": "10s", "time": {"from": "now-1h", "to": "now"},
        "timepicker": {}, "templating": {"list": []}, "annotations": {"list": annotations},
        "links": [{"asDropdown": True, "includeVars": False, "keepTime": True, "tags": ["eddy"],
                   "title": "Eddy", "type": "dashboards"}],
        "panels": panels,
    }  # fmt: skip


def rendered() -> dict[str, str]:
    """File name → JSON text of every dashboard."""
    return {f"{uid}.json": json.dumps(dashboard(uid), indent=2) + "\n" for uid in DASHBOARDS}


def main() -> None:
    """Write every dashboard file, and remove none (a stray file fails the tests instead)."""
    for name, text in rendered().items():
        (FOLDER / name).write_text(text, encoding="utf-8")
        print(f"wrote {FOLDER / name}")


if __name__ == "__main__":
    main()
