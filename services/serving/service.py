"""serving: a prediction for every feature event, and answers to request/reply calls."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Sequence

from confluent_kafka import Message

from schemas import FeatureEvent, PredictionReply, PredictionRequest
from schemas.base import Features
from schemas.predictions import Variant, prediction_json, shadow_answer, shadow_answers_json
from services.core import metrics
from services.core.feature_schema import FeatureSchema, check_features
from services.core.health import HEALTH
from services.core.rejection import Rejection
from services.core.runtime import Runtime, bootstrap, run_stream_service
from services.core.settings import Settings
from services.core.state import FeatureStore
from services.core.stream import BatchHandler, Effects, dead_letter, decode
from services.core.topics import Topics
from services.serving.explain import Explanation
from services.serving.model import Answer, LoadedModel, answer_all
from services.serving.watcher import ModelWatcher

SERVICE = "serving"
log = logging.getLogger(__name__)


class FeaturesHandler:
    """Predicts every feature event with the lineup at the time of its batch."""

    def __init__(self, runtime: Runtime, watcher: ModelWatcher) -> None:
        self.watcher = watcher
        self.predictions_topic = runtime.topics("predictions")
        self.shadow_topic = runtime.topics("shadow_predictions")
        self.dlq_topic = runtime.topics("dlq")
        self.explain = runtime.settings.serving.explain
        self.latency = metrics.PREDICTION_LATENCY.labels(SERVICE)

    def __call__(self, messages: Sequence[Message]) -> Effects:
        """One prediction per valid feature event, the batch in one model call where it can be.

        On a canary, the challenger answers its share of entities; in shadow, it answers every
        event too, on ``predictions.shadow`` only. Undecodable events, and events the champion
        fails on, go to the DLQ.
        """
        effects = Effects()
        lineup = self.watcher.lineup  # one lineup for the whole batch
        assert lineup is not None, "serving consumes only once a model is loaded"
        valid: list[tuple[Message, FeatureEvent]] = []
        for message in messages:
            event = decode(message, FeatureEvent, SERVICE, self.dlq_topic, effects)
            if event is not None:
                valid.append((message, event))
        challenger = lineup.challenger
        if challenger is not None and lineup.mode == "canary":
            canary: list[tuple[Message, FeatureEvent]] = []
            rest: list[tuple[Message, FeatureEvent]] = []
            for item in valid:
                (canary if lineup.on_canary(item[1].entity_id) else rest).append(item)
            self._predict(effects, lineup.champion, rest, "champion", self.predictions_topic)
            self._predict(effects, challenger, canary, "canary", self.predictions_topic)
        else:
            self._predict(effects, lineup.champion, valid, "champion", self.predictions_topic)
        if challenger is not None and lineup.mode == "shadow":
            self._shadow(effects, challenger, valid)
        return effects

    def _shadow(
        self, effects: Effects, model: LoadedModel, events: list[tuple[Message, FeatureEvent]]
    ) -> None:
        """The shadow's answers to the batch, in one message; a row it fails on is counted."""
        rows = [event.features for _, event in events]
        answers = []
        for (_, event), answer in zip(events, answer_all(model.predictor, rows), strict=True):
            try:
                if isinstance(answer, Exception):
                    raise answer
                answers.append(shadow_answer(event.event_id, *answer))
            except Exception:  # the event was served; the shadow's failure is only counted
                metrics.REJECTED.labels(SERVICE, "shadow_error").inc()
        if answers:
            version = model.version
            value = shadow_answers_json(version.model_name, version.version, answers)
            effects.emit_json(self.shadow_topic, version.model_name, value)

    def _predict(
        self,
        effects: Effects,
        model: LoadedModel,
        events: list[tuple[Message, FeatureEvent]],
        variant: Variant,
        topic: str,
    ) -> None:
        """Each event's served prediction; an event the model fails on is a dead letter."""
        version = model.version
        rows = [event.features for _, event in events]
        answers = answer_all(model.predictor, rows)
        explanations = explain_all(model, rows, answers) if self.explain else None
        observe, now = self.latency.observe, time.time()
        for i, ((message, event), answer) in enumerate(zip(events, answers, strict=True)):
            try:
                if isinstance(answer, Exception):
                    raise answer
                label, proba = answer
                value = prediction_json(
                    event.event_id,
                    event.entity_id,
                    event.ts,
                    event.features,
                    version.model_name,
                    version.version,
                    label,
                    proba,
                    variant,
                    explanations[i] if explanations else None,
                )
            except Exception as exc:  # a model failing on one input must not stop serving
                metrics.REJECTED.labels(SERVICE, "handler_error").inc()
                letter = dead_letter(
                    message, SERVICE, "handler_error", f"predict failed: {exc!r}", event.event_id
                )
                effects.emit(self.dlq_topic, message.key(), letter)
                continue
            effects.emit_json(topic, event.entity_id, value)
            observe(max(0.0, now - event.ingested_at.timestamp()))


