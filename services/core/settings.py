"""One frozen Settings object per process, read from the environment (prefix ``EDDY_``) once.

Nested groups use ``__`` in the variable name: ``EDDY_KAFKA__BATCH_SIZE=1000``.
Every field is documented in docs/configuration.md; a test checks that.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.drift import DriftKind

DEFAULT_HOME = Path.home() / ".eddy"


class _Group(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(_Group):
    """How every service talks to the broker."""

    session_timeout_ms: int = Field(
        10_000, ge=1_000, description="Consumer-group session timeout; joins take about half."
    )
    batch_size: int = Field(500, ge=1, le=100_000, description="Messages consumed per batch.")
    poll_timeout_s: float = Field(0.2, gt=0, description="How long one poll waits for messages.")
    fetch_wait_max_ms: int = Field(
        500,
        ge=0,
        description="How long the broker may hold a fetch while no data waits (Kafka's default; "
        "the embedded stack uses 20, as it answers only after the wait).",
    )
    lag_interval_ms: int = Field(
        5000, ge=0, description="How often consumer lag is measured for the metrics (0: never)."
    )
    max_in_flight: int = Field(
        4, ge=1, le=64, description="Batches handled ahead of their acknowledgement (pipelining)."
    )
    commit_interval_ms: int = Field(
        100, ge=0, description="At most one offset commit per this interval (0: every batch)."
    )
    linger_ms: int = Field(
        5, ge=0, description="Producer batching delay of clients that send one event at a time."
    )
    batch_linger_ms: int = Field(
        1, ge=0, description="Producer batching delay of the service loop (whole batches)."
    )
    delivery_timeout_s: float = Field(
        60.0,
        gt=0,
        description="A service whose oldest batch is unacknowledged this long exits (code 1) "
        "to be started again, instead of waiting on a broker that lost its data.",
    )
    max_message_bytes: int = Field(
        1_000_000, ge=1024, description="Largest message a service produces or fetches."
    )
    topic_partitions: int | None = Field(
        None,
        ge=1,
        le=10_000,
        description="Partitions of every topic Eddy creates (unset: as declared in "
        "infra/topics.toml; the embedded stack uses 1).",
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="How clients talk to the brokers: TLS (SSL), SASL, both, neither."
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "SCRAM-SHA-512", description="SASL mechanism, with a SASL security protocol."
    )
    sasl_username: str = Field("", max_length=256, description="SASL user name.")
    sasl_password: SecretStr = Field(
        SecretStr(""), description="SASL password (also EDDY_KAFKA__SASL_PASSWORD_FILE)."
    )
    ssl_ca_location: Path | None = Field(
        None, description="CA certificate(s) that signed the brokers' (unset: the system's)."
    )
    ssl_certificate_location: Path | None = Field(
        None, description="Client certificate, where the brokers authenticate clients by TLS."
    )
    ssl_key_location: Path | None = Field(None, description="The client certificate's key.")
    ssl_key_password: SecretStr = Field(
        SecretStr(""),
        description="Password of the client key, if any (also EDDY_KAFKA__SSL_KEY_PASSWORD_FILE).",
    )
    extra: dict[str, str] = Field(
        default_factory=dict,
        description="Extra librdkafka settings for every client, as JSON (they win over the "
        "settings above).",
    )

    @model_validator(mode="after")
    def _sasl_needs_credentials(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL") and not (
            self.sasl_username and self.sasl_password.get_secret_value()
        ):
            raise ValueError(
                f"security_protocol {self.security_protocol} needs EDDY_KAFKA__SASL_USERNAME and "
                "EDDY_KAFKA__SASL_PASSWORD (or EDDY_KAFKA__SASL_PASSWORD_FILE)"
            )
        return self

    def security_config(self) -> dict[str, str]:
        """The librdkafka properties of the security settings (only those that are set)."""
        config = {"security.protocol": self.security_protocol.lower()}
        if self.security_protocol.startswith("SASL"):
            config["sasl.mechanism"] = self.sasl_mechanism
            config["sasl.username"] = self.sasl_username
            config["sasl.password"] = self.sasl_password.get_secret_value()
        for name in ("ssl_ca_location", "ssl_certificate_location", "ssl_key_location"):
            path = getattr(self, name)
            if path is not None:
                config[name.replace("_", ".")] = str(path)
        if self.ssl_key_password.get_secret_value():
            config["ssl.key.password"] = self.ssl_key_password.get_secret_value()
        return config


class IngestSettings(_Group):
    """Validation and de-duplication of raw events."""

    feature_schema: str = Field(
        "phishing",
        description="Feature schema: a name in infra/features/ or a path to a TOML file.",
    )
    max_event_bytes: int = Field(
        65_536, ge=64, description="Raw events larger than this go to the DLQ as oversized."
    )
    dedup_ttl_s: int = Field(
        86_400, ge=1, description="How long an event_id is remembered for de-duplication."
    )
    max_event_age_days: float = Field(
        36_525,
        gt=0,
        description="Events whose time is further in the past than this go to the DLQ as "
        "out_of_range (the default, 100 years, lets historical data be replayed).",
    )
    max_event_ahead_s: float = Field(
        86_400,
        ge=0,
        description="Events whose time is further in the future than this go to the DLQ as "
        "out_of_range (clocks drift; a year-9999 timestamp is a bug).",
    )
    window_cache_rows: int = Field(
        500_000,
        ge=0,
        description="Event rows of window histories (derived features) ingest keeps in memory "
        "as well as in Redis, the least recently used entities going first (about 0.5 KB a "
        "row); the rest are read from Redis when their events come.",
    )


class ServingSettings(_Group):
    """How serving delivers."""

    transactional: bool = Field(
        False, description="Exactly-once output with Kafka transactions (else at-least-once)."
    )
    instance: str = Field(
        "",
        max_length=100,
        pattern=r"^[A-Za-z0-9_.-]*$",
        description="Names this serving in its Kafka transactional id (exactly-once): instances "
        "running at once need names of their own, and a restarted one its old name (it then "
        "aborts what its predecessor left open); empty: the host name.",
    )
    compile: bool = Field(
        True,
        description="Serve River linear models (scaler + logistic, softmax or linear regression), "
        "Hoeffding trees and adaptive random forests through their compiled ONNX graph, one "
        "call per batch, when every feature is a number; off: River predicts event by event.",
    )
    explain: bool = Field(
        False,
        description="Every prediction carries its largest feature contributions (linear "
        "models: exact; trees and forests: path contributions). A request/reply call can ask "
        "for them itself (`explain`).",
    )


class LabelingSettings(_Group):
    """How long predictions wait for labels, and when to ask people for one."""

    pending_ttl_s: float = Field(
        3600.0,
        gt=0,
        description="How long a prediction waits for its label, and a label for its prediction.",
    )
    task_uncertainty: float = Field(
        0.4, ge=0, le=1, description="Ask a person when 1 - max class probability is at least this."
    )
    sweep_interval_s: float = Field(1.0, gt=0, description="How often expired items are counted.")
    redis_shards: int = Field(
        1,
        ge=1,
        le=16_384,
        description="Redis Cluster slots the pending state is spread over (1 for a single Redis).",
    )
    fetch_wait_ms: int = Field(
        100,
        ge=0,
        description="How long labeling's fetches wait for data to pile up (bigger batches; 0: off)",
    )
    ui_users_file: Path = Field(
        DEFAULT_HOME / "labellers",
        description="Who may sign in to the label page: `name:scrypt-hash` lines, written by "
        "`eddy labellers add NAME`.",
    )
    ui_users: dict[str, str] = Field(
        default_factory=dict,
        description="More label-page users as JSON, name to hash (from `eddy labellers hash`).",
    )
    ui_trusted_user_header: str = Field(
        "",
        max_length=100,
        description="Behind a reverse proxy that signs people in: the header naming the user "
        "(X-Forwarded-User, say). Only set it when nothing but the proxy reaches the page.",
    )
    ui_session_key: SecretStr = Field(
        SecretStr(""),
        description="Key that signs the label page's session cookies (unset: a new random key "
        "each start, which signs everyone out).",
    )
    ui_answers_per_minute: int = Field(
        120, ge=1, description="Answers one labeller may send a minute (bursts up to as many)."
    )
    ui_secure_cookies: bool = Field(
        False, description="Send the session cookie over HTTPS only (set it behind TLS)."
    )


DriftReaction = Literal["retrain", "alert", "ignore"]


def _default_reactions() -> dict[DriftKind, DriftReaction]:
    """Retrain on concept drift only: data drift alone does not make a model worse."""
    return {"concept": "retrain", "data": "alert", "prediction": "alert", "label_coverage": "alert"}


class TrainingSettings(_Group):
    """The candidates, how the champion is chosen, when versions are published, drift reactions."""

    models: str = Field(
        "auto",
        description="Candidates: 'auto' (one default model for the target), a name in "
        "infra/models/ or a path to a models TOML file. A no-change baseline always runs too.",
    )
    score_window: int = Field(
        1000, ge=10, description="Recent examples each candidate's prequential scores are over."
    )
    selection_metric: Literal["auto", "accuracy", "macro_f1", "log_loss", "mae", "rmse", "r2"] = (
        Field(
            "auto",
            description="What selection compares ('auto': accuracy for classes, MAE for numbers).",
        )
    )
    selection_min_gap: float = Field(
        0.01,
        ge=0,
        description="How far ahead a candidate must be to take over, relative to the champion's "
        "value (0.01: 1% better).",
    )
    selection_min_examples: int = Field(
        200, ge=0, description="Examples learned before selection may switch at all."
    )
    selection_cooldown: int = Field(
        500, ge=0, description="Examples after a switch before another."
    )
    selection_z: float = Field(
        2.0,
        ge=0,
        description="How many standard errors of the difference a candidate must be ahead by "
        "to take over (accuracy, MAE, log loss, RMSE; macro-F1 and R² have none): a lead that "
        "chance explains is no reason to switch (0: no test).",
    )
    selection_every: int = Field(100, ge=1, description="Examples between two selection checks.")
    publish_every: int = Field(
        250, ge=1, description="Publish a scheduled version every N examples learned."
    )
    small_publish_every: int = Field(
        50,
        ge=1,
        description="Publish every N examples instead while the model's artifact is at most "
        "small_model_bytes: a small model is cheap to publish and load, and serving then "
        "answers with close to what training learned.",
    )
    small_model_bytes: int = Field(
        65_536, ge=0, description="Largest artifact published every small_publish_every."
    )
    publish_interval_s: float = Field(
        5.0,
        ge=0,
        description="Also publish when this long has passed since the last version and "
        "something was learned (0: by examples only).",
    )
    version_time_share: float = Field(
        0.1,
        gt=0,
        le=1,
        description="Share of a core scheduled versions may take, in CPU time (each costs about "
        "9 ms: signing, the artifact, the race saved); within it they come on schedule, beyond "
        "it they wait (1: no limit).",
    )
    first_interval: int = Field(
        10,
        ge=0,
        description="Examples before the first scheduled version; each next interval doubles "
        "until it reaches publish_every (0: every publish_every from the start).",
    )
    recent_window: int = Field(
        2000, ge=10, description="Recent examples kept to retrain from after a drift."
    )
    validation_window: int = Field(
        200, ge=10, description="Most recent examples a drift-retrained model is judged on."
    )
    drift_reactions: dict[DriftKind, DriftReaction] = Field(
        default_factory=_default_reactions,
        description="What each kind of drift event leads to: retrain (every candidate), alert "
        "(a warning in training's log and a counter), ignore. As JSON; kinds left out keep "
        "their default.",
    )
    worker_checkpoint_s: float = Field(
        2.0,
        gt=0,
        description="Most time between two saves of a candidate in its own process (model, "
        "scores and input positions, in Redis: what a restart of that process resumes from); a "
        "model cheap to pickle saves sooner, as often as pickling takes 5% of its time.",
    )
    worker: str = Field(
        "",
        description="Set by training for the processes it starts: the candidate this process "
        "learns (empty: the training service itself).",
    )
    drift_alpha: float = Field(
        0.05,
        gt=0,
        lt=1,
        description="A retrained model replaces a candidate only if better on the held-out "
        "examples by a paired test at this significance.",
    )
    min_gain: float = Field(
        0.0,
        description="A retrained model must also lower the mean loss (error rate, or absolute "
        "error) by at least this.",
    )
    fetch_wait_ms: int = Field(
        0,
        ge=0,
        description="How long training's fetches wait for data to pile up (bigger batches; 0: off, "
        "as each wait delays the next version)",
    )

    @field_validator("drift_reactions", mode="after")
    @classmethod
    def _every_kind(
        cls, reactions: dict[DriftKind, DriftReaction]
    ) -> dict[DriftKind, DriftReaction]:
        return {**_default_reactions(), **reactions}


class MonitoringSettings(_Group):
    """Drift detectors (each kind with its own settings and cool-down), KPIs, canary decisions."""

    canary_alpha: float = Field(
        0.05,
        gt=0,
        lt=1,
        description="Largest chance that a canary promotes a challenger no better than the "
        "champion (and rolls back one no worse), however long it runs.",
    )
    canary_step_labels: int = Field(
        200,
        ge=1,
        description="Labelled events of the challenger at a canary share before it ramps to "
        "the next step.",
    )
    canary_max_labels: int = Field(
        10_000,
        ge=1,
        description="Labelled events of the challenger after which a canary with no verdict "
        "ends and the champion stays.",
    )

    fetch_wait_ms: int = Field(
        100,
        ge=0,
        description="How long monitoring's fetches wait for data to pile up (bigger batches; "
        "0: off)",
    )

    concept_delta: float = Field(
        0.002, gt=0, lt=1, description="ADWIN confidence for the error stream (concept drift)."
    )
    concept_cooldown_events: int = Field(
        1000, ge=0, description="Labelled predictions after a concept drift event before another."
    )
    min_events: int = Field(
        200, ge=0, description="Events an ADWIN detector sees before it may fire at all."
    )
    data_detector: Literal["ks", "adwin"] = Field(
        "ks",
        description="Data drift per numeric feature: a Kolmogorov-Smirnov test of the recent "
        "window against a reference window, or ADWIN on the mean.",
    )
    data_reference_size: int = Field(
        1000, ge=50, description="Values in a feature's reference window (the first ones seen)."
    )
    data_window_size: int = Field(500, ge=50, description="Values in a feature's recent window.")
    data_alpha: float = Field(
        1e-6, gt=0, lt=1, description="Significance of the KS test (small: repeated tests)."
    )
    data_delta: float = Field(
        0.0001, gt=0, lt=1, description="ADWIN confidence per feature (with data_detector=adwin)."
    )
    data_check_every: int = Field(100, ge=1, description="Values between two KS tests.")
    data_cooldown_events: int = Field(
        2000, ge=0, description="Values after a data drift event before the feature fires again."
    )
    prediction_reference_size: int = Field(
        1000, ge=50, description="Predictions in the reference window (per model version)."
    )
    prediction_window_size: int = Field(500, ge=50, description="Predictions in the recent window.")
    prediction_psi: float = Field(
        0.2, gt=0, description="Population stability index of predicted classes that fires."
    )
    prediction_check_every: int = Field(100, ge=1, description="Predictions between two checks.")
    prediction_cooldown_events: int = Field(
        2000, ge=0, description="Predictions after a prediction drift event before another."
    )
    coverage_horizon_s: float = Field(
        300.0, gt=0, description="How long after its event time a prediction's label may take."
    )
    coverage_min: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Share of matured predictions with a label below which it fires.",
    )
    coverage_window_s: float = Field(
        600.0, gt=0, description="Event-time span of matured predictions the coverage is over."
    )
    coverage_cooldown_s: float = Field(
        600.0, ge=0, description="Seconds after a label coverage event before another."
    )
    kpi_window: int = Field(1000, ge=10, description="Labelled predictions in the rolling KPIs.")
    checkpoint_interval_s: float = Field(
        10.0,
        ge=0,
        description="How often the detectors' state is saved in Redis, so a restart resumes it "
        "instead of re-learning (0: never; needs EDDY_SIGNING_KEY).",
    )
    kpi_rules: str = Field(
        "kpis", description="KPI thresholds: a name in infra/ (kpis -> infra/kpis.toml) or a path."
    )


class ObjectStoreSettings(_Group):
    """The S3-compatible object store of ``EDDY_REGISTRY_URI=s3://...`` (AWS S3, MinIO...)."""

    endpoint: str = Field(
        "", description="The store's URL (empty: AWS S3 itself); e.g. http://minio:9000."
    )
    region: str = Field("", description="The bucket's region (empty: us-east-1).")
    access_key_id: str = Field("", description="Access key id (empty: the AWS_* environment).")
    secret_access_key: SecretStr = Field(
        SecretStr(""),
        description="Secret access key (also EDDY_OBJECT_STORE__SECRET_ACCESS_KEY_FILE).",
    )
    allow_http: bool = Field(False, description="Allow a plain-HTTP endpoint (a local MinIO).")


