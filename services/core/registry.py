"""The model registry: signed artifacts in a store, their versions as messages on ``models``.

The store is a folder or an object store (``artifacts.py``).

A version record is signed whole (signing.py): its signature covers every field, the
artifact's SHA-256 included. Loading checks, in this order and before anything is
deserialised: the record's signature, that the artifact's URI is inside the registry folder,
and the artifact's SHA-256. A River artifact is a pickle, and unpickling runs code.
"""

from __future__ import annotations

import hashlib
import hmac
import pickle
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlparse

from confluent_kafka import TopicPartition
from pydantic import BaseModel

from schemas import ModelVersion, OffsetRange
from schemas.models import Flavour, ModelSpec, Task, Trigger
from services.core.artifacts import ArtifactStore, LocalStore, artifact_store
from services.core.exceptions import ArtifactError
from services.core.kafka import end_offsets, make_consumer, make_producer
from services.core.settings import Settings
from services.core.signing import Keyring
from services.core.topics import TopicRole, Topics

PayloadT = TypeVar("PayloadT", bound=BaseModel)


def sha256_hex(data: bytes) -> str:
    """The artifact's checksum."""
    return hashlib.sha256(data).hexdigest()


def sign(data: bytes, key: bytes) -> str:
    """HMAC-SHA256 of ``data`` with ``key`` (checkpoints in Redis are signed so)."""
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def _signed_fields(version: ModelVersion) -> dict[str, Any]:
    return version.model_dump(mode="json", exclude={"key_id", "signature"})


def signed(version: ModelVersion, keys: Keyring) -> ModelVersion:
    """``version`` with its key id and the signature of every other field."""
    key_id, signature = keys.sign(_signed_fields(version))
    return version.model_copy(update={"key_id": key_id, "signature": signature})


def verify_record(version: ModelVersion, keys: Keyring) -> None:
    """Raise ArtifactError unless the whole record is signed by a key ``keys`` accepts."""
    keys.verify(
        _signed_fields(version),
        version.key_id,
        version.signature,
        f"{version.model_name} v{version.version}",
    )


def verify(version: ModelVersion, data: bytes, keys: Keyring) -> None:
    """Raise ArtifactError unless the record verifies and ``data`` is the artifact it names."""
    verify_record(version, keys)
    if not hmac.compare_digest(sha256_hex(data), version.sha256):
        raise ArtifactError(f"{version.model_name} v{version.version}: checksum mismatch")


def orphaned_artifacts(root: Path, history: list[ModelVersion]) -> list[Path]:
    """Artifact files under ``root`` that no version in ``history`` names.

    The registry folder outlives stacks (an embedded broker forgets its ``models`` topic when
    it stops), so it keeps artifacts no running stack knows; these can go.
    """
    named = {Path(unquote(urlparse(v.artifact_uri).path)).resolve() for v in history}
    found = sorted(p.resolve() for p in root.glob("*/v*.bin") if p.is_file())
    return [path for path in found if path not in named]


#: Recursion allowed while pickling: a deep tree nests a few frames per level, and Python's
#: default of 1,000 stops at a depth of a few hundred (a Hoeffding tree on a time-like feature).
PICKLE_RECURSION_LIMIT = 20_000


