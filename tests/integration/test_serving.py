"""serving on the real broker: predictions with their version, request/reply, live model swaps."""

from __future__ import annotations

import json
import pickle
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import SecretStr

from eddy.client import EddyClient, PredictionFailedError
from schemas import DeadLetter, ModelVersion, Prediction, PredictionReply
from schemas.base import Features
from services.core import registry
from services.core.artifacts import LocalStore
from services.core.onnx_compile import TOLERANCE
from services.core.settings import Settings
from services.core.signing import Keyring, private_hex, public_hex
from services.core.state import FeatureStore, connect_redis
from services.core.supervisor import ServiceProcess
from services.core.topics import Topics
from services.serving.model import RiverPredictor
from tests.integration.support import (
    OpenReader,
    StartService,
    feature_events,
    produce,
    produce_features,
    publish_model,
    trained_model,
)


def _predictions(items: list[Prediction]) -> dict[str, Prediction]:
    return {p.event_id: p for p in items}


def test_every_feature_event_gets_a_prediction_from_the_published_version(
    settings: Settings, start_service: StartService, reader: OpenReader
) -> None:
    version = publish_model(settings)
    start_service("serving")
    events = feature_events(200)
    produce_features(settings, events)

    out = reader("predictions", Prediction).read_until(lambda items: len(items) >= 200)

    by_id = _predictions(out)
    assert sorted(by_id) == sorted(e.event_id for e in events)
    expected = RiverPredictor(pickle.loads(trained_model()))
    for event in events:
        prediction = by_id[event.event_id]
        label, proba = expected.predict(event.features)
        assert (prediction.model_name, prediction.model_version) == ("default", version.version)
        assert prediction.prediction == label
        assert prediction.probabilities is not None and proba is not None
        assert max(abs(prediction.probabilities[k] - proba[k]) for k in proba) <= TOLERANCE
        assert prediction.entity_id == event.entity_id


@pytest.mark.parametrize(("compile_", "runtime"), [("true", "onnx"), ("false", "river")])
def test_a_linear_model_is_served_compiled_unless_compiling_is_off(
    settings: Settings, start_service: StartService, compile_: str, runtime: str
) -> None:
    publish_model(settings)

    serving = start_service("serving", EDDY_SERVING__COMPILE=compile_)

    log = _wait_for_log(serving, '"serving model"')
    swaps = [json.loads(line) for line in log.splitlines() if '"serving model"' in line]
    assert [(s["version"], s["runtime"]) for s in swaps] == [(1, runtime)]


def test_the_public_client_reads_the_predictions_back(
    settings: Settings, start_service: StartService, reader: OpenReader
) -> None:
    import eddy

    publish_model(settings)
    start_service("serving")
    events = feature_events(30)
    produce_features(settings, events)
    reader("predictions", Prediction).read_until(lambda items: len(items) >= 30)

    with eddy.Client(settings) as client:
        read = list(client.read_predictions(idle_s=2))
        nothing = list(client.read("drift", eddy.DriftEvent, idle_s=1))

    assert sorted(p.event_id for p in read) == sorted(e.event_id for e in events)
    assert all(isinstance(p, eddy.Prediction) for p in read)
    assert nothing == []


def test_request_reply_through_the_client(settings: Settings, start_service: StartService) -> None:
    publish_model(settings)
    start_service("serving")
    features = feature_events(1)[0].features
    with EddyClient(settings) as client:
        reply = _retry_until_serving(client, features)
        again = client.predict(features)
    assert reply.model_version == 1 and reply.error is None
    assert reply.prediction in (True, False)
    assert reply.probabilities is not None and abs(sum(reply.probabilities.values()) - 1) < 1e-6
    assert (again.prediction, again.probabilities) == (reply.prediction, reply.probabilities)
    assert again.correlation_id != reply.correlation_id


def test_with_explanations_on_each_prediction_says_why_and_a_request_can_ask(
    settings: Settings, start_service: StartService, reader: OpenReader
) -> None:
    publish_model(settings)
    start_service("serving", EDDY_SERVING__EXPLAIN="true")
    produce_features(settings, feature_events(20))

    out = reader("predictions", Prediction).read_until(lambda items: len(items) >= 20)

    features = feature_events(1)[0].features
    for prediction in out:
        assert prediction.explanation, "every prediction explained"  # type: ignore[attr-defined]
        assert set(prediction.explanation) <= set(features)  # type: ignore[attr-defined]
        assert len(prediction.explanation) <= 5  # type: ignore[attr-defined]
    with EddyClient(settings) as client:
        _wait_until_serving(client)
        explained = client.predict(features, explain=True)
        plain = client.predict(features)
    assert explained.explanation and plain.explanation is None
    assert explained.explanation == out[0].explanation  # type: ignore[attr-defined]