#: Secrets that may also come from a file named by ``EDDY_<NAME>_FILE``: (group, field).
SECRET_FIELDS = (
    ("", "signing_key"),
    ("", "signing_private_key"),
    ("", "pii_key"),
    ("", "redis_password"),
    ("kafka", "sasl_password"),
    ("kafka", "ssl_key_password"),
    ("labeling", "ui_session_key"),
    ("object_store", "secret_access_key"),
)


class Settings(BaseSettings):
    """Everything a process needs to know about its environment."""

    model_config = SettingsConfigDict(
        env_prefix="EDDY_", env_nested_delimiter="__", frozen=True, extra="ignore"
    )

    kafka_bootstrap: str | None = Field(
        None, description="Kafka bootstrap servers; unset means start the embedded broker."
    )
    redis_url: str | None = Field(
        None,
        description="Redis URL (rediss:// for TLS); unset means start the embedded "
        "Redis-protocol server.",
    )
    redis_username: str = Field(
        "", max_length=256, description="Redis ACL user (unset: the default user)."
    )
    redis_password: SecretStr = Field(
        SecretStr(""),
        description="Redis password, kept out of the URL (also EDDY_REDIS_PASSWORD_FILE).",
    )
    redis_tls_ca: Path | None = Field(
        None, description="CA certificate that signed the Redis server's, for rediss:// URLs."
    )
    topic_prefix: str = Field(
        "", description="Prepended to every topic and consumer group (isolates tenants, tests)."
    )
    signing_key: SecretStr = Field(
        SecretStr(""),
        description="Shared secret (HMAC) that signs checkpoints, and model versions when no "
        "private key is set (also from a file: EDDY_SIGNING_KEY_FILE).",
    )
    signing_private_key: SecretStr = Field(
        SecretStr(""),
        description="Ed25519 private key that signs model versions (64 hex characters or PEM; "
        "`eddy keys generate`); only publishers need it (also EDDY_SIGNING_PRIVATE_KEY_FILE).",
    )
    trusted_keys: list[str] = Field(
        default_factory=list,
        description="Ed25519 public keys whose versions are accepted (JSON list of hex or PEM); "
        "once set, HMAC-signed versions are refused.",
    )
    revoked_keys: list[str] = Field(
        default_factory=list,
        description="Key ids (ed25519:... or hmac:...) whose versions are refused.",
    )
    pii_key: SecretStr = Field(
        SecretStr(""),
        description="Secret of the keyed hash of features marked pii = 'hash' (also "
        "EDDY_PII_KEY_FILE); changing it changes every hashed value.",
    )
    registry_dir: Path = Field(
        DEFAULT_HOME / "registry",
        description="Where model artifacts are stored as files (file URIs), unless "
        "EDDY_REGISTRY_URI names an object store.",
    )
    registry_uri: str = Field(
        "",
        description="s3://bucket/prefix: keep artifacts in S3-compatible object storage "
        "(EDDY_OBJECT_STORE__*), readable from every machine; empty: files under "
        "EDDY_REGISTRY_DIR.",
    )
    model_name: str = Field(
        "default",
        min_length=1,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="The model this deployment trains, serves and monitors.",
    )
    metrics_port: int = Field(
        0, ge=0, le=65_535, description="Prometheus port of this process; 0 picks a free one."
    )
    metrics_host: str = Field(
        "127.0.0.1",
        description="Address the Prometheus page listens on: this machine only by default; "
        "0.0.0.0 where Prometheus scrapes from elsewhere (docker-compose sets it).",
    )
    log_level: str = Field("INFO", description="Log level of the JSON-line logs.")
    kafka: KafkaSettings = KafkaSettings()
    ingest: IngestSettings = IngestSettings()
    serving: ServingSettings = ServingSettings()
    labeling: LabelingSettings = LabelingSettings()
    training: TrainingSettings = TrainingSettings()
    monitoring: MonitoringSettings = MonitoringSettings()
    object_store: ObjectStoreSettings = ObjectStoreSettings()

    @model_validator(mode="before")
    @classmethod
    def _secrets_from_files(cls, data: Any) -> Any:
        """``EDDY_<SECRET>_FILE`` names a file that holds the secret (Docker, Kubernetes)."""
        if not isinstance(data, dict):
            return data
        for group, name in SECRET_FIELDS:
            variable = f"EDDY_{group.upper()}__{name.upper()}" if group else f"EDDY_{name.upper()}"
            if group and isinstance(data.get(group), dict):  # the env reader's view of _FILE
                data = {
                    **data,
                    group: {k: v for k, v in data[group].items() if k != f"{name}_file"},
                }
            path = os.environ.get(f"{variable}_FILE")
            if not path:
                continue
            try:
                secret = Path(path).read_text().strip()
            except OSError as error:
                from services.core.exceptions import ConfigurationError

                raise ConfigurationError(
                    f"{variable}_FILE={path}: cannot read it ({error.strerror})"
                ) from None
            if not group:
                data = {**data, name: data.get(name) or secret}
            elif isinstance(data.get(group, {}), dict):
                values = data.get(group, {})
                data = {**data, group: {**values, name: values.get(name) or secret}}
        return data

    @property
    def is_embedded(self) -> bool:
        """True when either endpoint is missing, so the CLI must start the embedded stack."""
        return self.kafka_bootstrap is None or self.redis_url is None

    def require_endpoints(self) -> tuple[str, str]:
        """The broker and Redis endpoints, or an error that tells the operator what to set."""
        from services.core.exceptions import ConfigurationError

        if self.kafka_bootstrap is None or self.redis_url is None:
            raise ConfigurationError(
                "no broker or Redis configured: set EDDY_KAFKA_BOOTSTRAP and EDDY_REDIS_URL, "
                "or run `eddy stack up` in another terminal and export what it prints"
            )
        return self.kafka_bootstrap, self.redis_url

    def signing_key_bytes(self) -> bytes:
        """The artifact signing key, or an error saying how to set one."""
        from services.core.exceptions import ConfigurationError

        key = self.signing_key.get_secret_value()
        if not key:
            raise ConfigurationError(
                "EDDY_SIGNING_KEY is not set: model artifacts cannot be signed or verified"
            )
        return key.encode()
