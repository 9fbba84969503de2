"""Payloads of the label path: late labels, joined training examples, requests for labels."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from schemas.base import Features, Identifier, Payload, Target, utc_now


class Label(Payload):
    """The true outcome of an event, arriving late from a system or a person."""

    event_id: Identifier
    label: Target
    source: str = Field("system", max_length=100, description="Who gave it: a system or a person.")
    labeller: Identifier | None = Field(
        None, description="The person who answered, for labels given on the label page."
    )
    ts: datetime = Field(default_factory=utc_now)


class TrainingExample(Payload):
    """A label joined to the features served and the prediction made on them."""

    event_id: Identifier
    entity_id: Identifier
    ts: datetime
    features: Features
    label: Target
    prediction: Target | None = None
    model_version: int | None = None
    label_source: str = "system"


class LabelingTask(Payload):
    """A request to a person for a label where the model is unsure."""

    event_id: Identifier
    entity_id: Identifier
    features: Features
    prediction: Target
    uncertainty: float = Field(ge=0, le=1)
    explanation: dict[str, float] | None = Field(
        None,
        max_length=20,
        description="The model's largest feature contributions, when serving explains.",
    )
    model_version: int
    created_at: datetime = Field(default_factory=utc_now)
