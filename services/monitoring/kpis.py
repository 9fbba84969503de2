"""KPI thresholds from configuration (``infra/kpis.toml``), and their breaches. Pure logic."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from services.core.exceptions import ConfigurationError
from services.core.topics import infra_path

KpiName = Literal["accuracy", "mae", "label_coverage"]


class KpiRule(BaseModel):
    """One threshold on one KPI of one model (``*`` for every model)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = "*"
    kpi: KpiName
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _has_a_bound(self) -> KpiRule:
        if self.min is None and self.max is None:
            raise ValueError(f"KPI rule for {self.kpi} needs `min` or `max`")
        return self

    def applies_to(self, model_name: str) -> bool:
        """True for rules of this model or of every model."""
        return self.model in ("*", model_name)

    def breached(self, value: float) -> bool:
        """True when ``value`` is outside the bounds."""
        return (self.min is not None and value < self.min) or (
            self.max is not None and value > self.max
        )

    def bound(self) -> str:
        """The rule as text, for alerts and logs."""
        parts = [
            f">= {self.min:g}" if self.min is not None else "",
            f"<= {self.max:g}" if self.max is not None else "",
        ]
        return " and ".join(p for p in parts if p)


class _RuleFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kpi: list[KpiRule] = []


def load_rules(name_or_path: str, model_name: str) -> list[KpiRule]:
    """The rules of ``model_name`` from a name in infra/ (``kpis``) or a TOML path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = infra_path(f"{name_or_path}.toml")
    try:
        with open(path, "rb") as file:
            rules = _RuleFile.model_validate(tomllib.load(file)).kpi
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read KPI rules {path} ({exc.strerror}); set EDDY_MONITORING__KPI_RULES"
        ) from exc
    except (tomllib.TOMLDecodeError, ValidationError) as exc:
        raise ConfigurationError(f"KPI rules {path} are invalid: {exc}") from exc
    return [rule for rule in rules if rule.applies_to(model_name)]


class KpiWatch:
    """Tracks which rules are breached, and says when one starts or stops being breached."""

    def __init__(self, rules: list[KpiRule]) -> None:
        self.rules = rules
        self.breached: set[KpiRule] = set()

    def update(self, values: dict[str, float]) -> list[tuple[KpiRule, float, bool]]:
        """(rule, value, now breached) for every rule whose state changed."""
        changes = []
        for rule in self.rules:
            value = values.get(rule.kpi)
            if value is None:
                continue
            breached = rule.breached(value)
            if breached != (rule in self.breached):
                (self.breached.add if breached else self.breached.discard)(rule)
                changes.append((rule, value, breached))
        return changes
