"""Serving's fast Prediction encoding: the same JSON as the pydantic model.

A model's bad answers are refused, so that one of them becomes a dead letter, not a crash.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pytest
import redis

from schemas import DeadLetter, FeatureEvent, ModelVersion, Prediction, ShadowAnswers
from schemas.predictions import Variant, prediction_json, shadow_answer, shadow_answers_json
from services.core.runtime import Runtime
from services.core.settings import Settings
from services.core.stream import StopSignal
from services.core.topics import Topics
from services.serving.model import LoadedModel, Probabilities
from services.serving.model import Runtime as ModelRuntime
from services.serving.service import FeaturesHandler
from services.serving.watcher import Lineup
from tests.unit.test_dead_letters import FakeMessage

TS = datetime(2026, 11, 30, 16, 45, 1, 123456, tzinfo=UTC)
#: Features of every JSON type a value can have, each to be written back as it came.
FEATURES = {"x": 0.1 + 0.2, "n": 3, "flag": True, "tld": 'c"m', "tiny": 1e-300}


def _before_served_at(raw: bytes) -> bytes:
    return raw[: raw.index(b'"served_at"')]


@pytest.mark.parametrize(
    ("prediction", "probabilities"),
    [
        (True, {"False": 0.25, "True": 0.75}),
        (False, {"False": 1.0, "True": 0.0}),
        (3, {"1": 0.1, "2": 0.2, "3": 0.7}),
        ("spam", {"ham": 0.4, "spam": 0.6, 'élan "quoted"': 0.0}),
        (0.1 + 0.2, None),
        (-1e300, None),
        (2**70, None),
        (None, None),
        ("", {}),
    ],
)
@pytest.mark.parametrize("variant", ["champion", "canary"])
def test_it_encodes_exactly_what_the_model_would(
    prediction: Any, probabilities: dict[str, float] | None, variant: Variant
) -> None:
    fields: dict[str, Any] = {
        "event_id": "evt-1",
        "entity_id": "user/42",
        "ts": TS,
        "features": FEATURES,
        "model_name": "default",
        "model_version": 7,
        "prediction": prediction,
        "probabilities": probabilities,
        "variant": variant,
    }

    fast = prediction_json(**fields)

    slow = Prediction(**fields).model_dump_json().encode()
    assert _before_served_at(fast) == _before_served_at(slow)
    decoded = Prediction.model_validate_json(fast)
    assert decoded.prediction == prediction and type(decoded.prediction) is type(prediction)
    assert abs(decoded.served_at - datetime.now(UTC)) < timedelta(minutes=1)


def test_a_shadows_batch_encodes_exactly_what_the_model_would() -> None:
    answers = [
        shadow_answer("evt-1", np.bool_(True), {"False": 0.25, "True": 0.75}),
        shadow_answer("evt-2", 3.5, None),
    ]

    fast = shadow_answers_json("default", 4, answers)

    decoded = ShadowAnswers.model_validate_json(fast)
    assert [(a.event_id, a.prediction) for a in decoded.answers] == [
        ("evt-1", True),
        ("evt-2", 3.5),
    ]
    again = ShadowAnswers(**{**decoded.model_dump(), "served_at": decoded.served_at})
    assert again.model_dump_json().encode() == fast


def test_a_shadow_answer_the_model_got_wrong_is_refused() -> None:
    with pytest.raises(ValueError, match="predicted nan"):
        shadow_answer("evt-1", float("nan"), None)
    with pytest.raises(ValueError, match="probability"):
        shadow_answer("evt-1", True, {"True": float("inf")})


def test_an_event_time_in_another_zone_is_written_as_pydantic_writes_it() -> None:
    ts = datetime(2026, 11, 30, 18, 0, tzinfo=timezone(timedelta(hours=2)))

    fast = prediction_json("e", "k", ts, FEATURES, "m", 1, True, None)

    slow = Prediction(
        event_id="e",
        entity_id="k",
        ts=ts,
        features=FEATURES,
        model_name="m",
        model_version=1,
        prediction=True,
    )
    assert _before_served_at(fast) == _before_served_at(slow.model_dump_json().encode())


@pytest.mark.parametrize(
    ("scalar", "expected"),
    [(np.bool_(True), True), (np.int64(3), 3), (np.float32(0.5), 0.5), (np.str_("a"), "a")],
)
def test_a_numpy_scalar_is_written_as_its_python_value(scalar: Any, expected: Any) -> None:
    decoded = Prediction.model_validate_json(
        prediction_json("e", "k", TS, FEATURES, "m", 1, scalar, None)
    )

    assert decoded.prediction == expected and type(decoded.prediction) is type(expected)


@pytest.mark.parametrize(
    ("prediction", "probabilities", "message"),
    [
        (float("nan"), None, "predicted nan"),
        (float("inf"), None, "predicted inf"),
        (np.float64("nan"), None, "predicted nan"),
        ([1, 2], None, "predicted a list"),
        (object(), None, "predicted a object"),
        (True, {"True": float("nan")}, "probability 'True': nan"),
        (True, {"True": "0.5"}, "probability 'True': '0.5'"),
        (True, {1: 0.5}, "probability 1: 0.5"),
    ],
)
def test_an_answer_that_is_not_a_class_or_a_finite_number_is_refused(
    prediction: Any, probabilities: Any, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        prediction_json("e", "k", TS, FEATURES, "m", 1, prediction, probabilities)


# the features handler, fed a model that answers badly


@dataclass
class ScriptedPredictor:
    """Answers with what it is given, in order."""

    answers: list[tuple[Any, Probabilities]]
    runtime: ModelRuntime = "river"

    def predict(self, features: dict[str, Any]) -> tuple[Any, Probabilities]:
        return self.answers.pop(0)

    def predict_many(self, rows: Sequence[dict[str, Any]]) -> list[tuple[Any, Probabilities]]:
        return [self.predict(row) for row in rows]


@dataclass
class FixedWatcher:
    lineup: Lineup


def _feature_message(event_id: str) -> FakeMessage:
    event = FeatureEvent(
        event_id=event_id,
        entity_id="user-1",
        ts=TS,
        features={"x": 1.0},
        feature_schema="test",
    )
    return FakeMessage(event.model_dump_json().encode(), topic_name="features")


def test_an_answer_that_cannot_be_served_goes_to_the_dlq_and_the_next_event_is_served() -> None:
    version = ModelVersion(
        model_name="default",
        version=3,
        flavour="river",
        artifact_uri="file:///nowhere",
        sha256="0" * 64,
        key_id="hmac:0000000000000000",
        signature="0" * 64,
        trigger="initial",
    )
    predictor = ScriptedPredictor([(float("nan"), None), (True, {"False": 0.2, "True": 0.8})])
    runtime = Runtime("serving", Settings(), Topics(""), redis.Redis(), StopSignal(), 0)
    watcher = FixedWatcher(Lineup(LoadedModel(version, predictor)))
    handler = FeaturesHandler(runtime, watcher)  # type: ignore[arg-type]

    effects = handler([_feature_message("bad"), _feature_message("good")])

    (letter_out, prediction_out) = effects.outputs
    assert letter_out.topic == runtime.topics("dlq")
    letter = DeadLetter.model_validate_json(letter_out.value)
    assert (letter.reason, letter.event_id) == ("handler_error", "bad")
    assert "predicted nan" in letter.detail
    assert prediction_out.topic == runtime.topics("predictions")
    assert prediction_out.key == b"user-1"
    prediction = Prediction.model_validate_json(prediction_out.value)
    assert (prediction.event_id, prediction.prediction) == ("good", True)
    assert prediction.features == {"x": 1.0}, "a prediction carries the features it was made on"
    assert prediction.model_version == 3
