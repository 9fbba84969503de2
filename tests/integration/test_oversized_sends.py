"""A message too large for the broker is refused with a clear error, and nothing else is lost."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from eddy.cli import main
from eddy.client import EddyClient
from schemas import RawEvent
from services.core.exceptions import MessageTooLargeError
from services.core.settings import Settings
from services.core.supervisor import service_env
from tests.integration.support import OpenReader


def raw_line(event_id: str, padding: int = 0) -> str:
    features = {"x": 1.0, "pad": "p" * padding}
    return RawEvent(
        event_id=event_id, entity_id="e1", ts=datetime.now(UTC), features=features
    ).model_dump_json()


def test_the_client_refuses_an_oversized_message_and_stays_usable(
    settings: Settings, reader: OpenReader
) -> None:
    raw = reader("raw", RawEvent)
    too_big = raw_line("big", padding=settings.kafka.max_message_bytes)

    with EddyClient(settings) as client:
        with pytest.raises(MessageTooLargeError, match="EDDY_KAFKA__MAX_MESSAGE_BYTES"):
            client.send_raw(too_big.encode())
        client.send_raw(raw_line("after").encode())
        client.flush()

    assert [e.event_id for e in raw.read_until(lambda items: len(items) >= 1)] == ["after"]
    assert [e.event_id for e in raw.settle()] == ["after"]


def test_eddy_send_names_the_oversized_line_and_keeps_the_events_before_it(
    settings: Settings, reader: OpenReader, tmp_path: Path
) -> None:
    raw = reader("raw", RawEvent)
    lines = [raw_line("first"), raw_line("big", settings.kafka.max_message_bytes), raw_line("last")]
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(lines) + "\n")

    result = CliRunner().invoke(main, ["send", str(events)], env=service_env(settings))

    assert result.exit_code == 1
    assert "line 2: a message of" in result.output
    assert "the 1 events before it were sent" in result.output
    assert "Traceback" not in result.output
    assert [e.event_id for e in raw.settle()] == ["first"]


def test_a_prediction_request_too_large_to_send_is_refused_before_waiting_for_a_reply(
    settings: Settings,
) -> None:
    features = '{"pad": "%s"}' % ("p" * settings.kafka.max_message_bytes)

    result = CliRunner().invoke(main, ["predict", features], env=service_env(settings))

    assert result.exit_code == 1
    assert "is larger than the" in result.output
    assert "Traceback" not in result.output