def test_a_call_by_entity_is_answered_with_the_stored_features_and_says_which(
    settings: Settings, start_service: StartService
) -> None:
    publish_model(settings)
    start_service("serving")
    stored = feature_events(1)[0].features
    FeatureStore(connect_redis(settings), settings.topic_prefix).put_many({"page-3": stored})
    given = {"https": 1 - stored["https"]}

    with EddyClient(settings) as client:
        _wait_until_serving(client)
        by_entity = client.predict(given, entity_id="page-3")
        in_full = client.predict({**stored, **given})
        with pytest.raises(PredictionFailedError, match="feature store has nothing for entity"):
            client.predict(given, entity_id="page-unknown")

    assert by_entity.filled == sorted(set(stored) - {"https"})
    assert (by_entity.prediction, by_entity.probabilities) == (
        in_full.prediction,
        in_full.probabilities,
    )
    assert in_full.filled is None


def test_request_reply_reports_a_model_failure_as_an_error(
    settings: Settings, start_service: StartService, tmp_path: Path
) -> None:
    # a schema that lets through what the model cannot take: text where it learned a number
    schema = tmp_path / "texts.toml"
    schema.write_text('name = "texts"\n[features.https]\ntype = "string"\n')
    publish_model(settings)
    start_service("serving", EDDY_INGEST__FEATURE_SCHEMA=str(schema))
    with EddyClient(settings) as client:
        _wait_until_serving(client)
        with pytest.raises(PredictionFailedError, match="predict failed"):
            client.predict({"https": "not a number"})


def test_a_request_is_checked_against_the_feature_schema_like_a_raw_event(
    settings: Settings, start_service: StartService
) -> None:
    publish_model(settings)
    start_service("serving")
    features = feature_events(1)[0].features
    with EddyClient(settings) as client:
        _wait_until_serving(client)
        with pytest.raises(PredictionFailedError, match=r"unknown_field: .*'htps'"):
            client.predict({**features, "htps": 1.0})  # a misspelt feature is not silently 0
        with pytest.raises(PredictionFailedError, match="missing_field: https"):
            client.predict({k: v for k, v in features.items() if k != "https"})
        with pytest.raises(PredictionFailedError, match="out_of_range"):
            client.predict({**features, "https": 1e308})
        assert client.predict(features).prediction in (True, False)


def test_a_version_trained_on_other_features_is_refused_and_serving_keeps_its_model(
    settings: Settings, start_service: StartService, reader: OpenReader
) -> None:
    good = publish_model(settings, feature_names=list(feature_events(1)[0].features))
    serving = start_service("serving")
    publish_model(settings, feature_names=["x0", "x1", "x2"])  # a SEA model, say
    produce_features(settings, feature_events(50))
    out = reader("predictions", Prediction).read_until(lambda items: len(items) >= 50)
    assert {p.model_version for p in out} == {good.version}
    assert "trained on other features" in _wait_for_log(serving, "trained on other features")
    assert serving.running


def test_a_version_published_mid_stream_is_swapped_in_without_losing_or_repeating_events(
    settings: Settings, start_service: StartService, reader: OpenReader
) -> None:
    publish_model(settings, rows=50)
    start_service("serving")
    predictions = reader("predictions", Prediction)
    first, second = feature_events(300), feature_events(300, start=300)
    produce_features(settings, first)
    predictions.read_until(lambda items: len(items) >= 100)
    publish_model(settings, rows=400)
    produce_features(settings, second)
    predictions.read_until(lambda items: any(p.model_version == 2 for p in items))

    out = predictions.settle()
    assert len(out) == 600, "an event was predicted twice or not at all"
    assert sorted(p.event_id for p in out) == sorted(e.event_id for e in first + second)
    versions_by_entity: dict[str, list[int]] = {}
    for p in out:  # one entity is one partition: its predictions are in order
        versions_by_entity.setdefault(p.entity_id, []).append(p.model_version)
    for entity, versions in versions_by_entity.items():
        assert versions == sorted(versions), f"{entity} went back to an older version"
    assert out[-1].model_version == 2


def test_forged_tampered_replayed_and_out_of_store_versions_are_refused_serving_keeps_its_model(
    settings: Settings, start_service: StartService, reader: OpenReader
) -> None:
    good = publish_model(settings)
    serving = start_service("serving")
    artifact = trained_model(rows=300)
    uri = LocalStore(settings.registry_dir).save("default", 2, artifact)
    record = ModelVersion(
        model_name="default", version=2, flavour="river", artifact_uri=uri,
        sha256=registry.sha256_hex(artifact), key_id="hmac:0000000000000000",
        signature="0" * 64, trigger="manual",
    )  # fmt: skip
    ours = Keyring.of(settings)
    forged = registry.signed(record, Keyring(hmac_key=b"attacker key"))
    wrong_bytes = registry.signed(
        record.model_copy(update={"version": 3, "sha256": registry.sha256_hex(b"x")}), ours
    )
    renumbered = good.model_copy(update={"version": 4})  # an old record, a new number
    outside = registry.signed(
        record.model_copy(update={"version": 5, "artifact_uri": "file:///etc/passwd"}), ours
    )
    for message in (forged, wrong_bytes, renumbered, outside, good):  # good: replayed as it was
        registry.announce(settings, message)
    produce(settings, "models", [(b"default", b'{"not": "a model version"}')])
    events = feature_events(100)
    produce_features(settings, events)

    out = reader("predictions", Prediction).read_until(lambda items: len(items) >= 100)
    assert {p.model_version for p in out} == {good.version}
    log = "".join(
        _wait_for_log(serving, text)
        for text in (
            "signed by unknown key",
            "checksum mismatch",
            "signature does not verify",
            "outside the registry folder",
            "not above the newest",
            "malformed model version message",
        )
    )
    assert "model version refused" in log
    assert serving.running


