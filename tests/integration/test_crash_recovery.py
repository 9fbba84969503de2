"""A service killed with SIGKILL mid-stream and restarted loses no event.

Outputs may repeat after a crash (at-least-once); a consumer that de-duplicates by event_id
sees each input exactly once. The figures of repeats are printed, not asserted.
"""

from __future__ import annotations

import threading
import time

from schemas import FeatureEvent, Prediction
from services.core.settings import Settings
from tests.integration.support import (
    OpenReader,
    StartService,
    feature_events,
    phishing_events,
    produce,
    produce_features,
    publish_model,
)

TOTAL = 1200


def _paced(send: object, chunks: list[list[object]], pause_s: float) -> threading.Thread:
    def run() -> None:
        for chunk in chunks:
            send(chunk)  # type: ignore[operator]
            time.sleep(pause_s)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_serving_killed_mid_stream_and_restarted_loses_no_prediction(
    settings: Settings, start_service: StartService, reader: OpenReader
) -> None:
    publish_model(settings)
    serving = start_service("serving")
    events = feature_events(TOTAL)
    chunks = [events[i : i + 50] for i in range(0, TOTAL, 50)]
    sender = _paced(lambda chunk: produce_features(settings, chunk), chunks, 0.1)  # type: ignore[arg-type]
    predictions = reader("predictions", Prediction)
    predictions.read_until(lambda items: len(items) >= 200)
    serving.kill()
    killed_after = len(predictions.items)
    start_service("serving")
    sender.join()

    out = predictions.read_until(lambda items: len({p.event_id for p in items}) >= TOTAL, 120)
    unique = {p.event_id for p in out}
    assert unique == {e.event_id for e in events}, (
        f"missing {len(set(e.event_id for e in events) - unique)}"
    )
    assert killed_after < TOTAL, "the kill came after the stream ended: nothing was tested"
    print(
        f"serving: killed after {killed_after} predictions; "
        f"repeats after restart: {len(out) - TOTAL}"
    )


def test_ingest_killed_mid_stream_and_restarted_loses_no_event(
    settings: Settings, start_service: StartService, reader: OpenReader
) -> None:
    ingest = start_service("ingest")
    events = phishing_events(TOTAL)
    raw = [(e.entity_id.encode(), e.model_dump_json().encode()) for e in events]
    chunks = [raw[i : i + 50] for i in range(0, TOTAL, 50)]
    sender = _paced(lambda chunk: produce(settings, "raw", chunk), chunks, 0.1)  # type: ignore[arg-type]
    features = reader("features", FeatureEvent)
    features.read_until(lambda items: len(items) >= 200)
    ingest.kill()
    killed_after = len(features.items)
    start_service("ingest")
    sender.join()

    out = features.read_until(lambda items: len({f.event_id for f in items}) >= TOTAL, 120)
    assert {f.event_id for f in out} == {e.event_id for e in events}
    assert killed_after < TOTAL, "the kill came after the stream ended: nothing was tested"
    print(
        f"ingest: killed after {killed_after} features; repeats after restart: {len(out) - TOTAL}"
    )