class RequestsHandler:
    """Answers request/reply calls on ``prediction.replies``, keyed by correlation id.

    A request's features are checked against the feature schema as ingest checks a raw event's:
    an unknown, missing or out-of-range feature is an error in the reply, not a silent default.
    """

    def __init__(self, runtime: Runtime, watcher: ModelWatcher) -> None:
        self.watcher = watcher
        self.schema = FeatureSchema.load(runtime.settings.ingest.feature_schema).served()
        # a request carries raw features: personal ones are hashed or dropped as ingest does
        self.pii_key = runtime.settings.pii_key.get_secret_value().encode()
        self.schema.require_pii_key(self.pii_key)
        self.store = FeatureStore(runtime.redis, runtime.settings.topic_prefix or "default")
        self.replies_topic = runtime.topics("prediction_replies")
        self.dlq_topic = runtime.topics("dlq")
        self.model_name = runtime.settings.model_name

    def __call__(self, messages: Sequence[Message]) -> Effects:
        """One reply per valid request, with an error message when it cannot be answered.

        A request that names an entity has the features it does not send filled from the
        feature store (one read for the batch), and its reply says which.
        """
        effects = Effects()
        champion = self.watcher.champion
        requests = [
            request
            for message in messages
            if (request := decode(message, PredictionRequest, SERVICE, self.dlq_topic, effects))
        ]
        entities = {r.entity_id for r in requests if r.entity_id is not None}
        stored = self.store.get_many(sorted(entities)) if entities else {}
        for request in requests:
            known = stored.get(request.entity_id) if request.entity_id is not None else None
            features = check_features(self.schema, request.features, self.pii_key, known)
            filled = (
                sorted(n for n in features if n in known and n not in request.features)
                if known and not isinstance(features, Rejection)
                else None
            )
            if request.entity_id is not None and known is None and isinstance(features, Rejection):
                reply = self._error(
                    request,
                    f"{features.reason}: {features.detail}; the feature store has nothing for "
                    f"entity {request.entity_id!r} (ingest keeps the latest features of each "
                    "entity it accepted)",
                )
            elif isinstance(features, Rejection):
                reply = self._error(request, f"{features.reason}: {features.detail}")
            elif champion is None:
                reply = self._error(request, "no model loaded yet")
            else:
                try:
                    label, proba = champion.predictor.predict(features)
                    explained = (
                        explain_all(champion, [features], [(label, proba)])
                        if request.explain
                        else [None]
                    )
                    reply = PredictionReply(
                        correlation_id=request.correlation_id,
                        model_name=champion.version.model_name,
                        model_version=champion.version.version,
                        prediction=label,
                        probabilities=proba,
                        explanation=explained[0],
                        filled=filled,
                    )
                except Exception as exc:  # the caller gets the reason instead of a timeout
                    reply = self._error(request, f"predict failed: {exc!r}")
            effects.emit(self.replies_topic, request.correlation_id, reply)
        return effects

    def _error(self, request: PredictionRequest, error: str) -> PredictionReply:
        return PredictionReply(
            correlation_id=request.correlation_id, model_name=self.model_name, error=error
        )


def explain_all(
    model: LoadedModel, rows: list[Features], answers: Sequence[Answer | Exception]
) -> list[Explanation | None]:
    """Each row's explanation, where the model has an explainer and the row an answer.

    An explainer that fails costs the explanations of its batch, never a prediction.
    """
    if model.explainer is None:
        return [None] * len(rows)
    labels = [None if isinstance(a, Exception) else a[0] for a in answers]
    try:
        return model.explainer.explain_many(rows, labels)
    except Exception as exc:  # an explanation is extra; the answers stand without it
        log.warning("explanations failed: %r", exc)
        return [None] * len(rows)


def handlers(runtime: Runtime, watcher: ModelWatcher) -> dict[str, BatchHandler]:
    """Topic → handler for the serving service."""
    return {
        runtime.topics("features"): FeaturesHandler(runtime, watcher),
        runtime.topics("prediction_requests"): RequestsHandler(runtime, watcher),
    }


def transactional_id_of(settings: Settings) -> str:
    """The Kafka transactional id of this serving: group, model and instance name.

    Stable across restarts of one instance, so that a restart fences its predecessor and
    aborts the transaction it left open; distinct between instances running at once, which
    would otherwise fence each other (EDDY_SERVING__INSTANCE, else the host name).
    """
    instance = settings.serving.instance or socket.gethostname()
    return f"{Topics(settings.topic_prefix).group(SERVICE)}-{settings.model_name}-{instance}"


def run(settings: Settings | None = None) -> None:
    """Entry point: load the champion, then serve until SIGTERM or SIGINT."""
    runtime = bootstrap(SERVICE, settings)
    watcher = ModelWatcher(runtime.settings, SERVICE)
    HEALTH.checks["model"] = lambda: "" if watcher.champion else "no model version loaded yet"
    HEALTH.waiting_for.add("a model version")  # live meanwhile: a restart would not bring one
    watcher.start()
    try:
        if watcher.champion is None:
            log.info("waiting for a model version", extra={"model": watcher.model_name})
        while not watcher.ready.wait(0.5):
            if runtime.stop.is_set():
                return
        HEALTH.waiting_for.discard("a model version")
        transactional_id = None
        if runtime.settings.serving.transactional:
            transactional_id = transactional_id_of(runtime.settings)
            log.info("exactly-once", extra={"transactional_id": transactional_id})
        run_stream_service(runtime, handlers(runtime, watcher), transactional_id=transactional_id)
    finally:
        watcher.stop()
