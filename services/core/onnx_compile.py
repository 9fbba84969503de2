"""River models compiled to ONNX graphs that onnxruntime runs on a whole batch at once.

``compile_model`` takes any River model and compiles what it can: the linear models here, the
trees and forests in ``onnx_trees``.

Compiles a ``StandardScaler`` (optional, without a window) followed by a ``LogisticRegression``,
``SoftmaxRegression`` or ``LinearRegression``, the defaults of ``infra/models/``. The graph has
the interface ``services.serving.model.OnnxPredictor`` runs: input ``features`` of shape
[N, n] (float32, the given feature order), output ``probabilities`` [N, k] in the given class
order, or ``value`` [N, 1] for a regression. It computes what River does, in float32, within
``TOLERANCE``. River leaves a feature an event lacks out of the dot product; a row has no gaps,
so a missing value is sent as NaN and the graph puts in the value that adds nothing (the mean
where the model scales, else 0). Anything else is not compiled: ``compile_river`` says why.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

#: Largest difference from River's own probabilities (or relative difference of a regression).
TOLERANCE = 1e-4
#: The logit of a class the model never saw: River leaves it out, so its probability is 0.
_NEVER = -1e9
OPSET = 17


class NotCompilable(ValueError):  # noqa: N818 - a reason, read as "not compilable: ..."
    """The model has a part this compiler does not translate; serving runs it in River."""


def compile_model(model: Any, feature_names: Sequence[str]) -> tuple[bytes, list[Any] | None]:
    """The graph of a linear model, tree or forest, and its classes' order (None: a number).

    NotCompilable says what part of the model stops it.
    """
    module = type(model).__module__
    if module.startswith(("river.tree", "river.forest")):
        from services.core.onnx_trees import compile_trees

        return compile_trees(model, feature_names)
    classes = _linear_classes(model)
    return compile_river(model, feature_names, classes), classes


def _linear_classes(model: Any) -> list[Any] | None:
    """The classes a linear model's graph lays out: River's own, in its order."""
    _scaler, estimator = linear_parts(model)
    kind = type(estimator).__name__
    if kind == "SoftmaxRegression":
        known = sorted(estimator.weights, key=str)
        if not known:  # River answers nothing yet; a graph has no classes to answer with
            raise NotCompilable("the softmax regression has seen no class yet")
        return known
    return [False, True] if kind == "LogisticRegression" else None


def compile_river(
    model: Any, feature_names: Sequence[str], classes: Sequence[Any] | None = None
) -> bytes:
    """The ONNX graph (serialized) of ``model`` over ``feature_names``.

    ``classes`` orders a classifier's probabilities (a binary model's default is False, True);
    NotCompilable says what part of the model stops it.
    """
    scaler, estimator = linear_parts(model)
    names = list(feature_names)
    if not names:
        raise NotCompilable("no features to lay out")
    means = np.array(
        [scaler.means.get(n, 0.0) if scaler is not None else 0.0 for n in names], np.float32
    )
    inits: list[onnx.TensorProto] = [numpy_helper.from_array(means, "mean")]
    nodes: list[onnx.NodeProto] = [  # a missing value (NaN) adds nothing, as in River
        helper.make_node("IsNaN", ["features"], ["missing"]),
        helper.make_node("Where", ["missing", "mean", "features"], ["filled"]),
    ]
    current = "filled"
    if scaler is not None:
        scales = np.array([inverse_std(scaler, n) for n in names], np.float32)
        inits.append(numpy_helper.from_array(scales, "scale"))
        nodes += [
            helper.make_node("Sub", ["filled", "mean"], ["centred"]),
            helper.make_node("Mul", ["centred", "scale"], ["scaled"]),
        ]
        current = "scaled"
    kind = type(estimator).__name__
    if kind == "SoftmaxRegression":
        order = list(classes) if classes is not None else sorted(estimator.weights, key=str)
        weights = np.array(
            [[estimator.weights[c].get(n, 0.0) if c in estimator.weights else 0.0
              for c in order] for n in names],
            np.float32,
        )  # fmt: skip
        bias = np.array([0.0 if c in estimator.weights else _NEVER for c in order], np.float32)
        output = "probabilities"
        tail = [helper.make_node("Softmax", ["logits"], [output], axis=1)]
        width = len(order)
    else:
        weights = np.array([[estimator._weights.get(n, 0.0)] for n in names], np.float32)
        bias = np.array([estimator.intercept], np.float32)
        width = 1
        if kind == "LogisticRegression":
            order = list(classes) if classes is not None else [False, True]
            if [bool(c) for c in order] != [False, True] or len(order) != 2:
                raise NotCompilable(f"a binary model's classes are False, True, not {order}")
            output = "probabilities"
            width = 2
            inits.append(numpy_helper.from_array(np.array([1.0], np.float32), "one"))
            tail = [
                helper.make_node("Sigmoid", ["logits"], ["p_true"]),
                helper.make_node("Sub", ["one", "p_true"], ["p_false"]),
                helper.make_node("Concat", ["p_false", "p_true"], [output], axis=1),
            ]
        else:
            output = "value"
            tail = [helper.make_node("Identity", ["logits"], [output])]
    inits += [numpy_helper.from_array(weights, "weights"), numpy_helper.from_array(bias, "bias")]
    nodes += [
        helper.make_node("MatMul", [current, "weights"], ["product"]),
        helper.make_node("Add", ["product", "bias"], ["logits"]),
        *tail,
    ]
    graph = helper.make_graph(
        nodes,
        f"eddy-{kind}",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, len(names)])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, [None, width])],
        inits,
    )
    compiled = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    compiled.ir_version = 8
    onnx.checker.check_model(compiled)
    return bytes(compiled.SerializeToString())


def linear_parts(model: Any) -> tuple[Any, Any]:
    """The scaler (or None) and the linear estimator, or NotCompilable."""
    from river import compose, linear_model, preprocessing

    steps = list(model.steps.values()) if isinstance(model, compose.Pipeline) else [model]
    scaler = None
    if len(steps) == 2 and isinstance(steps[0], preprocessing.StandardScaler):
        scaler = steps.pop(0)
        if scaler.window_size is not None:
            raise NotCompilable("a StandardScaler over a window")
    if len(steps) != 1:
        names = [type(s).__name__ for s in steps]
        raise NotCompilable(f"pipeline steps {names}: only a StandardScaler, then a linear model")
    estimator = steps[0]
    linear = (
        linear_model.LogisticRegression,
        linear_model.SoftmaxRegression,
        linear_model.LinearRegression,
    )
    if type(estimator) not in linear:
        raise NotCompilable(f"{type(estimator).__name__} is not a linear model this compiles")
    loss = type(getattr(estimator, "loss", None)).__name__
    if loss not in ("Log", "CrossEntropy", "Squared"):
        raise NotCompilable(f"loss {loss}: its link function is not compiled")
    return scaler, estimator


def inverse_std(scaler: Any, name: str) -> float:
    if not scaler.with_std:
        return 1.0
    variance = scaler.vars.get(name, 0.0)
    return 1.0 / math.sqrt(variance) if variance else 0.0
