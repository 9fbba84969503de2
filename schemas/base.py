"""The base of every payload: JSON on the wire, strict about unknown fields, versioned."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

#: Identifiers become Kafka keys, Redis keys, log fields and text on the label page: 1-200
#: characters among letters, digits and ``. _ - : / @ + = ~ #`` (UUIDs, ULIDs, ``user:42``,
#: e-mail-like and path-like ids). Markup, quotes, spaces and control characters are refused.
Identifier = Annotated[
    str,
    StringConstraints(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._\-:/@+=~#]+$"),
]
#: A value a model sees: numbers, categories, flags. Each value keeps its JSON type (pydantic's
#: smart unions pick the exact match); float comes first because most features are floats and
#: the first exact match ends the search, which makes validating a payload a third cheaper.
FeatureValue = float | int | bool | str
#: A label or a prediction: a class (bool, int, str) or a regression target (float).
Target = bool | int | float | str
Features = dict[str, FeatureValue]


def utc_now() -> datetime:
    """The current time, timezone-aware."""
    return datetime.now(UTC)


class Payload(BaseModel):
    """Every topic payload: unknown fields are refused, and the schema version travels along."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    schema_version: int = Field(1, ge=1, le=1, description="Version of this payload's schema.")
