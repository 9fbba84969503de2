"""Follows ``models`` and ``models.deployments`` and keeps what serves the model, live.

What serves is a ``Lineup`` (the champion, and a challenger in shadow or on canary), replaced
whole by one reference assignment between batches: an event is predicted by exactly one
lineup, and none waits or is dropped while a new version loads in this thread. Which versions
serve is ``services.core.deployments.plan``: the newest version not held back, unless a
deployment record says otherwise.
"""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass

from confluent_kafka import TopicPartition
from pydantic import ValidationError

from schemas import Deployment, ModelVersion
from schemas.models import DeploymentMode
from services.core import deployments, metrics
from services.core.artifacts import artifact_store
from services.core.exceptions import ArtifactError
from services.core.feature_schema import FeatureSchema
from services.core.kafka import end_offsets, make_consumer
from services.core.settings import Settings
from services.core.signing import Keyring
from services.core.topics import Topics
from services.serving.model import LoadedModel, load_model

log = logging.getLogger(__name__)

#: The least a fetch of ``models`` waits for a new version. Versions are rare, and every fetch
#: costs the broker CPU whether or not it finds one (the embedded broker's fetch wait is 20 ms:
#: fifty empty fetches a second from each serving instance). The embedded broker answers a
#: waiting fetch only when the wait ends, so a version may reach serving up to 80 ms later.
WATCH_WAIT_MS = 100


@dataclass(frozen=True)
class Lineup:
    """What answers events now."""

    champion: LoadedModel
    challenger: LoadedModel | None = None
    mode: DeploymentMode = "none"
    share: float = 0.0

    def on_canary(self, entity_id: str) -> bool:
        """Whether the challenger answers this entity (sticky: by a hash of its id)."""
        return self.mode == "canary" and deployments.bucket(entity_id) < self.share


