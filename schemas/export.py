"""Generates the committed JSON Schema files from the payload models, and checks them."""

from __future__ import annotations

import json
from pathlib import Path

from schemas import PAYLOADS

SCHEMA_DIR = Path(__file__).resolve().parent / "json"


def rendered_schemas() -> dict[str, str]:
    """File name → JSON Schema text, for every payload."""
    return {
        f"{name}.schema.json": json.dumps(model.model_json_schema(), indent=2, sort_keys=True)
        + "\n"
        for name, model in sorted(PAYLOADS.items())
    }


def write_schemas(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Write every schema file; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in rendered_schemas().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def stale_schemas(directory: Path = SCHEMA_DIR) -> list[str]:
    """Names of schema files that are missing, differ from the models, or have no model."""
    expected = rendered_schemas()
    stale = [
        name
        for name, text in expected.items()
        if not (directory / name).is_file()
        or (directory / name).read_text(encoding="utf-8") != text
    ]
    stale += sorted(p.name for p in directory.glob("*.schema.json") if p.name not in expected)
    return stale
