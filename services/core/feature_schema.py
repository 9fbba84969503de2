"""A declared feature schema (``infra/features/<name>.toml``): features, target, checks of events.

Pure logic, no I/O besides loading the schema file: every rule here is unit-tested alone.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.base import Features, FeatureValue
from services.core.aggregates import DerivedSpec, WindowPolicy, check_derived
from services.core.exceptions import ConfigurationError
from services.core.rejection import Rejection
from services.core.target import TargetSpec
from services.core.topics import infra_path

FeatureType = Literal["float", "int", "bool", "category", "string"]


class FeatureSpec(BaseModel):
    """What one feature may be."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: FeatureType
    required: bool = True
    min: float | None = None
    max: float | None = None
    values: list[str] | None = Field(None, description="Allowed values of a category.")
    max_length: int = Field(256, ge=1)
    default: FeatureValue | None = None
    time_like: bool = Field(
        False,
        description="Grows with time (a date, a counter): never tested for data drift, as it "
        "always drifts.",
    )
    pii: Literal["keep", "hash", "drop"] = Field(
        "keep",
        description="Personal data: `hash` replaces the value by a keyed hash (EDDY_PII_KEY) "
        "before anything is written, `drop` removes it; the raw value goes nowhere.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> FeatureSpec:
        if self.type == "category" and not self.values:
            raise ValueError("a category feature needs `values`")
        if self.pii == "hash" and self.type != "string":
            raise ValueError(
                f"pii = 'hash' makes a string of the value: declare the feature as type "
                f"'string' (it is {self.type!r}), or drop it"
            )
        if self.default is not None:
            default = _normalised("default", self, self.default)
            if isinstance(default, Rejection):
                raise ValueError(f"the default breaks its own spec: {default.detail}")
            object.__setattr__(self, "default", default)  # stored as a sent value would be
        return self


class FeatureSchema(BaseModel):
    """The features an event must carry, by name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    features: dict[str, FeatureSpec]
    target: TargetSpec = Field(default_factory=TargetSpec)
    derived: dict[str, DerivedSpec] = Field(
        default_factory=dict,
        description="Features ingest computes per entity (windowed aggregates, transforms).",
    )
    windows: WindowPolicy = Field(default_factory=WindowPolicy)

    @model_validator(mode="after")
    def _derived_read_declared_features(self) -> FeatureSchema:
        check_derived(self.derived, {name: spec.type for name, spec in self.features.items()})
        return self

    def served(self) -> FeatureSchema:
        """The schema as models and serving see it: derived features as optional numbers.

        Producers never send derived features (ingest refuses them as unknown); a request to
        serving may carry them, or have them filled from the feature store by entity.
        """
        if not self.derived:
            return self
        computed = {name: FeatureSpec(type="float", required=False) for name in self.derived}
        return self.model_copy(update={"features": {**self.features, **computed}, "derived": {}})

    @property
    def personal(self) -> dict[str, str]:
        """Feature → what is done with it (``hash`` or ``drop``), for those marked as personal."""
        return {name: spec.pii for name, spec in self.features.items() if spec.pii != "keep"}

    def require_pii_key(self, key: bytes) -> None:
        """A configuration error if the schema hashes personal data and there is no key."""
        hashed = [name for name, action in self.personal.items() if action == "hash"]
        if hashed and not key:
            raise ConfigurationError(
                f"EDDY_PII_KEY is not set: feature schema {self.name!r} hashes personal data "
                f"({', '.join(hashed)}); set it (or EDDY_PII_KEY_FILE) to a long random secret"
            )

    def model_features(self) -> list[str]:
        """The features a model sees: all but those dropped as personal data, then derived ones."""
        raw = [name for name, spec in self.features.items() if spec.pii != "drop"]
        return raw + list(self.derived)

    @classmethod
    def load(cls, name_or_path: str) -> FeatureSchema:
        """Load a schema by name (``infra/features/<name>.toml``) or by file path."""
        path = Path(name_or_path)
        if not path.suffix:
            path = infra_path("features", f"{name_or_path}.toml")
        try:
            with open(path, "rb") as file:
                return cls.model_validate(tomllib.load(file))
        except FileNotFoundError:
            raise ConfigurationError(
                f"feature schema {name_or_path!r} not found (looked at {path}); set "
                "EDDY_INGEST__FEATURE_SCHEMA to a name in infra/features/ or a TOML path"
            ) from None
        except OSError as exc:
            raise ConfigurationError(f"cannot read feature schema {path}: {exc.strerror}") from exc
        except (tomllib.TOMLDecodeError, ValueError) as exc:
            raise ConfigurationError(f"feature schema {path} is invalid: {exc}") from exc


def _number(name: str, spec: FeatureSpec, value: Any) -> FeatureValue | Rejection:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return Rejection("wrong_type", f"{name}: expected {spec.type}, got {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:  # an integer too large for a float
        return Rejection("out_of_range", f"{name}: integer too large")
    if not math.isfinite(number):
        return Rejection("invalid_value", f"{name}: {value} is not a finite number")
    if (spec.min is not None and number < spec.min) or (spec.max is not None and number > spec.max):
        return Rejection("out_of_range", f"{name}: {number} outside [{spec.min}, {spec.max}]")
    if spec.type == "float":
        return number
    if not number.is_integer():
        return Rejection("wrong_type", f"{name}: expected int, got {number}")
    return int(value)


def _normalised(name: str, spec: FeatureSpec, value: Any) -> FeatureValue | Rejection:
    """The value in its canonical form, or why it is not acceptable."""
    if spec.type in ("float", "int"):
        return _number(name, spec, value)
    if spec.type == "bool":
        if isinstance(value, bool):
            return value
        if value in (0, 1) and not isinstance(value, float):
            return bool(value)
        return Rejection("wrong_type", f"{name}: expected bool, got {value!r}"[:300])
    if not isinstance(value, str):
        return Rejection("wrong_type", f"{name}: expected {spec.type}, got {type(value).__name__}")
    text = value.strip()
    if len(text) > spec.max_length:
        return Rejection("out_of_range", f"{name}: {len(text)} characters, over {spec.max_length}")
    if spec.type == "category" and spec.values is not None and text not in spec.values:
        return Rejection("invalid_value", f"{name}: {text[:50]!r} is not one of {spec.values}")
    return text


def check_features(
    schema: FeatureSchema,
    raw: dict[str, Any],
    pii_key: bytes = b"",
    stored: Mapping[str, FeatureValue] | None = None,
) -> Features | Rejection:
    """The event's features normalised to the schema, or the first reason they are not valid.

    Personal data comes out hashed with ``pii_key`` or dropped, as the schema marks it; a
    rejection never quotes a personal value. ``stored``: clean values (the feature store's) for
    the features ``raw`` lacks, taken as they are.
    """
    unknown = raw.keys() - schema.features.keys()
    if unknown:
        shown = sorted(str(k)[:50] for k in unknown)[:5]
        return Rejection("unknown_field", f"features not in schema {schema.name!r}: {shown}")
    clean: Features = {}
    for name, spec in schema.features.items():
        if name not in raw or raw[name] is None:
            if stored is not None and name in stored:
                clean[name] = stored[name]
                continue
            if spec.required:
                return Rejection("missing_field", f"{name}: required by schema {schema.name!r}")
            if spec.default is not None and spec.pii == "keep":
                clean[name] = spec.default
            continue
        value = _normalised(name, spec, raw[name])
        if isinstance(value, Rejection):
            if spec.pii != "keep":
                return Rejection(value.reason, f"{name}: not a valid {spec.type} (value withheld)")
            return value
        if spec.pii == "keep":
            clean[name] = value
        elif spec.pii == "hash":
            clean[name] = pii_hash(value, pii_key)
    return clean


def pii_hash(value: FeatureValue, key: bytes) -> str:
    """A personal value as a keyed hash: equal values stay equal, the value cannot be read back.

    Keyed (HMAC-SHA256), so that nobody without the key can hash guesses (every phone number,
    every e-mail of a list) and match them.
    """
    if not key:
        raise ConfigurationError("EDDY_PII_KEY is not set: the feature schema hashes personal data")
    digest = hmac.new(key, str(value).encode(), hashlib.sha256).hexdigest()
    return "h:" + digest[:32]


def redact(raw: bytes, schema: FeatureSchema, key: bytes) -> bytes | None:
    """``raw`` with the schema's personal values hashed or dropped; None if it cannot be parsed.

    For the original bytes a dead letter keeps: a message that cannot be parsed could hold a
    personal value anywhere, so the caller keeps none of it.
    """
    try:
        event = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    features = event.get("features") if isinstance(event, dict) else None
    if not isinstance(features, dict):
        return None
    for name, action in schema.personal.items():
        if name in features:
            if action == "drop" or not isinstance(features[name], str | int | float | bool):
                del features[name]
            else:
                features[name] = pii_hash(features[name], key)
    return json.dumps(event).encode()
