"""Generated hostile input: each decoder and validator gives a result or a clear error, no crash.

Each property states what may come out of one input path; hypothesis searches for an input
that makes anything else come out (another exception escaping the handler's code).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from schemas import Label, ModelVersion, PredictionRequest, RawEvent, TrainingExample
from services.core.exceptions import ConfigurationError
from services.core.feature_schema import FeatureSchema, check_features
from services.core.model_specs import load_specs
from services.core.rejection import Rejection
from services.core.stream import Effects, decode
from services.core.target import TargetSpec
from services.ingest.validation import CleanEvent, validate_raw
from services.labeling.board import parse_answer
from tests.unit.test_dead_letters import FakeMessage

SCHEMA = FeatureSchema.load("phishing")
NAMES = list(SCHEMA.features)

#: JSON values of every kind, nested a little: what a hostile producer can write.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
#: Feature dicts close to the schema: its names and some others, any values.
feature_dicts = st.dictionaries(
    st.sampled_from([*NAMES, "unknown", "", "<b>"]), json_values, max_size=len(NAMES) + 2
)
#: Envelopes close to a raw event, with hostile fields and values.
envelopes = st.fixed_dictionaries(
    {},
    optional={
        "event_id": json_values | st.text(max_size=250),
        "entity_id": json_values | st.text(max_size=250),
        "ts": json_values | st.datetimes().map(lambda d: d.isoformat()),
        "features": feature_dicts | json_values,
        "schema_version": json_values,
        "extra": json_values,
    },
)
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(st.binary(max_size=3000))
def test_any_bytes_at_ingest_are_a_clean_event_or_a_rejection(raw: bytes) -> None:
    assert isinstance(validate_raw(raw, SCHEMA, 2048), CleanEvent | Rejection)


@FAST
@given(envelopes)
def test_any_json_envelope_at_ingest_is_a_clean_event_or_a_rejection(event: dict[str, Any]) -> None:
    raw = json.dumps(event).encode()
    result = validate_raw(raw, SCHEMA, 65_536)
    assert isinstance(result, CleanEvent | Rejection)
    if isinstance(result, CleanEvent):  # what is accepted is what the schema allows
        assert set(result.features) <= set(NAMES)
        RawEvent.model_validate_json(raw)


@FAST
@given(feature_dicts)
def test_any_features_are_normalised_or_rejected(features: dict[str, Any]) -> None:
    assert isinstance(check_features(SCHEMA, features), dict | Rejection)


@pytest.mark.parametrize(
    "model",
    [Label, PredictionRequest, ModelVersion, TrainingExample, RawEvent],
    ids=lambda m: m.__name__,
)
@FAST
@given(raw=st.binary(max_size=1000) | envelopes.map(lambda e: json.dumps(e).encode()))
def test_any_message_decodes_or_becomes_a_dead_letter(model: type[BaseModel], raw: bytes) -> None:
    effects = Effects()
    decoded = decode(FakeMessage(raw), model, "test", "dlq", effects)  # type: ignore[arg-type]
    assert (decoded is None) == (len(effects.outputs) == 1)


@FAST
@given(json_values, st.sampled_from(["binary", "multiclass", "regression"]))
def test_any_label_fits_the_target_or_is_a_rejection(value: Any, kind: str) -> None:
    target = TargetSpec.model_validate({"type": kind})
    assert not isinstance(target.check(value), Exception)


@FAST
@given(st.text(max_size=300), st.sampled_from([True, 1, 2.5, "cat"]))
def test_any_answer_on_the_label_page_is_a_label_or_a_value_error(text: str, guess: Any) -> None:
    with contextlib.suppress(ValueError):
        parse_answer(text, guess, TargetSpec(type="multiclass", classes=["cat", "dog"]))


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.text(max_size=400))
def test_any_schema_or_models_file_loads_or_is_a_configuration_error(
    tmp_path: Path, text: str
) -> None:
    for loader in (FeatureSchema.load, lambda path: load_specs(path, SCHEMA)):
        path = tmp_path / "file.toml"
        path.write_text(text)
        with contextlib.suppress(ConfigurationError):
            loader(str(path))
