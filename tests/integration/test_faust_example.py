"""The faust-streaming example runs on the embedded broker, and what it sends passes ingest."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]

from schemas import DeadLetter, FeatureEvent
from services.core.kafka import make_admin, make_producer
from services.core.settings import Settings
from tests.integration.support import OpenReader, StartService

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = """
name = "payments"

[features.amount]
type = "float"
min = 0.0

[features.spend_this_minute]
type = "float"
min = 0.0
"""


def test_the_faust_example_enriches_payments_with_a_windowed_table_and_ingest_takes_them(
    settings: Settings, start_service: StartService, reader: OpenReader, tmp_path: Path
) -> None:
    schema = tmp_path / "payments.toml"
    schema.write_text(SCHEMA)
    admin = make_admin(settings)
    admin.create_topics([NewTopic(f"{settings.topic_prefix}payments", 1, -1)])
    start_service("ingest", EDDY_INGEST__FEATURE_SCHEMA=str(schema))
    env = {
        **os.environ,
        "EDDY_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "EDDY_TOPIC_PREFIX": settings.topic_prefix,
        "ENRICH_DATADIR": str(tmp_path / "faust"),
    }
    log = (tmp_path / "faust.log").open("w")
    worker = subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "faust_enrich.py"), "worker", "-l", "info"],
        env=env,
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    start = math.floor(time.time() / 60) * 60 - 600  # whole minutes, ten minutes ago
    payments = [
        {"payment_id": f"p{i}", "card": f"card-{i % 3}", "ts": start + 7 * i, "amount": i + 0.5}
        for i in range(60)
    ]
    try:
        producer = make_producer(settings)
        for payment in payments:
            producer.produce(
                f"{settings.topic_prefix}payments", json.dumps(payment).encode(), payment["card"]
            )
        assert producer.flush(30) == 0
        features = reader("features", FeatureEvent).read_until(
            lambda items: len(items) >= len(payments), 120
        )
    finally:
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
        log.close()

    said = (tmp_path / "faust.log").read_text(errors="replace")[-3000:]
    assert len(features) == len(payments), said
    got = {f.event_id: f.features for f in features}
    for payment in payments:  # the spend of the card's minute so far, this payment included
        minute = (payment["ts"] - start) // 60
        expected = sum(
            p["amount"]
            for p in payments[: payments.index(payment) + 1]
            if p["card"] == payment["card"] and (p["ts"] - start) // 60 == minute
        )
        assert got[payment["payment_id"]] == {
            "amount": payment["amount"],
            "spend_this_minute": expected,
        }, said
    assert reader("dlq", DeadLetter).settle(quiet_s=1.0) == []
