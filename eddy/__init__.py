"""Eddy's public Python API: the client, the payloads on every topic, the settings.

The internal layout (``services``, ``schemas``) may change; what is imported from here stays.
Building payloads needs no running stack:

>>> import eddy
>>> event = eddy.RawEvent(event_id="e1", entity_id="user-7", ts=0, features={"amount": 3.5})
>>> event.ts.isoformat()
'1970-01-01T00:00:00+00:00'
>>> eddy.Label(event_id="e1", label=True).source
'system'
>>> eddy.Settings(model_name="fraud").model_name
'fraud'
>>> eddy.Label(event_id="e1")
Traceback (most recent call last):
...
pydantic_core._pydantic_core.ValidationError: 1 validation error for Label
label
  Field required [type=missing, input_value={'event_id': 'e1'}, input_type=dict]
    For further information visit https://errors.pydantic.dev/2.14/v/missing

With a stack running (``eddy stack up`` prints the settings to export)::

    with eddy.Client() as client:                  # settings from EDDY_* variables
        client.send_events([event])
        client.send_labels([eddy.Label(event_id="e1", label=True)])
        reply = client.predict({"amount": 3.5}, explain=True)
        reply = client.predict({"amount": 9.0}, entity_id="user-7")   # the rest from the store
        for prediction in client.read_predictions(idle_s=2):
            print(prediction.event_id, prediction.prediction, prediction.model_version)
        drift = list(client.read_drift(idle_s=2))
        letters = list(client.read("dlq", eddy.DeadLetter, idle_s=2))

The ``eddy`` command is ``eddy.cli``. Names load on first use, so the command starts fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from eddy.client import EddyClient as Client
    from eddy.client import PredictionFailedError, PredictionTimeoutError
    from schemas import (
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
    from services.core.settings import Settings

#: Public name → (module, attribute).
_EXPORTS = {
    **{
        name: ("schemas", name)
        for name in (
            "Alert",
            "DeadLetter",
            "Deployment",
            "DriftEvent",
            "FeatureEvent",
            "Label",
            "LabelingTask",
            "ModelVersion",
            "Prediction",
            "PredictionReply",
            "PredictionRequest",
            "RawEvent",
            "ShadowAnswers",
            "TrainingExample",
        )
    },
    "Client": ("eddy.client", "EddyClient"),
    "PredictionFailedError": ("eddy.client", "PredictionFailedError"),
    "PredictionTimeoutError": ("eddy.client", "PredictionTimeoutError"),
    "Settings": ("services.core.settings", "Settings"),
}

__all__ = [
    "Alert",
    "Client",
    "DeadLetter",
    "Deployment",
    "DriftEvent",
    "FeatureEvent",
    "Label",
    "LabelingTask",
    "ModelVersion",
    "Prediction",
    "PredictionFailedError",
    "PredictionReply",
    "PredictionRequest",
    "PredictionTimeoutError",
    "RawEvent",
    "Settings",
    "ShadowAnswers",
    "TrainingExample",
]


def __getattr__(name: str) -> Any:
    """Load a public name on first use."""
    try:
        module, attribute = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'eddy' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value
