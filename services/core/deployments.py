"""What serves a model: its champion and a challenger beside it, from versions and deployments.

One place for the rules serving applies and the CLI and monitoring reason with. Without any
deployment record, the champion is the newest version not held back (training's versions are
served as they come). A deployment record pins the champion (or, with ``follow``, serves newer
versions from it on) and may run a challenger in shadow or on a sticky canary share of
entities. Records are signed like version records and numbered (``seq``): an old one sent
again changes nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from schemas import Deployment, ModelVersion
from schemas.models import DeploymentMode
from services.core.exceptions import ArtifactError
from services.core.kafka import make_producer
from services.core.registry import read_history
from services.core.settings import Settings
from services.core.signing import Keyring
from services.core.topics import Topics


@dataclass(frozen=True)
class Plan:
    """The version numbers that should serve a model now."""

    champion: int | None
    challenger: int | None = None
    mode: DeploymentMode = "none"
    share: float = 0.0


def plan(versions: Iterable[ModelVersion], deployment: Deployment | None) -> Plan:
    """What should serve, given the model's version records and its newest deployment."""
    served = [v.version for v in versions if not v.hold]
    newest = max(served, default=None)
    if deployment is None:
        return Plan(newest)
    champion = deployment.champion_version
    if deployment.follow and newest is not None:
        champion = max(champion, newest)
    return Plan(champion, deployment.challenger_version, deployment.mode, deployment.share)


def bucket(entity_id: str) -> float:
    """Where an entity falls in [0, 1): a canary at share s answers the entities below s.

    A hash, so every serving instance puts an entity in the same place and, as the share
    ramps up, an entity on the canary stays on it.
    """
    digest = hashlib.blake2b(entity_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _signed_fields(deployment: Deployment) -> dict[str, object]:
    return deployment.model_dump(mode="json", exclude={"key_id", "signature"})


def signed(deployment: Deployment, keys: Keyring) -> Deployment:
    """``deployment`` with its key id and the signature of every other field."""
    key_id, signature = keys.sign(_signed_fields(deployment))
    return deployment.model_copy(update={"key_id": key_id, "signature": signature})


def verify(deployment: Deployment, keys: Keyring) -> None:
    """Raise ArtifactError unless the whole record is signed by a key ``keys`` accepts."""
    keys.verify(
        _signed_fields(deployment),
        deployment.key_id,
        deployment.signature,
        f"deployment {deployment.seq} of {deployment.model_name}",
    )


def read_deployments(settings: Settings, model_name: str) -> list[Deployment]:
    """The model's deployment records, oldest first."""
    records = read_history(settings, "deployments", Deployment)
    return [d for d in records if d.model_name == model_name]


def latest(records: Iterable[Deployment]) -> Deployment | None:
    """The record in force: the highest ``seq``."""
    return max(records, key=lambda d: d.seq, default=None)


def change(previous: Deployment | None, keys: Keyring, **fields: object) -> Deployment:
    """The next signed record after ``previous``: its fields, changed by ``fields``."""
    base: dict[str, object] = (
        previous.model_dump(exclude={"key_id", "signature", "created_at", "figures", "reason"})
        if previous is not None
        else {}
    )
    base.update(fields)
    base["seq"] = (previous.seq if previous is not None else 0) + 1
    unsigned = Deployment.model_validate(
        {**base, "key_id": "hmac:0000000000000000", "signature": "0" * 64}
    )
    return signed(unsigned, keys)


def announce(settings: Settings, deployment: Deployment) -> None:
    """Put a deployment record on its topic and wait for the broker's acknowledgement."""
    producer = make_producer(settings)
    producer.produce(
        Topics(settings.topic_prefix)("deployments"),
        deployment.model_dump_json().encode(),
        deployment.model_name.encode(),
    )
    if producer.flush(30):
        raise ArtifactError("the broker did not acknowledge the deployment record")
