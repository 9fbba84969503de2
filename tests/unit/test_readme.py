"""The docs tell a newcomer the truth: every setting and every command is documented."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import click
from pydantic import BaseModel, SecretStr

from eddy.cli import main
from services.core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
CONFIGURATION = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")


def _defaults(model: type[BaseModel], prefix: str = "EDDY_") -> dict[str, Any]:
    """Every setting's variable and its default, as the code has them."""
    found: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            found.update(_defaults(annotation, f"{prefix}{name.upper()}__"))
        else:
            found[f"{prefix}{name.upper()}"] = field.get_default(call_default_factory=True)
    return found


def _variables(model: type[BaseModel]) -> list[str]:
    return list(_defaults(model))


def _same_default(documented: str, value: Any) -> bool:
    """Whether the reference's default column says the code's default."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if value is None or value == "":
        return documented in ("unset", "empty")
    text = documented.strip("`")
    if isinstance(value, bool):
        return text == str(value).lower()
    if isinstance(value, int | float):
        return _number(text) == value
    if isinstance(value, list | dict):
        return _json(text) == value
    if isinstance(value, Path):
        return Path(text).expanduser() == value
    return text == str(value)


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


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


def test_the_configuration_reference_has_each_setting_s_default_and_no_other_variable() -> None:
    rows = dict(re.findall(r"^\| `(EDDY_[A-Z0-9_]+)` \| ([^|]*?) \|", CONFIGURATION, re.M))
    code = _defaults(Settings)
    wrong = {
        v: (rows[v], code[v]) for v in code if v in rows and not _same_default(rows[v], code[v])
    }
    assert wrong == {}, f"docs/configuration.md gives other defaults than the code: {wrong}"
    assert sorted(set(rows) - set(code)) == [], "documented variables that no setting reads"


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
