"""A user's own ONNX graph: the shape it must have to be published and served.

Serving feeds a graph one float matrix, a row per event with the features in the order the
version record names (``feature_names``), and reads ``probabilities`` ([N, classes], in the
order of the record's ``classes``) from a classifier, or ``value`` / ``variable`` ([N, 1])
from a regressor: what skl2onnx writes for a classifier converted with
``options={"zipmap": False}``, and for a regressor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from schemas.base import Target
from services.core.exceptions import ArtifactError

#: Output names a regression graph may answer in, in order of preference.
VALUE_OUTPUTS = ("value", "variable")


@dataclass(frozen=True)
class GraphShape:
    """What a graph takes and gives: its input, and its answer output."""

    input_name: str
    input_width: int | None
    output_name: str
    output_width: int | None


def graph_shape(data: bytes, classes: Sequence[Target] | None) -> GraphShape:
    """The graph's input and answer output, or ArtifactError saying what is wrong."""
    import onnx

    try:
        model = onnx.load_model_from_string(data)
    except Exception as exc:  # a protobuf parse error, whatever its type
        raise ArtifactError(f"not an ONNX graph: {exc}") from exc
    graph = model.graph
    initialised = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initialised]
    if len(inputs) != 1:
        raise ArtifactError(
            f"the graph takes {len(inputs)} inputs; serving feeds one float matrix [N, features]"
        )
    outputs = {o.name: o for o in graph.output}
    if classes:
        if "probabilities" not in outputs:
            raise ArtifactError(
                f"a classifier's graph must answer in an output named 'probabilities' (it has "
                f"{sorted(outputs)}); skl2onnx writes it with options={{'zipmap': False}}"
            )
        name = "probabilities"
    else:
        named = [n for n in VALUE_OUTPUTS if n in outputs]
        if not named and len(outputs) != 1:
            raise ArtifactError(
                f"a regressor's graph must answer in an output named 'value' or 'variable' (it "
                f"has {sorted(outputs)})"
            )
        name = named[0] if named else next(iter(outputs))
    return GraphShape(inputs[0].name, _width(inputs[0]), name, _width(outputs[name]))


def check_graph(
    data: bytes, feature_names: Sequence[str], classes: Sequence[Target] | None
) -> GraphShape:
    """The graph's shape; ArtifactError unless it takes the named features and gives the classes."""
    shape = graph_shape(data, classes)
    if shape.input_width is not None and shape.input_width != len(feature_names):
        raise ArtifactError(
            f"the graph takes {shape.input_width} features; the version names "
            f"{len(feature_names)} ({', '.join(feature_names)[:300]})"
        )
    wanted = len(classes) if classes else 1
    if shape.output_width is not None and shape.output_width != wanted:
        what = f"{wanted} classes ({', '.join(map(str, classes))[:300]})" if classes else "1 value"
        raise ArtifactError(
            f"the graph answers {shape.output_width} columns in {shape.output_name!r}; the "
            f"version names {what}"
        )
    return shape


def _width(value_info: object) -> int | None:
    """The last dimension of a tensor's declared shape, if it is a fixed number."""
    tensor = getattr(getattr(value_info, "type", None), "tensor_type", None)
    dims = list(getattr(getattr(tensor, "shape", None), "dim", []))
    if len(dims) != 2 or not dims[1].HasField("dim_value"):
        return None
    return int(dims[1].dim_value)
