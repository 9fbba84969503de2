"""``eddy demo`` refuses a stream it cannot play before it starts anything."""

from __future__ import annotations

from click.testing import CliRunner

from eddy.cli import main
from services.core.datasets import rows_available


def test_demo_refuses_more_events_than_a_dataset_has() -> None:
    result = CliRunner().invoke(main, ["demo", "--stream", "phishing", "--events", "5000"])

    assert result.exit_code == 2
    assert "phishing has 1250 rows" in result.output


def test_demo_refuses_too_short_a_stream() -> None:
    result = CliRunner().invoke(main, ["demo", "--events", "500"])

    assert result.exit_code == 2
    assert "at least 1000 events" in result.output


def test_demo_refuses_an_unknown_stream() -> None:
    result = CliRunner().invoke(main, ["demo", "--stream", "mnist"])

    assert result.exit_code == 2
    assert "'mnist' is not one of" in result.output


def test_only_bundled_datasets_have_a_known_length() -> None:
    assert (rows_available("phishing"), rows_available("bananas")) == (1250, 5300)
    assert rows_available("sea") is None and rows_available("agrawal") is None