def deep_pickle(obj: Any) -> bytes:
    """``pickle.dumps`` for objects that nest deeply (trees), with a raised recursion limit."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, PICKLE_RECURSION_LIMIT))
    try:
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    finally:
        sys.setrecursionlimit(limit)


def serialize_river(model: Any) -> bytes:
    """A River model as artifact bytes."""
    return deep_pickle(model)


def load_verified(
    version: ModelVersion, keys: Keyring, store: ArtifactStore | Path
) -> tuple[bytes, Any]:
    """Verify the record, read and check the artifact, deserialize: (bytes, model or ONNX).

    ``store``: where artifacts are (a folder is the local store of files under it).
    """
    verify_record(version, keys)
    if isinstance(store, Path):
        store = LocalStore(store)
    data = store.load(version.artifact_uri)
    verify(version, data, keys)
    if version.flavour == "onnx":
        return data, data
    try:
        return data, pickle.loads(data)
    except Exception as exc:
        raise ArtifactError(f"{version.model_name} v{version.version}: cannot load: {exc}") from exc


def read_versions(settings: Settings, timeout_s: float = 10.0) -> list[ModelVersion]:
    """Every version message on ``models``, oldest first (the registry's history)."""
    return read_history(settings, "models", ModelVersion, timeout_s)


def read_history(
    settings: Settings, role: TopicRole, payload: type[PayloadT], timeout_s: float = 10.0
) -> list[PayloadT]:
    """Every valid message of a history topic (``models``, ``deployments``), oldest first."""
    topic = Topics(settings.topic_prefix)(role)
    consumer = make_consumer(settings, f"eddy-registry-reader-{uuid.uuid4().hex}")
    try:
        ends = {tp.partition: tp.offset for tp in end_offsets(consumer, topic) if tp.offset > 0}
        if not ends:
            return []
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        items: list[PayloadT] = []
        done: set[int] = set()
        deadline = time.monotonic() + timeout_s
        while len(done) < len(ends) and time.monotonic() < deadline:
            for message in consumer.consume(500, 0.2):
                if message.error() is not None:
                    continue
                partition, offset = message.partition() or 0, message.offset() or 0
                if offset + 1 >= ends[partition]:
                    done.add(partition)
                try:
                    items.append(payload.model_validate_json(message.value() or b""))
                except ValueError:
                    continue  # a malformed entry is skipped; serving logs the same
        return items
    finally:
        consumer.close()


def publish(
    settings: Settings,
    model_name: str,
    artifact: bytes,
    *,
    flavour: Flavour = "river",
    trigger: Trigger = "manual",
    parent_version: int | None = None,
    metrics: dict[str, float] | None = None,
    drift_event_id: str | None = None,
    lineage: list[OffsetRange] | None = None,
    feature_names: list[str] | None = None,
    classes: list[Any] | None = None,
    task: Task | None = None,
    spec: ModelSpec | None = None,
    description: str = "",
    version: int | None = None,
    hold: bool = False,
    announcer: Announcer | None = None,
) -> ModelVersion:
    """Store and sign an artifact, announce it on ``models``, and return the version message.

    The version number is one more than the highest on ``models`` unless given. A service that
    publishes often passes its own ``announcer``, which does not wait for the broker; without
    one the message is acknowledged before this returns. A ``hold`` version is not served
    until a deployment names it.
    """
    keys = Keyring.of(settings)
    if version is None:
        known = [v.version for v in read_versions(settings) if v.model_name == model_name]
        version = max(known, default=0) + 1
    uri = artifact_store(settings).save(model_name, version, artifact)
    message = ModelVersion(
        model_name=model_name,
        version=version,
        flavour=flavour,
        artifact_uri=uri,
        sha256=sha256_hex(artifact),
        key_id="hmac:0000000000000000",  # replaced by ``signed``
        signature="0" * 64,
        metrics=metrics or {},
        parent_version=parent_version,
        trigger=trigger,
        drift_event_id=drift_event_id,
        lineage=lineage or [],
        feature_names=feature_names or [],
        classes=classes,
        task=task,
        spec=spec,
        hold=hold,
        description=description,
    )
    message = signed(message, keys)
    if announcer is not None:
        announcer.send(message)
    else:
        announce(settings, message)
    return message


def announce(settings: Settings, message: ModelVersion) -> None:
    """Put a version message on ``models`` and wait for the broker's acknowledgement.

    It makes a producer for this message: fine for a command, but a new idempotent producer
    waits about half a second for its producer id; a service uses an ``Announcer``.
    """
    announcer = Announcer(settings)
    announcer.send(message)
    announcer.close()


class Announcer:
    """A service's version messages on ``models``, sent without waiting for each to land.

    Waiting for the broker's acknowledgement of every version blocked training's loop for a
    round trip each time. The producer is idempotent, so the messages land in the order sent
    or, after a failure, none after it does: the first failure is kept and raised by the next
    ``check`` (or ``send``), which ends the service; its restart resumes from the versions that
    did land (a race checkpoint of a version that did not is ignored, see training).
    """

    def __init__(self, settings: Settings) -> None:
        self.topic = Topics(settings.topic_prefix)("models")
        self.producer = make_producer(settings)
        self.failure: str | None = None

    def _delivered(self, error: Any, _message: Any) -> None:
        if error is not None and self.failure is None:
            self.failure = str(error)

    def send(self, message: ModelVersion) -> None:
        """Queue a version message (raises a failure of an earlier one first)."""
        self.check()
        self.producer.produce(
            self.topic,
            message.model_dump_json().encode(),
            message.model_name.encode(),
            on_delivery=self._delivered,
        )
        self.producer.poll(0)

    def check(self) -> None:
        """Serve delivery reports; raise ``ArtifactError`` if a version message was refused."""
        self.producer.poll(0)
        if self.failure is not None:
            raise ArtifactError(
                f"the broker refused a model version message ({self.failure}); versions after "
                "it are not announced: restart the service, it resumes from the last announced"
            )

    def close(self, timeout_s: float = 30.0) -> None:
        """Wait until every version message is acknowledged (``ArtifactError`` if one is not)."""
        if self.producer.flush(timeout_s):
            raise ArtifactError("the broker did not acknowledge the model version message")
        self.check()


def find(history: list[ModelVersion], model_name: str, version: int) -> ModelVersion:
    """One version from the history, or ArtifactError naming what exists."""
    known = [v for v in history if v.model_name == model_name]
    for candidate in known:
        if candidate.version == version:
            return candidate
    raise ArtifactError(
        f"no version {version} of model {model_name!r} (known: {[v.version for v in known]})"
    )


def ancestry(history: list[ModelVersion], model_name: str, version: int) -> list[int]:
    """The chain of parents of a version, itself first: [7, 6, 2, 1]."""
    by_number = {v.version: v for v in history if v.model_name == model_name}
    chain: list[int] = []
    current: int | None = version
    while current is not None and current in by_number and current not in chain:
        chain.append(current)
        current = by_number[current].parent_version
    return chain


def reannounce(settings: Settings, target: ModelVersion, trigger: Trigger) -> ModelVersion:
    """Serve an existing version again, as a new version number (promote or rollback).

    Serving follows the newest version message, so this makes ``target``'s artifact the
    champion. The artifact is verified first: a version that would be refused is not announced.
    """
    keys = Keyring.of(settings)
    load_verified(target, keys, artifact_store(settings))
    history = [v for v in read_versions(settings) if v.model_name == target.model_name]
    message = target.model_copy(
        update={
            "version": max((v.version for v in history), default=0) + 1,
            "trigger": trigger,
            "parent_version": target.version,
            "drift_event_id": None,
            "lineage": [],
            "description": f"{trigger} to v{target.version}",
            "created_at": datetime.now(UTC),
        }
    )
    message = signed(message, keys)
    announce(settings, message)
    return message
