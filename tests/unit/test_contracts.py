"""The contract between services: payload models, their committed JSON Schemas, and the topics."""

from __future__ import annotations

import inspect
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

import schemas
from schemas import PAYLOADS, Payload
from schemas.export import rendered_schemas, stale_schemas
from services.core.topics import declared_topics

TS = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
FEATURES = {"amount": 12.5, "items": 3, "is_new": True, "country": "FR"}

#: One realistic instance of every payload, as the fields a producer would send.
SAMPLES: dict[str, dict[str, Any]] = {
    "Alert": {
        "alert_id": "alert-1",
        "state": "firing",
        "model_name": "phishing",
        "model_version": 3,
        "kpi": "accuracy",
        "value": 0.71,
        "bound": ">= 0.8",
        "window": 1000,
    },
    "RawEvent": {
        "event_id": "evt-1",
        "entity_id": "page-42",
        "ts": TS,
        "features": {"amount": "12.5", "tags": ["a", "b"], "nested": {"x": None}},
    },
    "FeatureEvent": {
        "event_id": "evt-1",
        "entity_id": "page-42",
        "ts": TS,
        "features": FEATURES,
        "feature_schema": "phishing",
        "ingested_at": TS,
    },
    "DeadLetter": {
        "reason": "wrong_type",
        "detail": "features.amount: expected float, got str",
        "service": "ingest",
        "source_topic": "events.raw",
        "source_partition": 2,
        "source_offset": 1234,
        "original": "e30=",
        "original_size": 2,
        "event_id": "evt-1",
        "failed_at": TS,
    },
    "Prediction": {
        "event_id": "evt-1",
        "entity_id": "page-42",
        "ts": TS,
        "features": FEATURES,
        "model_name": "phishing",
        "model_version": 4,
        "variant": "canary",
        "prediction": True,
        "probabilities": {"True": 0.75, "False": 0.25},
        "served_at": TS,
    },
    "PredictionRequest": {"correlation_id": "call-9", "features": FEATURES, "sent_at": TS},
    "PredictionReply": {
        "correlation_id": "call-9",
        "model_name": "phishing",
        "model_version": 4,
        "prediction": "fraud",
        "probabilities": {"fraud": 0.9, "ok": 0.1},
        "served_at": TS,
    },
    "Label": {"event_id": "evt-1", "label": 1, "source": "analyst:ana", "ts": TS},
    "TrainingExample": {
        "event_id": "evt-1",
        "entity_id": "page-42",
        "ts": TS,
        "features": FEATURES,
        "label": False,
        "prediction": True,
        "model_version": 4,
        "label_source": "system",
    },
    "LabelingTask": {
        "event_id": "evt-1",
        "entity_id": "page-42",
        "features": FEATURES,
        "prediction": 0.5,
        "uncertainty": 0.49,
        "model_version": 4,
        "created_at": TS,
    },
    "ModelVersion": {
        "model_name": "phishing",
        "version": 5,
        "flavour": "onnx",
        "artifact_uri": "file:///var/lib/eddy/registry/phishing/v5-0a1b2c3d.bin",
        "sha256": "a" * 64,
        "key_id": "ed25519:0123456789abcdef",
        "signature": "b" * 128,
        "metrics": {"accuracy": 0.91, "log_loss": 0.27},
        "parent_version": 4,
        "trigger": "drift",
        "drift_event_id": "drift-3",
        "lineage": [{"topic": "training.examples", "partition": 0, "first": 0, "last": 999}],
        "feature_names": ["amount", "items"],
        "classes": [False, True],
        "description": "retrained after drift on amount",
        "created_at": TS,
    },
    "ShadowAnswers": {
        "model_name": "phishing",
        "model_version": 5,
        "answers": [
            {"event_id": "evt-1", "prediction": True, "probabilities": {"False": 0.3, "True": 0.7}},
            {"event_id": "evt-2", "prediction": False, "probabilities": None},
        ],
        "served_at": TS,
    },
    "Deployment": {
        "model_name": "phishing",
        "seq": 3,
        "action": "step",
        "champion_version": 4,
        "follow": False,
        "mode": "canary",
        "challenger_version": 5,
        "share": 0.25,
        "steps": [0.5],
        "decided_by": "rule",
        "reason": "the challenger held its score over 200 labelled events",
        "figures": {"difference": 0.01, "likelihood_ratio": 1.3},
        "key_id": "hmac:0123456789abcdef",
        "signature": "c" * 64,
        "created_at": TS,
    },
    "DriftEvent": {
        "drift_id": "drift-3",
        "kind": "data",
        "subject": "amount",
        "detector": "ADWIN",
        "magnitude": 0.4,
        "window": 512,
        "model_name": "phishing",
        "model_version": 4,
        "detected_at": TS,
    },
}


