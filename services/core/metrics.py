"""Every Prometheus metric Eddy exports, declared once; each service serves them on its port."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
)

REGISTRY = CollectorRegistry(auto_describe=True)
#: process_resident_memory_bytes, process_cpu_seconds_total, ...: per-service health.
ProcessCollector(registry=REGISTRY)

MESSAGES_CONSUMED = Counter(
    "eddy_messages_consumed_total", "Messages consumed.", ["service", "topic"], registry=REGISTRY
)
MESSAGES_PRODUCED = Counter(
    "eddy_messages_produced_total",
    "Messages produced and acknowledged.",
    ["service", "topic"],
    registry=REGISTRY,
)
REJECTED = Counter(
    "eddy_rejected_total",
    "Inputs sent to the dead-letter topic.",
    ["service", "reason"],
    registry=REGISTRY,
)
DUPLICATES = Counter(
    "eddy_duplicates_total",
    "Inputs dropped as duplicates of an event_id already seen.",
    ["service"],
    registry=REGISTRY,
)
LATE_EVENTS = Counter(
    "eddy_late_events_total",
    "Events further behind their entity's newest than the schema's lateness: sent on with no "
    "aggregate, updating no window.",
    ["service"],
    registry=REGISTRY,
)
DEPENDENCY_UP = Gauge(
    "eddy_dependency_up",
    "1 while the service reaches a server it depends on (redis), 0 while it waits for it.",
    ["service", "dependency"],
    registry=REGISTRY,
)
DEPENDENCY_RETRIES = Counter(
    "eddy_dependency_retries_total",
    "Calls to a server that failed and were tried again after a pause.",
    ["service", "dependency"],
    registry=REGISTRY,
)
LABEL_ANSWERS = Counter(
    "eddy_label_answers_total",
    "Answers given on the label page, by labeller (at most 500 names; the rest are 'other').",
    ["labeller"],
    registry=REGISTRY,
)
LABEL_SIGNINS = Counter(
    "eddy_label_signins_total",
    "Sign-in attempts on the label page: ok, refused (wrong name or password) or limited.",
    ["outcome"],
    registry=REGISTRY,
)
BATCH_SECONDS = Histogram(
    "eddy_batch_processing_seconds",
    "Time to handle one consumed batch, from decode to its outputs handed to the producer.",
    ["service"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    registry=REGISTRY,
)
CONSUMER_LAG = Gauge(
    "eddy_consumer_lag_messages",
    "Messages behind the end of the partition.",
    ["service", "topic", "partition"],
    registry=REGISTRY,
)
MODEL_VERSION = Gauge(
    "eddy_model_version",
    "Model version currently loaded.",
    ["service", "model", "variant"],
    registry=REGISTRY,
)
VARIANT_SCORE = Gauge(
    "eddy_variant_score",
    "Live score (accuracy, or MAE for a regression) of the champion and the challenger of the "
    "deployment in force, on the labelled events each served (canary) or both answered (shadow).",
    ["service", "model", "variant"],
    registry=REGISTRY,
)
VARIANT_LABELS = Gauge(
    "eddy_variant_labelled_events",
    "Labelled events behind eddy_variant_score.",
    ["service", "model", "variant"],
    registry=REGISTRY,
)
DEPLOYMENT_DECISIONS = Counter(
    "eddy_deployment_decisions_total",
    "Canary steps, promotions, rollbacks and ends decided on live labels.",
    ["service", "model", "action"],
    registry=REGISTRY,
)
MODEL_SWAPS = Counter(
    "eddy_model_swaps_total",
    "Model versions swapped in without a restart.",
    ["service", "model"],
    registry=REGISTRY,
)
MODELS_REFUSED = Counter(
    "eddy_models_refused_total",
    "Model versions refused (checksum, signature, load).",
    ["service", "reason"],
    registry=REGISTRY,
)

LABELS = Counter(
    "eddy_labels_total",
    "Labels received, by what became of them (joined, early, duplicate, unknown, expired).",
    ["service", "outcome"],
    registry=REGISTRY,
)
UNLABELED_EXPIRED = Counter(
    "eddy_predictions_unlabeled_total",
    "Predicted events whose label never came before the pending time ran out.",
    ["service"],
    registry=REGISTRY,
)
LABELING_TASKS = Counter(
    "eddy_labeling_tasks_total", "Requests for a human label.", ["service"], registry=REGISTRY
)
EXAMPLES_LEARNED = Counter(
    "eddy_examples_learned_total",
    "Training examples learned.",
    ["service", "model"],
    registry=REGISTRY,
)
VERSIONS_PUBLISHED = Counter(
    "eddy_versions_published_total",
    "Model versions published.",
    ["service", "model", "trigger"],
    registry=REGISTRY,
)
VERSIONS_REJECTED = Counter(
    "eddy_versions_rejected_total",
    "Candidate versions that failed validation and were not published.",
    ["service", "model"],
    registry=REGISTRY,
)
PREQUENTIAL = Gauge(
    "eddy_prequential_score",
    "Test-then-train score of the online model (rolling).",
    ["service", "model", "metric"],
    registry=REGISTRY,
)
CANDIDATE_SCORE = Gauge(
    "eddy_candidate_score",
    "Each candidate's prequential score over the recent window (the leaderboard).",
    ["service", "model", "candidate", "metric"],
    registry=REGISTRY,
)
CANDIDATE_ERRORS = Counter(
    "eddy_candidate_errors_total",
    "Examples a candidate failed to predict or learn (the others learned them).",
    ["service", "model", "candidate"],
    registry=REGISTRY,
)
CHAMPION = Gauge(
    "eddy_champion",
    "1 for the candidate whose model serving gets, 0 for the others.",
    ["service", "model", "candidate"],
    registry=REGISTRY,
)
DRIFT_REACTIONS = Counter(
    "eddy_drift_reactions_total",
    "Drift events training reacted to, by kind and configured reaction.",
    ["service", "model", "kind", "reaction"],
    registry=REGISTRY,
)
DRIFT_EVENTS = Counter(
    "eddy_drift_events_total",
    "Drift events published.",
    ["service", "kind", "subject"],
    registry=REGISTRY,
)
KPI = Gauge(
    "eddy_kpi",
    "Rolling KPI of served predictions over the last labelled window.",
    ["service", "model", "kpi"],
    registry=REGISTRY,
)

KPI_BREACH = Gauge(
    "eddy_kpi_breach",
    "1 while a KPI is outside its configured bounds.",
    ["service", "model", "kpi"],
    registry=REGISTRY,
)
ALERTS = Counter(
    "eddy_alerts_total", "KPI alerts published.", ["service", "kpi", "state"], registry=REGISTRY
)
LABEL_DELAY = Histogram(
    "eddy_label_delay_seconds",
    "From an event's time to its labelled example reaching monitoring.",
    ["service"],
    buckets=(0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 14400, 86400),
    registry=REGISTRY,
)
PREDICTION_LATENCY = Histogram(
    "eddy_prediction_latency_seconds",
    "From ingest accepting an event to serving predicting it.",
    ["service"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)


def serve_metrics(port: int, host: str = "127.0.0.1") -> int:
    """Serve /metrics, /healthz and /readyz on ``host``:``port`` (0: a free one); the port."""
    from services.core.health import serve

    return serve(REGISTRY, port, host)
