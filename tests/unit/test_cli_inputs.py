"""Every ``eddy`` command refuses a malformed value with a one-line error, before it connects."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from eddy.cli import main
from services.labeling.labellers import Labellers


def refused(args: list[str]) -> str:
    """The usage error ``eddy args`` ends with (exit status 2, no traceback)."""
    # no endpoints: a command that got past its arguments would fail on the missing broker
    result = CliRunner().invoke(main, args, env={"EDDY_KAFKA_BOOTSTRAP": "", "EDDY_REDIS_URL": ""})
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    return result.output


@pytest.mark.parametrize("rate", ["0", "-1", "nan", "inf"])
def test_the_demo_refuses_a_rate_that_is_not_a_finite_number_above_zero(rate: str) -> None:
    assert "is not a finite number above 0" in refused(["demo", "--rate", rate])


def test_the_demo_refuses_zero_events_instead_of_playing_the_default() -> None:
    assert "at least 1000 events" in refused(["demo", "--events", "0"])


@pytest.mark.parametrize("option", ["--label-delay", "--drift-width"])
def test_the_demo_refuses_a_negative_delay_or_drift_width(option: str) -> None:
    assert "-1 is not in the range x>=0" in refused(["demo", option, "-1"])


def test_the_label_page_refuses_a_port_that_does_not_exist() -> None:
    assert "99999 is not in the range 0<=x<=65535" in refused(["label-ui", "--port", "99999"])


def test_publishing_refuses_an_unknown_dataset_and_a_negative_warm_up() -> None:
    assert "'mnist' is not one of 'bananas', 'phishing'" in refused(
        ["models", "publish", "--dataset", "mnist"]
    )
    assert "-5 is not in the range x>=0" in refused(["models", "publish", "--warmup", "-5"])


@pytest.mark.parametrize(
    ("features", "why"),
    [
        ("{bad", "Invalid JSON"),
        ("[1, 2]", "Input should be an object"),
        ('{"https": [1]}', "https.float: Input should be a valid number"),
        ('{"https": {"nested": 1}}', "https.float: Input should be a valid number"),
        ("", "Invalid JSON"),
    ],
)
def test_a_prediction_call_refuses_features_that_are_not_an_object_of_values(
    features: str, why: str
) -> None:
    output = refused(["predict", features])

    assert "not a JSON object of feature values" in output
    assert why in output


def test_a_prediction_call_refuses_a_timeout_that_is_not_above_zero() -> None:
    assert "is not a finite number above 0" in refused(["predict", '{"a": 1}', "--timeout", "0"])


def test_a_labeller_is_added_from_stdin_and_a_weak_password_or_unsafe_name_is_refused(
    tmp_path: Path,
) -> None:
    env = {"EDDY_LABELING__UI_USERS_FILE": str(tmp_path / "labellers")}
    runner = CliRunner()

    def add(name: str, password: str) -> Result:
        return runner.invoke(
            main, ["labellers", "add", name, "--password-stdin"], password, env=env
        )

    added = add("ann", "a fine password\n")
    short = add("bob", "short\n")
    unsafe = add("<b>", "a fine password\n")

    assert added.exit_code == 0 and f"added ann in {tmp_path / 'labellers'}" in added.output
    assert short.exit_code == 1 and "at least 8 characters" in short.output
    assert unsafe.exit_code == 1 and "letters, digits" in unsafe.output
    assert Labellers.load(tmp_path / "labellers", {}).check("ann", "a fine password")


def test_the_label_page_with_nobody_allowed_in_says_how_to_add_someone(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["label-ui"], env={"EDDY_LABELING__UI_USERS_FILE": str(tmp_path / "nobody")}
    )
    assert result.exit_code == 1 and "eddy labellers add NAME" in result.output


def test_eddy_settings_shows_what_is_in_force_and_never_a_secret() -> None:
    secrets = {
        "EDDY_SIGNING_KEY": "signing-secret-1",
        "EDDY_PII_KEY": "pii-secret-2",
        "EDDY_REDIS_PASSWORD": "redis-secret-3",
        "EDDY_KAFKA__SASL_PASSWORD": "sasl-secret-4",
    }
    env = {**secrets, "EDDY_KAFKA__BATCH_SIZE": "321"}
    plain = CliRunner().invoke(main, ["settings"], env=env)
    as_json = CliRunner().invoke(main, ["settings", "--json"], env=env)
    assert plain.exit_code == as_json.exit_code == 0, plain.output + as_json.output
    assert "EDDY_KAFKA__BATCH_SIZE=321" in plain.output
    assert json.loads(as_json.output)["kafka"]["batch_size"] == 321
    for secret in secrets.values():
        assert secret not in plain.output and secret not in as_json.output
    assert "EDDY_SIGNING_KEY=**********" in plain.output
