"""Feature schemas: loading them from TOML, and checking one event's features against them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from services.core.exceptions import ConfigurationError
from services.core.feature_schema import FeatureSchema, FeatureSpec, check_features, redact
from services.core.rejection import Rejection

PHISHING_FEATURES = {
    "empty_server_form_handler": 0.5,
    "popup_window": 0.0,
    "https": 1.0,
    "request_from_other_domain": 0.25,
    "anchor_from_other_domain": 0.75,
    "is_popular": 0.5,
    "long_url": 1.0,
    "age_of_domain": 1,
    "ip_in_url": 0,
}


@pytest.fixture(scope="module")
def phishing() -> FeatureSchema:
    return FeatureSchema.load("phishing")


@pytest.fixture(scope="module")
def mixed() -> FeatureSchema:
    """One feature of every type, plus optional ones with and without a default."""
    return FeatureSchema.model_validate(
        {
            "name": "mixed",
            "features": {
                "amount": {"type": "float", "min": 0.0, "max": 1000.0},
                "items": {"type": "int", "min": 0},
                "is_new": {"type": "bool"},
                "country": {"type": "category", "values": ["FR", "DE", "NL"]},
                "note": {"type": "string", "max_length": 10},
                "score": {"type": "float", "required": False},
                "channel": {
                    "type": "category",
                    "values": ["web", "app"],
                    "required": False,
                    "default": "web",
                },
            },
        }
    )


def valid_mixed(**changes: Any) -> dict[str, Any]:
    features: dict[str, Any] = {
        "amount": 12.5,
        "items": 3,
        "is_new": True,
        "country": "FR",
        "note": "ok",
    }
    features.update(changes)
    return features


def rejection(result: object) -> Rejection:
    assert isinstance(result, Rejection), f"expected a Rejection, got {result!r}"
    return result


# Loading


def test_phishing_schema_declares_the_nine_dataset_features(phishing: FeatureSchema) -> None:
    assert phishing.name == "phishing"
    assert set(phishing.features) == set(PHISHING_FEATURES)
    assert phishing.features["age_of_domain"].type == "int"
    assert phishing.features["https"] == FeatureSpec(type="float", min=0.0, max=1.0)


def test_schema_loads_from_a_toml_path(tmp_path: Path) -> None:
    path = tmp_path / "orders.toml"
    path.write_text('name = "orders"\n[features.total]\ntype = "float"\nmin = 0\n')

    schema = FeatureSchema.load(str(path))

    assert schema.name == "orders"
    assert schema.features["total"].min == 0.0


def test_missing_schema_name_raises_configuration_error_naming_the_file() -> None:
    with pytest.raises(ConfigurationError, match=r"no_such_schema\.toml"):
        FeatureSchema.load("no_such_schema")


def test_missing_schema_path_raises_configuration_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigurationError, match=r"absent\.toml") as raised:
        FeatureSchema.load(str(path))
    assert "EDDY_INGEST__FEATURE_SCHEMA" in str(raised.value)


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b'name = "broken\n', id="unterminated-string"),
        pytest.param(b"name = = 1\n", id="bad-syntax"),
        pytest.param(b'name = "x"\n\xff\xfe\n', id="not-utf8"),
        pytest.param(b'name = "x"\n[features.a]\ntype = "decimal"\n', id="unknown-type"),
        pytest.param(b'name = "x"\n[features.a]\ntype = "category"\n', id="category-no-values"),
        pytest.param(b'name = "x"\n[features.a]\ntype = "float"\nunit = "m"\n', id="unknown-key"),
        pytest.param(b'description = "no name"\n[features.a]\ntype = "int"\n', id="no-name"),
        pytest.param(b'name = "x"\n[features.a]\ntype = "string"\nmax_length = 0\n', id="len-0"),
    ],
)
def test_invalid_schema_file_raises_configuration_error_naming_the_file(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "bad.toml"
    path.write_bytes(content)

    with pytest.raises(ConfigurationError, match=re.escape(str(path))):
        FeatureSchema.load(str(path))


def test_schema_path_that_is_a_directory_raises_configuration_error(tmp_path: Path) -> None:
    folder = tmp_path / "schema.toml"
    folder.mkdir()

    with pytest.raises(ConfigurationError, match=r"schema\.toml"):
        FeatureSchema.load(str(folder))


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param({"type": "int", "required": False, "default": "many"}, id="int-default-str"),
        pytest.param(
            {"type": "float", "required": False, "max": 1.0, "default": 5.0}, id="over-max"
        ),
        pytest.param(
            {"type": "category", "values": ["a"], "required": False, "default": "z"},
            id="not-a-value",
        ),
    ],
)
def test_default_that_breaks_its_own_spec_is_refused(spec: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="default"):
        FeatureSpec.model_validate(spec)


# Checking features


def test_valid_phishing_features_are_accepted(phishing: FeatureSchema) -> None:
    assert check_features(phishing, PHISHING_FEATURES) == PHISHING_FEATURES


def test_int_is_normalised_to_float_for_a_float_feature(phishing: FeatureSchema) -> None:
    clean = check_features(phishing, {**PHISHING_FEATURES, "https": 1})

    assert isinstance(clean, dict)
    assert clean["https"] == 1.0
    assert type(clean["https"]) is float


def test_integral_float_is_normalised_to_int_for_an_int_feature(phishing: FeatureSchema) -> None:
    clean = check_features(phishing, {**PHISHING_FEATURES, "age_of_domain": 1.0})

    assert isinstance(clean, dict)
    assert clean["age_of_domain"] == 1
    assert type(clean["age_of_domain"]) is int


def test_whitespace_is_stripped_from_categories_and_strings(mixed: FeatureSchema) -> None:
    clean = check_features(mixed, valid_mixed(country="  DE\t", note="\n hello "))

    assert isinstance(clean, dict)
    assert clean["country"] == "DE"
    assert clean["note"] == "hello"


def test_string_length_is_measured_after_stripping(mixed: FeatureSchema) -> None:
    clean = check_features(mixed, valid_mixed(note="   exactly10!   "))

    assert isinstance(clean, dict)
    assert clean["note"] == "exactly10!"


@pytest.mark.parametrize("flag", [0, 1], ids=["zero", "one"])
def test_zero_and_one_are_accepted_as_bools(mixed: FeatureSchema, flag: int) -> None:
    clean = check_features(mixed, valid_mixed(is_new=flag))

    assert isinstance(clean, dict)
    assert clean["is_new"] is bool(flag)


def test_optional_feature_absent_takes_its_default(mixed: FeatureSchema) -> None:
    clean = check_features(mixed, valid_mixed())

    assert isinstance(clean, dict)
    assert clean["channel"] == "web"
    assert "score" not in clean


def test_optional_feature_sent_as_null_takes_its_default(mixed: FeatureSchema) -> None:
    clean = check_features(mixed, valid_mixed(channel=None, score=None))

    assert isinstance(clean, dict)
    assert clean["channel"] == "web"
    assert "score" not in clean


def test_optional_feature_sent_overrides_its_default(mixed: FeatureSchema) -> None:
    clean = check_features(mixed, valid_mixed(channel="app", score=7))

    assert isinstance(clean, dict)
    assert clean["channel"] == "app"
    assert clean["score"] == 7.0


def test_default_is_normalised_like_a_sent_value() -> None:
    schema = FeatureSchema.model_validate(
        {"name": "d", "features": {"x": {"type": "float", "required": False, "default": 0}}}
    )

    clean = check_features(schema, {})

    assert isinstance(clean, dict)
    assert type(clean["x"]) is float


@pytest.mark.parametrize(
    ("changes", "reason", "named"),
    [
        pytest.param({"amount": True}, "wrong_type", "amount", id="bool-for-float"),
        pytest.param({"items": False}, "wrong_type", "items", id="bool-for-int"),
        pytest.param({"items": 1.5}, "wrong_type", "items", id="fraction-for-int"),
        pytest.param({"amount": "12.5"}, "wrong_type", "amount", id="string-for-float"),
        pytest.param({"items": "3"}, "wrong_type", "items", id="string-for-int"),
        pytest.param({"amount": [1.0]}, "wrong_type", "amount", id="list-for-float"),
        pytest.param({"amount": {"v": 1}}, "wrong_type", "amount", id="object-for-float"),
        pytest.param({"is_new": "true"}, "wrong_type", "is_new", id="string-for-bool"),
        pytest.param({"is_new": 2}, "wrong_type", "is_new", id="two-for-bool"),
        pytest.param({"is_new": 1.0}, "wrong_type", "is_new", id="float-for-bool"),
        pytest.param({"country": 1}, "wrong_type", "country", id="number-for-category"),
        pytest.param({"note": 42}, "wrong_type", "note", id="number-for-string"),
        pytest.param({"amount": float("nan")}, "invalid_value", "amount", id="nan"),
        pytest.param({"amount": float("inf")}, "invalid_value", "amount", id="infinity"),
        pytest.param({"items": float("-inf")}, "invalid_value", "items", id="minus-infinity"),
        pytest.param({"amount": 10**400}, "out_of_range", "amount", id="huge-integer"),
        pytest.param({"amount": -0.01}, "out_of_range", "amount", id="under-min"),
        pytest.param({"amount": 1000.5}, "out_of_range", "amount", id="over-max"),
        pytest.param({"items": -1}, "out_of_range", "items", id="int-under-min"),
        pytest.param({"note": "x" * 11}, "out_of_range", "note", id="string-too-long"),
        pytest.param({"country": "US"}, "invalid_value", "country", id="unknown-category"),
        pytest.param({"country": "fr"}, "invalid_value", "country", id="category-wrong-case"),
        pytest.param({"country": None}, "missing_field", "country", id="required-null"),
        pytest.param({"colour": "red"}, "unknown_field", "colour", id="unknown-feature"),
    ],
)
def test_bad_feature_is_rejected_with_its_reason_and_name(
    mixed: FeatureSchema, changes: dict[str, Any], reason: str, named: str
) -> None:
    result = rejection(check_features(mixed, valid_mixed(**changes)))

    assert result.reason == reason
    assert named in result.detail


def test_missing_required_feature_is_rejected_as_missing_field(mixed: FeatureSchema) -> None:
    features = valid_mixed()
    del features["items"]

    result = rejection(check_features(mixed, features))

    assert result.reason == "missing_field"
    assert result.detail.startswith("items:")


def test_unknown_features_are_reported_before_anything_else(mixed: FeatureSchema) -> None:
    result = rejection(check_features(mixed, {"zz": 1, "aa": 2}))

    assert result.reason == "unknown_field"
    assert "['aa', 'zz']" in result.detail


def test_many_long_unknown_feature_names_give_a_short_detail(mixed: FeatureSchema) -> None:
    features = valid_mixed(**{f"{i:04d}" + "x" * 10_000: 1 for i in range(1000)})

    result = rejection(check_features(mixed, features))

    assert result.reason == "unknown_field"
    assert len(result.detail) < 500


def test_long_bad_bool_gives_a_short_detail(mixed: FeatureSchema) -> None:
    result = rejection(check_features(mixed, valid_mixed(is_new="y" * 100_000)))

    assert result.reason == "wrong_type"
    assert len(result.detail) <= 300


# personal data


def _personal() -> FeatureSchema:
    return FeatureSchema.model_validate(
        {
            "name": "people",
            "features": {
                "amount": {"type": "float"},
                "email": {"type": "string", "pii": "hash"},
                "phone": {"type": "string", "required": False, "pii": "drop"},
            },
        }
    )


def test_personal_values_come_out_hashed_with_the_key_or_dropped() -> None:
    schema = _personal()
    raw = {"amount": 3.0, "email": "a@example.com", "phone": "+1 555 0100"}

    one, again = check_features(schema, raw, b"k1"), check_features(schema, raw, b"k1")
    other_key = check_features(schema, raw, b"k2")

    assert isinstance(one, dict) and isinstance(other_key, dict)
    assert one == again and one["email"] != other_key["email"]  # stable, and keyed
    assert set(one) == {"amount", "email"} and str(one["email"]).startswith("h:")
    assert "a@example.com" not in str(one)
    assert schema.model_features() == ["amount", "email"]


def test_a_rejection_of_a_personal_value_does_not_quote_it() -> None:
    result = check_features(_personal(), {"amount": 1.0, "email": ["alice@example.com"]}, b"k")
    assert isinstance(result, Rejection) and "alice" not in result.detail


def test_hashing_is_only_for_strings_and_needs_a_key() -> None:
    with pytest.raises(ValueError, match="declare the feature as type 'string'"):
        FeatureSpec.model_validate({"type": "float", "pii": "hash"})
    with pytest.raises(ConfigurationError, match="EDDY_PII_KEY"):
        _personal().require_pii_key(b"")


def test_a_reject_keeps_its_other_fields_and_loses_its_personal_ones() -> None:
    raw = b'{"event_id": "e", "features": {"amount": "x", "email": "a@b.c", "phone": "123"}}'
    redacted = redact(raw, _personal(), b"k")
    assert redacted is not None and b"a@b.c" not in redacted and b"123" not in redacted
    assert b'"amount": "x"' in redacted
    assert redact(b'{"features": "a@b.c"', _personal(), b"k") is None  # unparsed: nothing kept


def test_features_a_call_lacks_come_from_the_store_as_stored() -> None:
    schema = _personal()
    stored = check_features(schema, {"amount": 1.0, "email": "a@example.com"}, b"k")
    assert isinstance(stored, dict)

    filled = check_features(schema, {"amount": 7.5}, b"k", stored)

    assert filled == {"amount": 7.5, "email": stored["email"]}, "stored hash kept, not re-hashed"


def test_a_stored_entity_does_not_let_an_unknown_feature_in() -> None:
    schema = _personal()

    refused = check_features(schema, {"amont": 7.5}, b"k", {"amount": 1.0, "email": "h:x"})

    assert isinstance(refused, Rejection) and refused.reason == "unknown_field"
