"""Payloads of serving: predictions for every feature event, and request/reply calls."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from schemas.base import Features, Identifier, Payload, Target, utc_now

Variant = Literal["champion", "challenger"]


class Prediction(Payload):
    """What serving predicted for one feature event, with the model that did it."""

    event_id: Identifier
    entity_id: Identifier
    ts: datetime = Field(description="Event time of the feature event.")
    model_name: str
    model_version: int = Field(ge=1)
    variant: Variant = "champion"
    prediction: Target | None = Field(description="None while the model cannot answer yet.")
    probabilities: dict[str, float] | None = Field(
        None, description="Class probabilities (classifiers), keyed by the class as a string."
    )
    served_at: datetime = Field(default_factory=utc_now)


class PredictionRequest(Payload):
    """A request/reply call: features in, one ``PredictionReply`` back with the same id."""

    correlation_id: Identifier
    features: Features
    sent_at: datetime = Field(default_factory=utc_now)


class PredictionReply(Payload):
    """The answer to one ``PredictionRequest``; ``error`` is set when there is no prediction."""

    correlation_id: Identifier
    model_name: str
    model_version: int | None = None
    prediction: Target | None = None
    probabilities: dict[str, float] | None = None
    error: str | None = None
    served_at: datetime = Field(default_factory=utc_now)
