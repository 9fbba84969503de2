"""Follows ``models`` and swaps in each new verified version of the served model, live.

The swap is one reference assignment between batches: an event is predicted by exactly one
version, and none waits or is dropped while a new version loads in this thread.
"""

from __future__ import annotations

import logging
import threading
import uuid

from confluent_kafka import TopicPartition
from pydantic import ValidationError

from schemas import ModelVersion
from services.core import metrics
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


class ModelWatcher:
    """Holds the champion and replaces it when a newer verified version is announced."""

    def __init__(self, settings: Settings, service: str) -> None:
        self.model_name = settings.model_name
        self.keys = Keyring.of(settings).require_verifying()
        self.root = settings.registry_dir
        self.service = service
        self.topic = Topics(settings.topic_prefix)("models")
        # No group: every serving instance reads the whole history of versions itself.
        self.consumer = make_consumer(
            settings,
            f"eddy-model-watcher-{uuid.uuid4().hex}",
            **{"fetch.wait.max.ms": max(settings.kafka.fetch_wait_max_ms, WATCH_WAIT_MS)},
        )
        schema = FeatureSchema.load(settings.ingest.feature_schema)
        self.features = set(schema.features)
        seen = schema.model_features()  # a dropped personal feature never reaches a model
        numeric = all(schema.features[n].type in ("float", "int", "bool") for n in seen)
        self.compile_over: list[str] | None = (
            sorted(seen) if settings.serving.compile and numeric else None
        )
        self.champion: LoadedModel | None = None
        self.ready = threading.Event()
        self._stopped = threading.Event()
        for reason in ("malformed", "artifact", "features", "stale"):
            metrics.MODELS_REFUSED.labels(service, reason)
        self._thread = threading.Thread(target=self._follow, name="model-watcher", daemon=True)

    def catch_up(self) -> None:
        """Read the history to its end now and load the newest version that verifies."""
        ends = end_offsets(self.consumer, self.topic)
        self.consumer.assign([TopicPartition(self.topic, tp.partition, 0) for tp in ends])
        remaining = {tp.partition: tp.offset for tp in ends if tp.offset > 0}
        history: list[ModelVersion] = []
        while remaining and not self._stopped.is_set():
            for message in self.consumer.consume(500, 0.2):
                if message.error() is not None:
                    continue
                version = self._parse(message.value())
                if version is not None:
                    history.append(version)
                partition, offset = message.partition() or 0, message.offset() or 0
                if offset + 1 >= remaining.get(partition, 0):
                    remaining.pop(partition, None)
        # the highest number first (not the last message: an old record sent again comes last);
        # older ones only if it is refused
        for version in sorted(history, key=lambda v: v.version, reverse=True):
            if self._try_swap(version):
                break

    def start(self) -> None:
        """Catch up, then follow new versions in a background thread."""
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
            if message is not None and message.error() is None:
                version = self._parse(message.value())
                if version is not None:
                    self._try_swap(version)

    def _parse(self, raw: bytes | None) -> ModelVersion | None:
        try:
            version = ModelVersion.model_validate_json(raw or b"")
        except ValidationError as error:
            metrics.MODELS_REFUSED.labels(self.service, "malformed").inc()
            log.error("malformed model version message", extra={"error": str(error)[:500]})
            return None
        return version if version.model_name == self.model_name else None

    def _try_swap(self, version: ModelVersion) -> bool:
        """Load and swap in ``version``; on any failure keep the current model.

        A version trained on other features than the deployment's schema is refused before
        its artifact is read: it would answer every event from defaults. So is a version whose
        number is not above the one served: an old record sent again must not roll serving
        back (a promote or rollback is a new number, signed).
        """
        current = self.champion.version.version if self.champion else None
        if current is not None and version.version <= current:
            metrics.MODELS_REFUSED.labels(self.service, "stale").inc()
            log.error(
                "model version refused: its number is not above the one served",
                extra={"version": version.version, "kept_version": current},
            )
            return False
        if version.feature_names and set(version.feature_names) != self.features:
            metrics.MODELS_REFUSED.labels(self.service, "features").inc()
            log.error(
                "model version refused: trained on other features",
                extra={
                    "version": version.version,
                    "missing": sorted(self.features - set(version.feature_names))[:10],
                    "unknown": sorted(set(version.feature_names) - self.features)[:10],
                },
            )
            return False
        try:
            loaded = load_model(version, self.keys, self.root, self.compile_over)
        except ArtifactError as error:
            metrics.MODELS_REFUSED.labels(self.service, "artifact").inc()
            log.error("model version refused", extra={"error": str(error), "kept_version": current})
            return False
        self.champion = loaded
        self.ready.set()
        metrics.MODEL_VERSION.labels(self.service, self.model_name, "champion").set(version.version)
        metrics.MODEL_SWAPS.labels(self.service, self.model_name).inc()
        log.info(
            "serving model",
            extra={
                "model": self.model_name,
                "version": version.version,
                "trigger": version.trigger,
                "runtime": loaded.predictor.runtime,
            },
        )
        return True
