"""The contract between services: one pydantic model per topic payload.

The JSON Schema of each lives in ``schemas/json/`` (``eddy schemas export``); a test fails when
the two drift apart.
"""

from schemas.alerts import Alert
from schemas.base import Payload
from schemas.drift import DriftEvent
from schemas.events import DeadLetter, FeatureEvent, RawEvent
from schemas.labels import Label, LabelingTask, TrainingExample
from schemas.models import Deployment, ModelVersion, OffsetRange
from schemas.predictions import (
    Prediction,
    PredictionReply,
    PredictionRequest,
    ShadowAnswers,
)

#: Every topic payload by its class name, as ``infra/topics.toml`` names them.
PAYLOADS: dict[str, type[Payload]] = {
    model.__name__: model
    for model in (
        Alert,
        DeadLetter,
        Deployment,
        DriftEvent,
        FeatureEvent,
        Label,
        LabelingTask,
        ModelVersion,
        Prediction,
        PredictionReply,
        PredictionRequest,
        RawEvent,
        ShadowAnswers,
        TrainingExample,
    )
}

__all__ = [
    "PAYLOADS",
    "Alert",
    "DeadLetter",
    "Deployment",
    "DriftEvent",
    "FeatureEvent",
    "Label",
    "LabelingTask",
    "ModelVersion",
    "OffsetRange",
    "Payload",
    "Prediction",
    "PredictionReply",
    "PredictionRequest",
    "RawEvent",
    "ShadowAnswers",
    "TrainingExample",
]