class ModelWatcher:
    """Holds the lineup and changes it when versions or deployment records say so."""

    def __init__(self, settings: Settings, service: str) -> None:
        self.model_name = settings.model_name
        self.keys = Keyring.of(settings).require_verifying()
        self.store = artifact_store(settings)
        self.service = service
        topics = Topics(settings.topic_prefix)
        self.topics = [topics("models"), topics("deployments")]
        # No group: every serving instance reads the whole history itself.
        self.consumer = make_consumer(
            settings,
            f"eddy-model-watcher-{uuid.uuid4().hex}",
            **{"fetch.wait.max.ms": max(settings.kafka.fetch_wait_max_ms, WATCH_WAIT_MS)},
        )
        schema = FeatureSchema.load(settings.ingest.feature_schema).served()
        self.features = set(schema.features)
        seen = schema.model_features()  # a dropped personal feature never reaches a model
        numeric = all(schema.features[n].type in ("float", "int", "bool") for n in seen)
        self.compile_over: list[str] | None = (
            sorted(seen) if settings.serving.compile and numeric else None
        )
        self.versions: dict[int, ModelVersion] = {}
        self.deployment: Deployment | None = None
        self.lineup: Lineup | None = None
        self.ready = threading.Event()
        self._refused: set[int] = set()
        self._stopped = threading.Event()
        for reason in ("malformed", "artifact", "features", "stale"):
            metrics.MODELS_REFUSED.labels(service, reason)
        self._thread = threading.Thread(target=self._follow, name="model-watcher", daemon=True)

    @property
    def champion(self) -> LoadedModel | None:
        """The model answering every event not on a canary."""
        return self.lineup.champion if self.lineup else None

    def catch_up(self) -> None:
        """Read both histories to their ends now, and serve what they say."""
        ends = [tp for topic in self.topics for tp in end_offsets(self.consumer, topic)]
        self.consumer.assign([TopicPartition(tp.topic, tp.partition, 0) for tp in ends])
        remaining = {(tp.topic, tp.partition): tp.offset for tp in ends if tp.offset > 0}
        while remaining and not self._stopped.is_set():
            for message in self.consumer.consume(500, 0.2):
                if message.error() is not None:
                    continue
                self._read(message.topic() or "", message.value(), catching_up=True)
                where = (message.topic() or "", message.partition() or 0)
                if (message.offset() or 0) + 1 >= remaining.get(where, 0):
                    remaining.pop(where, None)
        self._apply()

    def start(self) -> None:
        """Catch up, then follow in a background thread."""
        self.catch_up()
        self._thread.start()

    def stop(self) -> None:
        """Stop following and close the consumer."""
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self.consumer.close()

    def _follow(self) -> None:
        while not self._stopped.is_set():
            # poll returns at the first message; consume(n, t) would wait out t for n of them
            message = self.consumer.poll(0.5)
            if (
                message is not None
                and message.error() is None
                and self._read(message.topic() or "", message.value(), catching_up=False)
            ):
                self._apply()

    def _read(self, topic: str, raw: bytes | None, catching_up: bool) -> bool:
        """Take in one record; True if it may change what serves."""
        if topic == self.topics[1]:
            return self._read_deployment(raw)
        try:
            version = ModelVersion.model_validate_json(raw or b"")
        except ValidationError as error:
            metrics.MODELS_REFUSED.labels(self.service, "malformed").inc()
            log.error("malformed model version message", extra={"error": str(error)[:500]})
            return False
        if version.model_name != self.model_name:
            return False
        newest = max(self.versions, default=0)
        if version.version in self.versions or (not catching_up and version.version <= newest):
            # an old record sent again must not roll serving back (a promote or rollback is a
            # new number, signed, or a deployment record)
            metrics.MODELS_REFUSED.labels(self.service, "stale").inc()
            log.error(
                "model version refused: its number is not above the newest",
                extra={"version": version.version, "newest": newest},
            )
            return False
        self.versions[version.version] = version
        return True

    def _read_deployment(self, raw: bytes | None) -> bool:
        try:
            record = Deployment.model_validate_json(raw or b"")
        except ValidationError as error:
            metrics.MODELS_REFUSED.labels(self.service, "malformed").inc()
            log.error("malformed deployment record", extra={"error": str(error)[:500]})
            return False
        if record.model_name != self.model_name:
            return False
        if self.deployment is not None and record.seq <= self.deployment.seq:
            metrics.MODELS_REFUSED.labels(self.service, "stale").inc()
            log.error("deployment record refused: stale", extra={"seq": record.seq})
            return False
        try:
            deployments.verify(record, self.keys)
        except ArtifactError as error:
            metrics.MODELS_REFUSED.labels(self.service, "artifact").inc()
            log.error("deployment record refused", extra={"error": str(error)})
            return False
        self.deployment = record
        log.info(
            "deployment record",
            extra={"seq": record.seq, "action": record.action, "reason": record.reason},
        )
        return True

    def _apply(self) -> None:
        """Load what the plan names, where it differs from what serves, and swap it in."""
        plan = deployments.plan(self.versions.values(), self.deployment)
        current = self.lineup
        champion = self._champion(plan.champion, current)
        if champion is None:
            return
        challenger = None
        if plan.challenger is not None:
            kept = current.challenger if current else None
            if kept is not None and kept.version.version == plan.challenger:
                challenger = kept
            else:
                challenger = self._load(plan.challenger)
        mode = plan.mode if challenger is not None else "none"
        lineup = Lineup(champion, challenger, mode, plan.share if mode == "canary" else 0.0)
        if current is not None and (
            (current.champion, current.challenger, current.mode, current.share)
            == (lineup.champion, lineup.challenger, lineup.mode, lineup.share)
        ):
            return
        self.lineup = lineup
        self.ready.set()
        number = champion.version.version
        metrics.MODEL_VERSION.labels(self.service, self.model_name, "champion").set(number)
        metrics.MODEL_VERSION.labels(self.service, self.model_name, "challenger").set(
            challenger.version.version if challenger else 0
        )
        if current is None or current.champion is not champion:
            metrics.MODEL_SWAPS.labels(self.service, self.model_name).inc()
        log.info(
            "serving model",
            extra={
                "model": self.model_name,
                "version": number,
                "trigger": champion.version.trigger,
                "runtime": champion.predictor.runtime,
                "mode": mode,
                "challenger": challenger.version.version if challenger else None,
                "share": lineup.share,
            },
        )

    def _champion(self, wanted: int | None, current: Lineup | None) -> LoadedModel | None:
        """The champion to serve: ``wanted`` if it loads, else the current one.

        While serving follows versions, a refused newest one falls back to the newest older one
        that loads and is above what serves (at start-up, anything).
        """
        if current is not None and wanted == current.champion.version.version:
            return current.champion
        candidates = [wanted] if wanted is not None else []
        if self.deployment is None or self.deployment.follow:
            floor = self.deployment.champion_version if self.deployment else 0
            served = current.champion.version.version if current else 0
            older = [n for n in sorted(self.versions, reverse=True) if n != wanted]
            candidates += [
                n for n in older if n >= floor and n > served and not self.versions[n].hold
            ]
        for number in candidates:
            loaded = self._load(number)
            if loaded is not None:
                return loaded
        return current.champion if current else None

    def _load(self, number: int) -> LoadedModel | None:
        """Version ``number`` loaded and checked, or None (refused, or not seen yet)."""
        version = self.versions.get(number)
        if version is None:
            log.warning("waiting for a version the deployment names", extra={"version": number})
            return None
        if number in self._refused:
            return None
        if version.feature_names and set(version.feature_names) != self.features:
            self._refused.add(number)
            metrics.MODELS_REFUSED.labels(self.service, "features").inc()
            log.error(
                "model version refused: trained on other features",
                extra={
                    "version": number,
                    "missing": sorted(self.features - set(version.feature_names))[:10],
                    "unknown": sorted(set(version.feature_names) - self.features)[:10],
                },
            )
            return None
        try:
            return load_model(version, self.keys, self.store, self.compile_over)
        except ArtifactError as error:
            self._refused.add(number)
            metrics.MODELS_REFUSED.labels(self.service, "artifact").inc()
            log.error("model version refused", extra={"error": str(error), "version": number})
            return None
