"""Settings: defaults, the environment (prefix EDDY_, nested with __), and helpful errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from services.core.exceptions import ConfigurationError
from services.core.settings import Settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sees only the EDDY_ variables it sets, whatever the shell exported."""
    for name in list(os.environ):
        if name.upper().startswith("EDDY_"):
            monkeypatch.delenv(name)


def test_defaults_start_embedded_with_the_phishing_schema() -> None:
    settings = Settings()

    assert settings.kafka_bootstrap is None
    assert settings.redis_url is None
    assert settings.is_embedded is True
    assert settings.topic_prefix == ""
    assert settings.registry_dir.name == "registry"
    assert settings.kafka.session_timeout_ms == 10_000
    assert settings.kafka.batch_size == 500
    assert settings.kafka.extra == {}
    assert settings.ingest.feature_schema == "phishing"
    assert settings.ingest.max_event_bytes == 65_536
    assert settings.model_name == "default"
    assert settings.serving.transactional is False


def test_endpoints_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDDY_KAFKA_BOOTSTRAP", "kafka-1:9092,kafka-2:9092")
    monkeypatch.setenv("EDDY_REDIS_URL", "redis://cache:6379/0")

    settings = Settings()

    assert settings.require_endpoints() == ("kafka-1:9092,kafka-2:9092", "redis://cache:6379/0")
    assert settings.is_embedded is False


def test_nested_settings_are_read_with_double_underscores(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EDDY_MODEL_NAME", "churn")
    monkeypatch.setenv("EDDY_SERVING__TRANSACTIONAL", "true")
    monkeypatch.setenv("EDDY_KAFKA__SESSION_TIMEOUT_MS", "30000")

    settings = Settings()

    assert settings.model_name == "churn"
    assert settings.serving.transactional is True
    assert settings.kafka.session_timeout_ms == 30_000
    assert settings.kafka.batch_size == 500  # the rest of the group keeps its defaults


def test_extra_librdkafka_settings_are_read_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "EDDY_KAFKA__EXTRA", '{"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN"}'
    )

    settings = Settings()

    assert settings.kafka.extra == {"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN"}


def test_registry_dir_is_read_as_a_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EDDY_REGISTRY_DIR", str(tmp_path))

    assert Settings().registry_dir == tmp_path


@pytest.mark.parametrize(
    ("name", "value", "named"),
    [
        pytest.param(
            "EDDY_KAFKA__SESSION_TIMEOUT_MS", "500", "session_timeout_ms", id="timeout-too-low"
        ),
        pytest.param(
            "EDDY_KAFKA__SESSION_TIMEOUT_MS", "ten", "session_timeout_ms", id="timeout-not-int"
        ),
        pytest.param("EDDY_KAFKA__BATCH_SIZE", "0", "batch_size", id="batch-size-zero"),
        pytest.param("EDDY_KAFKA__EXTRA", "security.protocol=SSL", "kafka", id="extra-not-json"),
        pytest.param(
            "EDDY_KAFKA__SESION_TIMEOUT_MS", "20000", "sesion_timeout_ms", id="misspelt-nested"
        ),
        pytest.param("EDDY_METRICS_PORT", "70000", "metrics_port", id="port-out-of-range"),
        pytest.param(
            "EDDY_INGEST__MAX_EVENT_BYTES", "10", "max_event_bytes", id="max-event-bytes-too-low"
        ),
    ],
)
def test_bad_environment_value_is_refused_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, named: str
) -> None:
    monkeypatch.setenv(name, value)

    with pytest.raises(ValueError, match=named):
        Settings()


def test_settings_are_frozen() -> None:
    settings = Settings()

    with pytest.raises(ValidationError):
        settings.topic_prefix = "other-"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("bootstrap", "redis"),
    [
        pytest.param(None, None, id="neither"),
        pytest.param("kafka:9092", None, id="no-redis"),
        pytest.param(None, "redis://cache:6379", id="no-kafka"),
    ],
)
def test_missing_endpoint_means_embedded_and_require_endpoints_says_what_to_set(
    bootstrap: str | None, redis: str | None
) -> None:
    settings = Settings(kafka_bootstrap=bootstrap, redis_url=redis)

    assert settings.is_embedded is True
    with pytest.raises(ConfigurationError) as raised:
        settings.require_endpoints()
    message = str(raised.value)
    assert "EDDY_KAFKA_BOOTSTRAP" in message
    assert "EDDY_REDIS_URL" in message
    assert "eddy stack up" in message


