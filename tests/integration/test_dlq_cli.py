"""Dead letters read back and replayed after a fix: each goes once, and is predicted once."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from click.testing import CliRunner, Result

from eddy.cli import main
from schemas import DeadLetter, Prediction
from services.core.settings import Settings
from services.core.supervisor import service_env
from tests.integration.support import (
    OpenReader,
    StartService,
    phishing_events,
    produce,
    publish_model,
)


def _eddy(settings: Settings, *args: str) -> Result:
    result = CliRunner().invoke(main, list(args), env=service_env(settings))
    assert result.exit_code == 0, result.output
    return result


def test_letters_rejected_by_a_setting_are_replayed_after_the_fix_each_once_and_predicted_once(
    settings: Settings, start_service: StartService, reader: OpenReader
) -> None:
    publish_model(settings)
    serving = start_service("serving")
    strict = start_service("ingest", EDDY_INGEST__MAX_EVENT_AGE_DAYS="1")
    old = datetime.now(UTC) - timedelta(days=10)
    events = [e.model_copy(update={"ts": old}) for e in phishing_events(30)]
    fresh = phishing_events(10, start=100)
    produce(
        settings,
        "raw",
        [(e.entity_id.encode(), e.model_dump_json().encode()) for e in [*events, *fresh]],
    )
    letters = reader("dlq", DeadLetter)
    letters.read_until(lambda items: len(items) >= 30)
    predictions = reader("predictions", Prediction)
    predictions.read_until(lambda items: len(items) >= 10)

    listed = _eddy(settings, "dlq", "list", "--reason", "out_of_range", "--json")
    rows = [json.loads(line) for line in listed.output.splitlines() if line.startswith("{")]
    assert sorted(r["event_id"] for r in rows) == sorted(e.event_id for e in events)
    assert _eddy(settings, "dlq", "list", "--reason", "oversized", "--json").output.strip() == ""

    strict.stop()  # the fix: ingest with the default window
    start_service("ingest")
    first = json.loads(
        _eddy(
            settings, "dlq", "replay", "--reason", "out_of_range", "--json", "--watch", "3"
        ).output
    )
    again = json.loads(_eddy(settings, "dlq", "replay", "--json", "--watch", "0").output)

    assert (first["sent"], first["rejected_again"]) == (30, 0)
    assert (again["sent"], again["already_replayed"]) == (0, 30)
    out = predictions.read_until(lambda items: len(items) >= 40, timeout_s=60)
    predictions.settle(quiet_s=2.0)
    ids = [p.event_id for p in predictions.items]
    assert sorted(ids) == sorted(e.event_id for e in [*events, *fresh]), "lost or repeated"
    assert serving.running and out


def test_a_replay_still_rejected_is_counted_by_reason(
    settings: Settings, start_service: StartService, reader: OpenReader
) -> None:
    start_service("ingest")
    produce(settings, "raw", [(b"k", b"{not json")] * 3)
    reader("dlq", DeadLetter).read_until(lambda items: len(items) >= 3)

    report = json.loads(_eddy(settings, "dlq", "replay", "--json", "--watch", "30").output)

    assert report["sent"] == 3
    assert report["rejected_again_by_reason"] == {"invalid_json": 3}
