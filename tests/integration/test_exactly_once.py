"""Exactly-once serving (Kafka transactions) when instances come and go.

Each serving's transactional id names its instance (EDDY_SERVING__INSTANCE, else the host
name): two running at once must not fence each other, and the same name twice is a takeover.
"""

from __future__ import annotations

import time

from schemas import Prediction
from services.core.settings import Settings
from tests.integration.support import (
    OpenReader,
    StartService,
    feature_events,
    produce_features,
    publish_model,
)


def test_two_exactly_once_servings_share_the_work_and_neither_fences_the_other(
    settings: Settings, start_service: StartService, reader: OpenReader
) -> None:
    publish_model(settings)
    first = start_service("serving", EDDY_SERVING__TRANSACTIONAL="true", EDDY_SERVING__INSTANCE="a")
    predictions = reader("predictions", Prediction)
    produce_features(settings, feature_events(100, prefix="one"))
    predictions.read_until(lambda items: len(items) >= 100, 60)

    second = start_service(
        "serving", EDDY_SERVING__TRANSACTIONAL="true", EDDY_SERVING__INSTANCE="b"
    )
    time.sleep(8)  # the group rebalances between the two
    produce_features(settings, feature_events(300, prefix="two"))
    out = predictions.read_until(lambda items: len(items) >= 400, 90)
    time.sleep(2)
    out = predictions.settle(quiet_s=2.0)

    assert first.running and second.running, first.log_tail() + second.log_tail()
    ids = [p.event_id for p in out]  # type: ignore[attr-defined]
    assert len(set(ids)) == 400 and len(ids) == 400  # each once, to a read_committed reader
    assert "fenced" not in first.log_tail(200) + second.log_tail(200)
