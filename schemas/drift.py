"""The monitoring service's payload: one message on ``drift`` per detected change."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from schemas.base import Identifier, Payload, utc_now

DriftKind = Literal["data", "prediction", "concept", "label_coverage"]


class DriftEvent(Payload):
    """What drifted, by how much, seen by which detector, under which model version."""

    drift_id: Identifier
    kind: DriftKind
    subject: str = Field(description="The feature, 'error', 'prediction' or 'label_coverage'.")
    detector: str
    magnitude: float | None = None
    window: int = Field(
        ge=0, description="Observations since the estimated change point (what to retrain on)."
    )
    model_name: str
    model_version: int | None = None
    detected_at: datetime = Field(default_factory=utc_now)