def test_a_malformed_feature_message_goes_to_the_dlq_and_the_next_one_is_served(
    settings: Settings, start_service: StartService, reader: OpenReader
) -> None:
    publish_model(settings)
    start_service("serving")
    produce(settings, "features", [(b"e", b'{"event_id": 1}')])
    produce_features(settings, feature_events(1))
    dlq = reader("dlq", DeadLetter).read_until(lambda items: len(items) >= 1)
    out = reader("predictions", Prediction).read_until(lambda items: len(items) >= 1)
    assert [d.reason for d in dlq] in (["wrong_type"], ["missing_field"])
    assert dlq[0].service == "serving"
    assert [p.event_id for p in out] == ["ev-0"]


def test_malformed_prediction_requests_go_to_the_dlq_and_the_next_call_is_answered(
    settings: Settings, start_service: StartService, reader: OpenReader
) -> None:
    publish_model(settings)
    start_service("serving")
    produce(
        settings,
        "prediction_requests",
        [
            (b"r1", b'{"correlation_id": '),
            (b"r2", b'{"features": {"https": 1.0}}'),
            (b"r3", b'{"correlation_id": "r3", "features": [1, 2]}'),
            (b"r4", b'{"correlation_id": "' + b"x" * 500 + b'", "features": {}}'),
        ],
    )
    with EddyClient(settings) as client:
        reply = _retry_until_serving(client, feature_events(1)[0].features)

    letters = reader("dlq", DeadLetter).read_until(lambda items: len(items) >= 4)
    assert sorted(d.reason for d in letters) == [
        "invalid_json",
        "missing_field",
        "out_of_range",
        "wrong_type",
    ]
    assert {(d.service, d.source_topic) for d in letters} == {
        ("serving", Topics(settings.topic_prefix)("prediction_requests"))
    }
    assert reply.error is None and reply.model_version == 1


def test_the_same_feature_event_twice_gives_the_same_prediction(
    settings: Settings, start_service: StartService, reader: OpenReader
) -> None:
    publish_model(settings)
    start_service("serving")
    event = feature_events(1)[0]
    produce_features(settings, [event, event])
    out = reader("predictions", Prediction).read_until(lambda items: len(items) >= 2)
    assert len(_predictions(out)) == 1, "a deduplicating consumer sees one prediction"
    assert out[0].model_dump(exclude={"served_at"}) == out[1].model_dump(exclude={"served_at"})


def _retry_until_serving(client: EddyClient, features: Features) -> PredictionReply:
    _wait_until_serving(client)
    return client.predict(features, timeout_s=10)


def _wait_until_serving(client: EddyClient) -> None:
    for _ in range(30):
        if client.serving_answers():
            return
    raise AssertionError("serving never answered a request/reply call")


def _wait_for_log(service: ServiceProcess, text: str, timeout_s: float = 30) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        log = service.log_path.read_text(errors="replace")
        if text in log:
            return log
        time.sleep(0.2)
    raise AssertionError(f"{text!r} never appeared in {service.name}'s log:\n{service.log_tail()}")


def test_serving_with_public_keys_only_serves_ed25519_versions_and_refuses_the_shared_secret(
    settings: Settings, start_service: StartService, reader: OpenReader
) -> None:
    private = Ed25519PrivateKey.generate()
    publisher = settings.model_copy(update={"signing_private_key": SecretStr(private_hex(private))})
    good = publish_model(publisher)
    by_secret = publish_model(settings)  # a newer number, signed with the shared secret
    serving = start_service(
        "serving", EDDY_SIGNING_KEY="", EDDY_TRUSTED_KEYS=json.dumps([public_hex(private)])
    )
    produce_features(settings, feature_events(50))

    out = reader("predictions", Prediction).read_until(lambda items: len(items) >= 50)
    assert good.key_id.startswith("ed25519:") and by_secret.key_id.startswith("hmac:")
    assert {p.model_version for p in out} == {good.version}
    assert "only Ed25519" in _wait_for_log(serving, "model version refused")
