"""What serves a model, from its versions and its newest deployment record."""

from __future__ import annotations

from typing import Any

import pytest

from schemas import Deployment, ModelVersion
from services.core import deployments
from services.core.exceptions import ArtifactError
from services.core.signing import Keyring

KEYS = Keyring(hmac_key=b"deployments-test-key")


def version(number: int, hold: bool = False) -> ModelVersion:
    return ModelVersion(
        model_name="m",
        version=number,
        flavour="river",
        artifact_uri=f"file:///registry/m/v{number}.bin",
        sha256="0" * 64,
        key_id="hmac:0000000000000000",
        signature="0" * 64,
        trigger="scheduled",
        hold=hold,
    )


def record(previous: Deployment | None = None, **fields: Any) -> Deployment:
    base: dict[str, Any] = {"model_name": "m", "action": "serve", "decided_by": "person"}
    return deployments.change(previous, KEYS, **{**base, **fields})


def test_without_a_deployment_the_newest_version_not_held_serves() -> None:
    plan = deployments.plan([version(1), version(2), version(3, hold=True)], None)

    assert (plan.champion, plan.challenger, plan.mode) == (2, None, "none")


def test_a_deployment_pins_its_champion_unless_it_follows() -> None:
    history = [version(1), version(2), version(3)]
    pinned = record(champion_version=1)
    following = record(pinned, champion_version=1, follow=True)

    assert deployments.plan(history, pinned).champion == 1
    assert deployments.plan(history, following).champion == 3


def test_a_canary_names_its_challenger_and_share() -> None:
    canary = record(
        action="canary",
        champion_version=1,
        mode="canary",
        challenger_version=2,
        share=0.1,
        steps=[0.5],
    )

    plan = deployments.plan([version(1), version(2, hold=True)], canary)

    assert (plan.champion, plan.challenger, plan.mode, plan.share) == (1, 2, "canary", 0.1)


def test_each_change_is_numbered_one_above_the_last_and_signed() -> None:
    first = record(champion_version=1)
    second = record(first, champion_version=2)

    assert (first.seq, second.seq) == (1, 2)
    deployments.verify(second, KEYS)
    with pytest.raises(ArtifactError):
        deployments.verify(second.model_copy(update={"champion_version": 1}), KEYS)
    with pytest.raises(ArtifactError):
        deployments.verify(second, Keyring(hmac_key=b"another key"))


def test_a_shadow_or_canary_must_name_its_challenger() -> None:
    with pytest.raises(ValueError, match="challenger_version"):
        record(action="shadow", champion_version=1, mode="shadow")
    with pytest.raises(ValueError, match="for a canary"):
        record(action="shadow", champion_version=1, mode="shadow", challenger_version=2, share=0.5)


def test_buckets_are_stable_spread_and_nested_as_the_share_grows() -> None:
    entities = [f"user-{i}" for i in range(10_000)]
    buckets = [deployments.bucket(e) for e in entities]

    assert buckets == [deployments.bucket(e) for e in entities]
    assert 0.08 < sum(b < 0.1 for b in buckets) / len(buckets) < 0.12
    on_10 = {e for e, b in zip(entities, buckets, strict=True) if b < 0.1}
    on_25 = {e for e, b in zip(entities, buckets, strict=True) if b < 0.25}
    assert on_10 < on_25