def test_committed_json_schemas_match_the_models() -> None:
    assert stale_schemas() == [], "run `eddy schemas export` and commit schemas/json/"


def test_every_payload_has_a_rendered_schema() -> None:
    assert set(rendered_schemas()) == {f"{name}.schema.json" for name in PAYLOADS}


def test_stale_schemas_reports_a_changed_a_missing_and_an_orphan_file(tmp_path: Path) -> None:
    for name, text in rendered_schemas().items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    (tmp_path / "Label.schema.json").write_text("{}\n", encoding="utf-8")
    (tmp_path / "Prediction.schema.json").unlink()
    (tmp_path / "Retired.schema.json").write_text("{}\n", encoding="utf-8")

    assert stale_schemas(tmp_path) == [
        "Label.schema.json",
        "Prediction.schema.json",
        "Retired.schema.json",
    ]


def test_every_topic_payload_names_a_payload_model() -> None:
    unknown = {spec.payload for spec in declared_topics().values()} - PAYLOADS.keys()

    assert unknown == set()


def test_every_payload_model_is_carried_by_some_topic() -> None:
    unused = PAYLOADS.keys() - {spec.payload for spec in declared_topics().values()}

    assert unused == set()


def test_payloads_are_keyed_by_their_class_name() -> None:
    assert all(model.__name__ == name for name, model in PAYLOADS.items())
    assert all(issubclass(model, Payload) for model in PAYLOADS.values())


def test_every_payload_has_a_sample_here() -> None:
    assert SAMPLES.keys() == PAYLOADS.keys()


@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_payload_round_trips_through_json(name: str) -> None:
    model = PAYLOADS[name]
    payload = model.model_validate(SAMPLES[name])

    again = model.model_validate_json(payload.model_dump_json())

    assert again == payload
    assert again.model_dump() == payload.model_dump()


@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_payload_refuses_unknown_fields(name: str) -> None:
    with pytest.raises(ValidationError) as raised:
        PAYLOADS[name].model_validate({**SAMPLES[name], "surprise": 1})

    assert [error["type"] for error in raised.value.errors()] == ["extra_forbidden"]


@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_payload_refuses_a_schema_version_it_does_not_know(name: str) -> None:
    with pytest.raises(ValidationError, match="schema_version"):
        PAYLOADS[name].model_validate({**SAMPLES[name], "schema_version": 2})


@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_payload_is_frozen(name: str) -> None:
    payload = PAYLOADS[name].model_validate(SAMPLES[name])

    with pytest.raises(ValidationError):
        payload.schema_version = 1  # type: ignore[misc]


def test_payloads_refuse_non_finite_floats() -> None:
    with pytest.raises(ValidationError):
        PAYLOADS["DriftEvent"].model_validate({**SAMPLES["DriftEvent"], "magnitude": float("nan")})


def test_feature_values_keep_their_json_types() -> None:
    wire = (
        b'{"event_id": "e1", "entity_id": "a", "ts": "2024-05-01T12:00:00Z", "label": true, '
        b'"features": {"amount": 12.5, "items": 3, "whole": 3.0, "is_new": true, "n": "7"}}'
    )
    features = PAYLOADS["TrainingExample"].model_validate_json(wire).features  # type: ignore[attr-defined]

    assert [(v, type(v)) for v in features.values()] == [
        (12.5, float),
        (3, int),
        (3.0, float),
        (True, bool),
        ("7", str),
    ]


def _isort_key(name: str) -> tuple[int, str]:
    # The order ruff's RUF022 keeps: CONSTANTS, then Classes, then the rest.
    if name.isupper():
        return 0, name
    return (1 if name[0].isupper() else 2), name


def test_public_names_are_sorted() -> None:
    assert schemas.__all__ == sorted(schemas.__all__, key=_isort_key)


def test_public_names_are_complete() -> None:
    public = {
        name
        for name, value in vars(schemas).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }

    assert set(schemas.__all__) == public
    assert set(PAYLOADS) <= set(schemas.__all__)
