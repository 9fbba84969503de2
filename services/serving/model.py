"""A loaded model version behind one small interface: features in, prediction out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from river import base as river_base

from schemas import ModelVersion
from schemas.base import Features, Target
from services.core.exceptions import ArtifactError
from services.core.registry import load_verified
from services.core.signing import Keyring

Probabilities = dict[str, float] | None


class Predictor(Protocol):
    """What serving needs of a model, whatever runs it."""

    def predict(self, features: Features) -> tuple[Target | None, Probabilities]:
        """The prediction for one event, and class probabilities where there are classes."""
        ...


@dataclass
class RiverPredictor:
    """A River estimator (or pipeline), in process."""

    model: Any

    def __post_init__(self) -> None:
        self.is_classifier = isinstance(self.model, river_base.Classifier)

    def predict(self, features: Features) -> tuple[Target | None, Probabilities]:
        """Most probable class with its distribution, or the regression value."""
        if not self.is_classifier:
            return self.model.predict_one(features), None
        proba = self.model.predict_proba_one(features)
        if not proba:
            return None, None
        label = max(proba, key=proba.get)
        return label, {str(k): float(v) for k, v in proba.items()}


class OnnxPredictor:
    """A model compiled to ONNX, run by onnxruntime: a float vector in feature order.

    The graph takes input ``features`` of shape [1, n] and returns ``probabilities`` of shape
    [1, k] (the classes' order given at compile time) or ``value`` of shape [1, 1].
    """

    def __init__(self, data: bytes, feature_names: list[str], classes: list[Target] | None) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(
            data, options, providers=["CPUExecutionProvider"]
        )
        self.feature_names = feature_names
        self.classes = classes
        self.output = "probabilities" if classes else "value"

    def predict(self, features: Features) -> tuple[Target | None, Probabilities]:
        """Run the graph on one row."""
        row = np.array([[float(features.get(n, 0.0)) for n in self.feature_names]], np.float32)
        (out,) = self.session.run([self.output], {"features": row})
        if not self.classes:
            return float(out[0][0]), None
        proba = {str(c): float(p) for c, p in zip(self.classes, out[0], strict=True)}
        best = int(np.argmax(out[0]))
        return self.classes[best], proba


@dataclass
class LoadedModel:
    """A verified model version ready to predict."""

    version: ModelVersion
    predictor: Predictor


def load_model(version: ModelVersion, keys: Keyring, root: Path) -> LoadedModel:
    """Verify and load a version; ArtifactError if it must not or cannot be served."""
    data, obj = load_verified(version, keys, root)
    if version.flavour == "river":
        if not hasattr(obj, "predict_one"):
            raise ArtifactError(f"{version.model_name} v{version.version}: not a River estimator")
        return LoadedModel(version, RiverPredictor(obj))
    try:
        return LoadedModel(version, OnnxPredictor(data, version.feature_names, version.classes))
    except Exception as exc:
        raise ArtifactError(
            f"{version.model_name} v{version.version}: invalid ONNX: {exc}"
        ) from exc
