"""KPI thresholds are configuration: loaded from TOML, breached, resolved, and checked for sense."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.core.exceptions import ConfigurationError
from services.monitoring.kpis import KpiRule, KpiWatch, load_rules


def test_the_shipped_rules_apply_to_every_model() -> None:
    rules = load_rules("kpis", "anything")
    assert {r.kpi for r in rules} == {"accuracy", "label_coverage"}


def test_rules_of_another_model_do_not_apply(tmp_path: Path) -> None:
    path = tmp_path / "k.toml"
    path.write_text('[[kpi]]\nmodel = "churn"\nkpi = "accuracy"\nmin = 0.9\n')
    assert load_rules(str(path), "fraud") == []
    assert [r.min for r in load_rules(str(path), "churn")] == [0.9]


@pytest.mark.parametrize(
    "text",
    ['[[kpi]]\nkpi = "accuracy"\n', '[[kpi]]\nkpi = "latency"\nmin = 1\n', "[[kpi]\n"],
    ids=["no bound", "unknown kpi", "bad toml"],
)
def test_invalid_rules_are_a_configuration_error_naming_the_file(tmp_path: Path, text: str) -> None:
    path = tmp_path / "k.toml"
    path.write_text(text)
    with pytest.raises(ConfigurationError, match=r"k\.toml"):
        load_rules(str(path), "m")


def test_a_breach_fires_once_and_a_recovery_resolves_it() -> None:
    watch = KpiWatch([KpiRule(kpi="accuracy", min=0.8)])
    assert watch.update({"accuracy": 0.9}) == []
    fired = watch.update({"accuracy": 0.7})
    assert [(r.kpi, v, b) for r, v, b in fired] == [("accuracy", 0.7, True)]
    assert watch.update({"accuracy": 0.6}) == [], "still breached: no second alert"
    resolved = watch.update({"accuracy": 0.85})
    assert [(v, b) for _r, v, b in resolved] == [(0.85, False)]


def test_a_max_bound_and_its_text() -> None:
    rule = KpiRule(kpi="label_coverage", min=0.5, max=0.99)
    assert rule.breached(1.0) and rule.breached(0.4) and not rule.breached(0.7)
    assert rule.bound() == ">= 0.5 and <= 0.99"
