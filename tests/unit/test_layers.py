"""Dependencies point one way: eddy → services/<service> → services/core → schemas."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("ingest", "serving", "labeling", "training", "monitoring")


def imported(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_services_core_imports_no_service_package_and_not_the_public_face() -> None:
    upward = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in (ROOT / "services" / "core").rglob("*.py")
        for name in imported(path)
        if name.split(".")[0] == "eddy" or any(name.startswith(f"services.{s}") for s in SERVICES)
    }
    assert upward == set()


def test_schemas_import_nothing_of_eddys_but_schemas() -> None:
    upward = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in (ROOT / "schemas").rglob("*.py")
        for name in imported(path)
        if name.split(".")[0] in ("eddy", "services")
    }
    assert upward == set()


def test_no_service_imports_another_or_the_public_face() -> None:
    upward = set()
    for service in SERVICES:
        for path in (ROOT / "services" / service).rglob("*.py"):
            for name in imported(path):
                others = [s for s in SERVICES if s != service]
                if name.split(".")[0] == "eddy" or any(
                    name.startswith(f"services.{o}") for o in others
                ):
                    upward.add(f"{path.relative_to(ROOT)}: {name}")
    assert upward == set()
