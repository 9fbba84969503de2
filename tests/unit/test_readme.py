"""The docs tell a newcomer the truth: every setting and every command is documented."""

from __future__ import annotations

from pathlib import Path

import click
from pydantic import BaseModel

from eddy.cli import main
from services.core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
CONFIGURATION = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")


def _variables(model: type[BaseModel], prefix: str = "EDDY_") -> list[str]:
    names = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names += _variables(annotation, f"{prefix}{name.upper()}__")
        else:
            names.append(f"{prefix}{name.upper()}")
    return names


def _commands(group: click.Group, prefix: str = "eddy") -> list[str]:
    found = []
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found += _commands(command, f"{prefix} {name}")
        else:
            found.append(f"{prefix} {name}")
    return found


def test_every_setting_is_in_the_configuration_reference() -> None:
    missing = [v for v in _variables(Settings) if f"| `{v}` |" not in CONFIGURATION]
    assert missing == [], f"settings not documented in docs/configuration.md: {missing}"


def test_the_readme_stays_the_front_door_and_links_every_docs_page() -> None:
    assert len(README.splitlines()) <= 250
    pages = sorted(p.name for p in (ROOT / "docs").glob("*.md"))
    assert pages and all(f"docs/{page}" in README for page in pages)


def test_every_cli_command_is_in_the_readme() -> None:
    missing = [c for c in _commands(main) if f"`{c}" not in README]
    assert missing == [], f"commands not documented in README.md: {missing}"


def test_the_readme_names_the_two_commands_that_ci_runs() -> None:
    ci = (Path(__file__).resolve().parents[2] / ".ci" / "run").read_text(encoding="utf-8")
    assert "make demo" in README and "make test" in README
    assert "make test" in ci
