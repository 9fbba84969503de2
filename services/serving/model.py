"""A loaded model version behind one small interface: features in, predictions out.

Predictions come a batch at a time where the model allows. A River linear model is served
through its compiled ONNX graph when every feature it reads is a number
(``services.core.onnx_compile``): one onnxruntime call per Kafka batch instead of one River call
per event. The graph is checked against River on probe rows when it is loaded; any doubt, and
River serves.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from river import base as river_base

from schemas import ModelVersion
from schemas.base import Features, Target
from services.core.artifacts import ArtifactStore
from services.core.exceptions import ArtifactError
from services.core.onnx_models import check_graph
from services.core.registry import load_verified
from services.core.signing import Keyring
from services.serving.explain import Explainer, explainer_for

Probabilities = dict[str, float] | None
#: A prediction, and class probabilities where there are classes.
Answer = tuple[Target | None, Probabilities]
#: What runs a predictor's model.
Runtime = Literal["river", "onnx"]
log = logging.getLogger(__name__)


class Predictor(Protocol):
    """What serving needs of a model, whatever runs it."""

    runtime: Runtime

    def predict(self, features: Features) -> Answer:
        """The prediction for one event."""
        ...

    def predict_many(self, rows: Sequence[Features]) -> list[Answer]:
        """The predictions for a batch of events, in order; raises if any row cannot be run."""
        ...


def answer_all(predictor: Predictor, rows: Sequence[Features]) -> list[Answer | Exception]:
    """Every row's answer, in one call where the model allows; a row that fails is its error.

    When the batch call fails (one row with a value the graph cannot take), the rows are run one
    by one, so one bad row costs only its own prediction.
    """
    if not rows:
        return []
    try:
        return list(predictor.predict_many(rows))
    except Exception:  # found out row by row below
        pass
    answers: list[Answer | Exception] = []
    for row in rows:
        try:
            answers.append(predictor.predict(row))
        except Exception as exc:  # the caller dead-letters this row
            answers.append(exc)
    return answers


@dataclass
class RiverPredictor:
    """A River estimator (or pipeline), in process."""

    model: Any
    runtime: Runtime = "river"

    def __post_init__(self) -> None:
        self.is_classifier = isinstance(self.model, river_base.Classifier)

    def predict_many(self, rows: Sequence[Features]) -> list[Answer]:
        """One River call per row.

        River's own batch methods go through pandas, which costs more than it saves at Kafka
        batch sizes.
        """
        return [self.predict(row) for row in rows]

    def predict(self, features: Features) -> Answer:
        """Most probable class with its distribution, or the regression value."""
        if not self.is_classifier:
            return self.model.predict_one(features), None
        proba = self.model.predict_proba_one(features)
        if not proba:
            return None, None
        label = max(proba, key=proba.get)
        return label, {str(k): float(v) for k, v in proba.items()}


class OnnxPredictor:
    """A model compiled to ONNX, run by onnxruntime: float rows in feature order.

    The graph takes one input of shape [N, n] and returns ``probabilities`` of shape [N, k]
    (the classes' order given) or ``value`` / ``variable`` of shape [N, 1]
    (``services.core.onnx_models``). A feature an event lacks is ``missing``: NaN for Eddy's
    compiled graphs (which treat it as River does), 0 for a user's graph.
    """

    runtime: Runtime = "onnx"

    def __init__(
        self,
        data: bytes,
        feature_names: list[str],
        classes: list[Target] | None,
        missing: float = 0.0,
    ) -> None:
        import onnxruntime

        shape = check_graph(data, feature_names, classes)  # read once: its input and output
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(
            data, options, providers=["CPUExecutionProvider"]
        )
        self.input, self.output = shape.input_name, shape.output_name
        self.feature_names = feature_names
        self.classes = classes
        double = self.session.get_inputs()[0].type == "tensor(double)"
        self.dtype = np.float64 if double else np.float32
        self.keys = [str(c) for c in classes] if classes else []
        self.missing = missing

    def predict(self, features: Features) -> Answer:
        """Run the graph on one row."""
        return self.predict_many([features])[0]

    def predict_many(self, rows: Sequence[Features]) -> list[Answer]:
        """Run the graph once on all rows."""
        names, missing = self.feature_names, self.missing
        matrix = np.array([[row.get(n, missing) for n in names] for row in rows], self.dtype)
        (out,) = self.session.run([self.output], {self.input: matrix})
        if not self.classes:
            return [(row[0], None) for row in out.reshape(len(rows), -1).tolist()]
        classes, keys = self.classes, self.keys
        best = np.argmax(out, axis=1).tolist()
        return [
            (classes[b], dict(zip(keys, p, strict=True)))
            for b, p in zip(best, out.tolist(), strict=True)
        ]


@dataclass
class LoadedModel:
    """A verified model version ready to predict, and to explain where it can."""

    version: ModelVersion
    predictor: Predictor
    explainer: Explainer | None = None


def load_model(
    version: ModelVersion,
    keys: Keyring,
    store: ArtifactStore | Path,
    compile_over: Sequence[str] | None = None,
) -> LoadedModel:
    """Verify and load a version; ArtifactError if it must not or cannot be served.

    ``compile_over``: the numeric features, in order, to compile a River model over (None: run
    it in River).
    """
    data, obj = load_verified(version, keys, store)
    if version.flavour == "river":
        if not hasattr(obj, "predict_one"):
            raise ArtifactError(f"{version.model_name} v{version.version}: not a River estimator")
        river = RiverPredictor(obj)
        if compile_over:
            names = list(compile_over)
            predictor = compiled(river, names) or river
            return LoadedModel(version, predictor, explainer_for(obj, names))
        return LoadedModel(version, river)
    try:
        return LoadedModel(version, OnnxPredictor(data, version.feature_names, version.classes))
    except Exception as exc:
        raise ArtifactError(
            f"{version.model_name} v{version.version}: invalid ONNX: {exc}"
        ) from exc


def compiled(river: RiverPredictor, names: list[str]) -> OnnxPredictor | None:
    """``river``'s model as a checked ONNX graph over ``names``, or None where it has none.

    The graph must give River's answers on probe rows (all zeros, all ones, and one with every
    feature missing) within ``TOLERANCE``; a graph that does not is a compiler bug, logged, and
    River serves.
    """
    from services.core.onnx_compile import TOLERANCE, NotCompilable, compile_model

    try:
        graph, classes = compile_model(river.model, names)
    except NotCompilable as reason:
        log.info("served in River, not compiled", extra={"reason": str(reason)})
        return None
    onnx = OnnxPredictor(graph, names, classes, missing=math.nan)
    probes: list[Features] = [dict.fromkeys(names, 0.0), dict.fromkeys(names, 1.0), {}]
    for probe, (label, proba) in zip(probes, onnx.predict_many(probes), strict=True):
        expected, expected_proba = river.predict(probe)
        if not _close(label, proba, expected, expected_proba, TOLERANCE):
            log.error(
                "compiled graph disagrees with River on a probe row: served in River",
                extra={"river": [expected, expected_proba], "onnx": [label, proba]},
            )
            return None
    return onnx


def _close(
    label: Target | None,
    proba: Probabilities,
    expected: Target | None,
    expected_proba: Probabilities,
    tolerance: float,
) -> bool:
    if expected_proba is None or proba is None:
        if proba is not None or expected_proba is not None:
            return False
        return (
            isinstance(label, float)
            and isinstance(expected, float)
            and math.isclose(label, expected, rel_tol=tolerance, abs_tol=tolerance)
        )
    if set(proba) != set(expected_proba):
        return False
    return all(abs(proba[k] - expected_proba[k]) <= tolerance for k in proba)
