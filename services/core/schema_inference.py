"""A feature schema inferred from a sample of rows, for ``eddy replay`` on a user's own file.

Numbers, booleans, categories (few distinct strings) and free strings; a numeric column that
never decreases over the rows is time-like (a date, a counter); the target's type comes from its
values: two values make a binary target, a few classes a multi-class one, other numbers a
regression. The result is written out as TOML for the user to review and reuse.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from typing import Any

from services.core.exceptions import ConfigurationError
from services.core.feature_schema import FeatureSchema

#: Most distinct strings a column may have to be a category (else a free string).
MAX_CATEGORIES = 50
#: Most distinct values a numeric integer target may have to be multi-class.
MAX_CLASSES = 50


def infer_schema(name: str, rows: Sequence[dict[str, Any]], target: str) -> FeatureSchema:
    """The schema of ``rows`` with ``target`` as the label column.

    Raises ConfigurationError when the target is missing or a column mixes kinds of values.
    """
    if not rows:
        raise ConfigurationError("the file has no rows to infer a schema from")
    columns = list(dict.fromkeys(key for row in rows for key in row))
    if target not in columns:
        raise ConfigurationError(
            f"no column {target!r} for the target; the columns are {columns[:20]}"
        )
    features = {
        column: _feature(column, [row.get(column) for row in rows])
        for column in columns
        if column != target
    }
    return FeatureSchema.model_validate(
        {
            "name": name,
            "description": f"inferred from {len(rows)} rows",
            "features": features,
            "target": _target(target, [row.get(target) for row in rows]),
        }
    )


def _feature(column: str, values: list[Any]) -> dict[str, Any]:
    present = [v for v in values if v is not None]
    required = len(present) == len(values)
    if not present:
        raise ConfigurationError(f"column {column!r} has no values")
    kinds = {_kind(v) for v in present}
    spec: dict[str, Any] = {"required": required}
    if kinds == {"bool"}:
        return {**spec, "type": "bool"}
    if kinds <= {"int", "float"}:
        numbers = [float(v) for v in present]
        spec["type"] = "int" if kinds == {"int"} else "float"
        if len(set(numbers)) > 2 and all(b >= a for a, b in itertools.pairwise(numbers)):
            spec["time_like"] = True
        return spec
    if kinds == {"str"}:
        distinct = sorted(set(present))
        if len(distinct) <= MAX_CATEGORIES and len(distinct) < len(present):
            return {**spec, "type": "category", "values": distinct}
        return {**spec, "type": "string", "max_length": max(256, max(len(v) for v in present))}
    raise ConfigurationError(
        f"column {column!r} mixes {sorted(kinds)} values; make it one kind, or give a schema"
    )


def _target(column: str, values: list[Any]) -> dict[str, Any]:
    if any(v is None for v in values):
        raise ConfigurationError(f"target column {column!r} has empty values")
    kinds = {_kind(v) for v in values}
    distinct = sorted(set(values), key=lambda v: (type(v).__name__, str(v)))
    if kinds == {"bool"}:
        return {"name": column, "type": "binary"}
    if kinds == {"float"} or (kinds <= {"int", "float"} and len(distinct) > MAX_CLASSES):
        return {"name": column, "type": "regression"}
    if kinds in ({"int"}, {"str"}):
        if len(distinct) == 2:
            return {"name": column, "type": "binary", "classes": distinct}
        return {"name": column, "type": "multiclass"}
    raise ConfigurationError(f"target column {column!r} mixes {sorted(kinds)} values")


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    return "str"


def parse_cell(text: str) -> Any:
    """A CSV cell as the value it spells: empty is None; then int, float, boolean, or text.

    >>> [parse_cell(t) for t in ("", "3", "2.5", "true", "UP")]
    [None, 3, 2.5, True, 'UP']
    """
    text = text.strip()
    if not text:
        return None
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return text
    return number if math.isfinite(number) else text


def schema_toml(schema: FeatureSchema) -> str:
    """The schema as a TOML file (``infra/features/`` format), for review and reuse."""
    lines = [f"name = {json.dumps(schema.name)}", f"description = {json.dumps(schema.description)}"]
    for name, spec in schema.features.items():
        lines += ["", f"[features.{json.dumps(name)}]"]
        for key, value in spec.model_dump(exclude_defaults=True).items():
            lines.append(f"{key} = {json.dumps(value)}")
    lines += ["", "[target]"]
    for key, value in schema.target.model_dump(exclude_none=True).items():
        lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"