def test_signing_key_is_read_as_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDDY_SIGNING_KEY", "s3cret-key")

    settings = Settings()

    assert settings.signing_key_bytes() == b"s3cret-key"
    assert "s3cret-key" not in repr(settings)


def test_unset_signing_key_raises_configuration_error_naming_the_variable() -> None:
    with pytest.raises(ConfigurationError, match="EDDY_SIGNING_KEY is not set"):
        Settings().signing_key_bytes()


def test_empty_signing_key_is_as_good_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDDY_SIGNING_KEY", "")

    with pytest.raises(ConfigurationError, match="EDDY_SIGNING_KEY"):
        Settings().signing_key_bytes()


def test_a_secret_can_come_from_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret = tmp_path / "key"
    secret.write_text("from-a-file\n")
    monkeypatch.delenv("EDDY_SIGNING_KEY", raising=False)
    monkeypatch.setenv("EDDY_SIGNING_KEY_FILE", str(secret))

    settings = Settings()

    assert settings.signing_key_bytes() == b"from-a-file"
    assert "from-a-file" not in repr(settings)


def test_an_unreadable_secret_file_is_an_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("EDDY_SIGNING_PRIVATE_KEY_FILE", str(tmp_path / "missing"))

    with pytest.raises(ConfigurationError, match=r"EDDY_SIGNING_PRIVATE_KEY_FILE=.*cannot read"):
        Settings()


def test_metrics_listen_on_this_machine_only_unless_told_otherwise() -> None:
    assert Settings().metrics_host == "127.0.0.1"


def test_nested_secrets_can_come_from_files_too(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "sasl").write_text("sasl-7f3a9\n")
    (tmp_path / "redis").write_text("redis-c41d2\n")
    monkeypatch.setenv("EDDY_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("EDDY_KAFKA__SASL_USERNAME", "eddy")
    monkeypatch.setenv("EDDY_KAFKA__SASL_PASSWORD_FILE", str(tmp_path / "sasl"))
    monkeypatch.setenv("EDDY_REDIS_PASSWORD_FILE", str(tmp_path / "redis"))

    settings = Settings()

    assert settings.kafka.sasl_password.get_secret_value() == "sasl-7f3a9"
    assert settings.redis_password.get_secret_value() == "redis-c41d2"
    for value in ("sasl-7f3a9", "redis-c41d2"):
        assert value not in repr(settings) and value not in settings.model_dump_json()


def test_sasl_settings_become_librdkafka_properties_and_need_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EDDY_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    with pytest.raises(ValidationError, match="needs EDDY_KAFKA__SASL_USERNAME"):
        Settings()

    monkeypatch.setenv("EDDY_KAFKA__SASL_USERNAME", "eddy")
    monkeypatch.setenv("EDDY_KAFKA__SASL_PASSWORD", "pw")
    monkeypatch.setenv("EDDY_KAFKA__SSL_CA_LOCATION", "/etc/eddy/ca.pem")
    monkeypatch.setenv("EDDY_KAFKA__EXTRA", '{"sasl.mechanism": "PLAIN"}')
    settings = Settings(kafka_bootstrap="broker:9093")

    from services.core.kafka import consumer_config, producer_config

    for config in (producer_config(settings), consumer_config(settings, "g")):
        assert config["security.protocol"] == "sasl_ssl"
        assert (config["sasl.username"], config["sasl.password"]) == ("eddy", "pw")
        assert config["ssl.ca.location"] == "/etc/eddy/ca.pem"
        assert config["sasl.mechanism"] == "PLAIN", "EDDY_KAFKA__EXTRA wins"


def test_child_processes_get_every_secret_including_nested_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from services.core.supervisor import service_env

    monkeypatch.setenv("EDDY_KAFKA__SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("EDDY_KAFKA__SASL_USERNAME", "eddy")
    monkeypatch.setenv("EDDY_KAFKA__SASL_PASSWORD", "kafka-pw")
    monkeypatch.setenv("EDDY_REDIS_PASSWORD", "redis-pw")
    monkeypatch.setenv("EDDY_LABELING__UI_SESSION_KEY", "cookie-key")
    env = service_env(Settings())
    for name in list(os.environ):
        if name.startswith("EDDY_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    child = Settings()

    assert child.kafka.sasl_password.get_secret_value() == "kafka-pw"
    assert child.redis_password.get_secret_value() == "redis-pw"
    assert child.labeling.ui_session_key.get_secret_value() == "cookie-key"
