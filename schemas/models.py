"""The model registry's payload: one message on ``models`` per published model version."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.base import Payload, Target, utc_now

Flavour = Literal["river", "onnx"]
Trigger = Literal["initial", "scheduled", "drift", "manual", "rollback", "promote"]


class OffsetRange(BaseModel):
    """Lineage: the input offsets of one partition that a version learned from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    topic: str
    partition: int = Field(ge=0)
    first: int = Field(ge=0)
    last: int = Field(ge=0)


class ModelVersion(Payload):
    """A versioned, signed model artifact and where it came from."""

    model_name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.-]+$")
    version: int = Field(ge=1)
    flavour: Flavour
    artifact_uri: str = Field(description="Where the artifact bytes are (file:// URI).")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    signature: str = Field(pattern=r"^[0-9a-f]{64}$", description="HMAC-SHA256 of the artifact.")
    metrics: dict[str, float] = Field(default_factory=dict)
    parent_version: int | None = None
    trigger: Trigger
    drift_event_id: str | None = None
    lineage: list[OffsetRange] = Field(default_factory=list)
    feature_names: list[str] = Field(
        default_factory=list, description="Input order of the features (ONNX models)."
    )
    classes: list[Target] | None = Field(
        None, description="Output order of the classes (ONNX classifiers)."
    )
    description: str = ""
    created_at: datetime = Field(default_factory=utc_now)
