"""Payloads of serving: predictions for every feature event, and request/reply calls."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Literal

import pydantic_core
from pydantic import BaseModel, ConfigDict, Field

from schemas.base import Features, Identifier, Payload, Target, utc_now

#: Who made a served prediction: the champion, or the challenger answering its canary share. (A
#: challenger in shadow answers on ``predictions.shadow`` only, as ``ShadowAnswers``.)
Variant = Literal["champion", "canary"]
#: Feature → its contribution toward the answer (services/serving/explain.py), at most 20.
Explanation = Annotated[dict[str, float], Field(max_length=20)]


class Prediction(Payload):
    """What serving predicted for one feature event, with the model that did it."""

    event_id: Identifier
    entity_id: Identifier
    ts: datetime = Field(description="Event time of the feature event.")
    features: Features = Field(
        description="The features the prediction was made on, as served: labeling joins labels to "
        "them, so a model learns from what it saw."
    )
    model_name: str
    model_version: int = Field(ge=1)
    variant: Variant = "champion"
    prediction: Target | None = Field(description="None while the model cannot answer yet.")
    probabilities: dict[str, float] | None = Field(
        None, description="Class probabilities (classifiers), keyed by the class as a string."
    )
    explanation: Explanation | None = Field(
        None,
        description="The largest feature contributions toward the answer, largest first (when "
        "serving explains: EDDY_SERVING__EXPLAIN).",
    )
    served_at: datetime = Field(default_factory=utc_now)


def prediction_json(
    event_id: str,
    entity_id: str,
    ts: datetime,
    features: Features,
    model_name: str,
    model_version: int,
    prediction: Any,
    probabilities: dict[str, float] | None,
    variant: Variant = "champion",
    explanation: dict[str, float] | None = None,
) -> bytes:
    """What ``Prediction(...).model_dump_json()`` gives, at a third of its cost, for serving.

    Serving writes one per event, and validating the model would mostly re-check what came
    validated (the ids, time and features of a ``FeatureEvent``, a version from the registry).
    What the model returned is checked here: a numpy scalar becomes its Python value, and
    anything not a class or a finite number raises ValueError. A test holds the two encodings
    equal.
    """
    prediction = _target(prediction)
    _check_probabilities(probabilities)
    return pydantic_core.to_json(
        {
            "schema_version": 1,
            "event_id": event_id,
            "entity_id": entity_id,
            "ts": ts,
            "features": features,
            "model_name": model_name,
            "model_version": model_version,
            "variant": variant,
            "prediction": prediction,
            "probabilities": probabilities,
            "explanation": explanation,
            "served_at": utc_now(),
        }
    )


def shadow_answer(
    event_id: str, prediction: Any, probabilities: dict[str, float] | None
) -> dict[str, Any]:
    """One ``ShadowAnswer`` as a dict, checked as ``prediction_json`` checks a prediction."""
    _check_probabilities(probabilities)
    return {"event_id": event_id, "prediction": _target(prediction), "probabilities": probabilities}


def shadow_answers_json(
    model_name: str, model_version: int, answers: list[dict[str, Any]]
) -> bytes:
    """What ``ShadowAnswers(...).model_dump_json()`` gives, from checked answers."""
    return pydantic_core.to_json(
        {
            "schema_version": 1,
            "model_name": model_name,
            "model_version": model_version,
            "answers": answers,
            "served_at": utc_now(),
        }
    )


def _check_probabilities(probabilities: dict[str, float] | None) -> None:
    if probabilities is not None:
        for key, value in probabilities.items():
            if not (isinstance(key, str) and isinstance(value, float) and math.isfinite(value)):
                raise ValueError(f"the model gave a probability {key!r}: {value!r}")


def _target(value: Any) -> Target | None:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"the model predicted {float(value)!r}")
        return float(value)
    item = getattr(value, "item", None)  # a numpy scalar
    if callable(item):
        return _target(item())
    raise ValueError(f"the model predicted a {type(value).__name__}, not a class or a number")


class ShadowAnswer(BaseModel):
    """A shadow's answer to one event."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: Identifier
    prediction: Target | None
    probabilities: dict[str, float] | None = None


class ShadowAnswers(Payload):
    """A challenger in shadow's answers to one batch of events, in one message.

    Never served: monitoring keeps them until the events' labels come, to score the challenger
    against the champion on the same events. One message a batch, not one an event, so a
    shadow costs serving and the broker a fraction of a second model's served predictions.
    """

    model_name: str
    model_version: int = Field(ge=1)
    answers: list[ShadowAnswer] = Field(max_length=100_000)
    served_at: datetime = Field(default_factory=utc_now)


class PredictionRequest(Payload):
    """A request/reply call: features in, one ``PredictionReply`` back with the same id."""

    correlation_id: Identifier
    features: Features
    entity_id: Identifier | None = Field(
        None,
        description="Fill the features not sent from this entity's latest ones in the feature "
        "store (what ingest last accepted for it).",
    )
    explain: bool = Field(False, description="Ask for the answer's feature contributions.")
    sent_at: datetime = Field(default_factory=utc_now)


class PredictionReply(Payload):
    """The answer to one ``PredictionRequest``; ``error`` is set when there is no prediction."""

    correlation_id: Identifier
    model_name: str
    model_version: int | None = None
    prediction: Target | None = None
    probabilities: dict[str, float] | None = None
    explanation: Explanation | None = None
    filled: list[str] | None = Field(
        None, description="The features taken from the feature store (a call with entity_id)."
    )
    error: str | None = None
    served_at: datetime = Field(default_factory=utc_now)
