"""The model registry's payload: one message on ``models`` per published model version."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from schemas.base import Payload, Target, utc_now

Flavour = Literal["river", "onnx"]
Trigger = Literal["initial", "scheduled", "drift", "selection", "manual", "rollback", "promote"]
#: How a challenger runs beside the champion: not at all, on every event unseen, or answering a
#: share of the entities.
DeploymentMode = Literal["none", "shadow", "canary"]
#: What a deployment change did.
DeploymentAction = Literal["serve", "shadow", "canary", "step", "promote", "rollback", "end"]
#: What a deployment predicts: a class of two, a class of many, or a number.
Task = Literal["binary", "multiclass", "regression"]
#: A Python import path (``river.linear_model.LogisticRegression``).
ImportPath = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")
]
#: A factory, ``module.path:function``.
FactoryPath = Annotated[
    str,
    StringConstraints(
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$"
    ),
]


def _step(value: Any) -> Any:
    return {"estimator": value} if isinstance(value, str) else value


class Step(BaseModel):
    """One River estimator or transformer by import path, with its parameters.

    A parameter that is itself a table with an ``estimator`` key is built the same way (a
    bagging ensemble's base model, say).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    estimator: ImportPath
    params: dict[str, Any] = Field(default_factory=dict)


class ModelSpec(BaseModel):
    """A model declared as data: an estimator with its preprocessing, or a factory.

    ``preprocessing`` "auto" scales numbers and one-hot encodes categories for linear models
    (``river.linear_model``) and tree regressors with linear leaves (Hoeffding trees, ARF), and
    leaves other models (classification trees, forests) the raw features.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")
    estimator: ImportPath | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    preprocessing: Literal["auto", "none"] | list[Annotated[Step, BeforeValidator(_step)]] = "auto"
    factory: FactoryPath | None = Field(
        None, description="A `module:function` that returns a River-compatible model."
    )
    process: Literal["shared", "own"] = Field(
        "shared",
        description="'own': learn in a process of its own, so a heavy model does not hold "
        "back training (its scores reach the leaderboard from there).",
    )

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        if (self.estimator is None) == (self.factory is None):
            raise ValueError(
                f"model {self.name!r}: give either `estimator` (an import path) or `factory` "
                "(module:function), not both or neither"
            )
        if self.factory is not None and (self.params or self.preprocessing != "auto"):
            raise ValueError(
                f"model {self.name!r}: a factory builds the whole model; params and "
                "preprocessing are for `estimator`"
            )
        return self


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
    key_id: str = Field(
        pattern=r"^(hmac|ed25519):[0-9a-f]{16}$",
        description="The key that signed this record (services/core/signing.py).",
    )
    signature: str = Field(
        pattern=r"^[0-9a-f]{64}([0-9a-f]{64})?$",
        description="Signature of every other field of this record, in hex: HMAC-SHA256 or "
        "Ed25519, by key_id.",
    )
    metrics: dict[str, float] = Field(default_factory=dict)
    parent_version: int | None = None
    trigger: Trigger
    drift_event_id: str | None = None
    lineage: list[OffsetRange] = Field(default_factory=list)
    feature_names: list[str] = Field(
        default_factory=list,
        description="The features the model was trained on (input order of ONNX models).",
    )
    classes: list[Target] | None = Field(
        None, description="Classes known when it was published (output order of ONNX models)."
    )
    task: Task | None = Field(None, description="What the model predicts.")
    spec: ModelSpec | None = Field(None, description="The spec the model was built from.")
    hold: bool = Field(
        False,
        description="Not served on arrival: it waits for a deployment (`eddy models deploy`) "
        "to put it in shadow, on canary or in front.",
    )
    description: str = ""
    created_at: datetime = Field(default_factory=utc_now)


class Deployment(Payload):
    """A change of what serves a model: its champion, and a challenger beside it.

    Serving follows the newest record of its model (the highest ``seq``, signed like a version
    record); monitoring scores the two on live labels and writes the canary's steps, promotion
    or rollback as the next record, with its figures.
    """

    model_name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.-]+$")
    seq: int = Field(
        ge=1, description="One above the model's previous record; an older one sent again is stale."
    )
    action: DeploymentAction
    champion_version: int = Field(ge=1)
    follow: bool = Field(
        False,
        description="Serve each newer version of the model as champion as it comes (training's); "
        "else the champion holds until a person or a rule changes it.",
    )
    mode: DeploymentMode = "none"
    challenger_version: int | None = Field(None, ge=1)
    share: float = Field(
        0.0, ge=0, le=1, description="Share of entities the challenger answers (canary), sticky."
    )
    steps: list[Annotated[float, Field(gt=0, le=1)]] = Field(
        default_factory=list, description="The canary's shares still to ramp through, in order."
    )
    decided_by: Literal["person", "rule"]
    reason: str = Field("", max_length=2000)
    figures: dict[str, float] = Field(
        default_factory=dict, description="The live scores and test statistics behind the change."
    )
    key_id: str = Field(pattern=r"^(hmac|ed25519):[0-9a-f]{16}$")
    signature: str = Field(pattern=r"^[0-9a-f]{64}([0-9a-f]{64})?$")
    created_at: datetime = Field(default_factory=utc_now)

    @model_validator(mode="after")
    def _challenger_when_running(self) -> Deployment:
        if (self.mode == "none") != (self.challenger_version is None):
            raise ValueError("a shadow or canary names its challenger_version; mode none does not")
        if self.mode != "canary" and (self.share or self.steps):
            raise ValueError("share and steps are for a canary")
        return self
