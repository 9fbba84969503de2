"""Topic declarations, read once from ``infra/topics.toml``, and their creation on the broker."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

from services.core.exceptions import ConfigurationError

TopicRole = Literal[
    "raw",
    "features",
    "dlq",
    "predictions",
    "prediction_requests",
    "prediction_replies",
    "models",
    "deployments",
    "shadow_predictions",
    "labels",
    "training_examples",
    "labeling_tasks",
    "drift",
    "alerts",
]


def infra_path(*parts: str) -> Path:
    """A file under ``infra/``: the source tree's in development, the packaged copy otherwise."""
    source_tree = Path(__file__).resolve().parents[2] / "infra"
    base = source_tree if source_tree.is_dir() else Path(__file__).resolve().parent / "_infra"
    return base.joinpath(*parts)


@dataclass(frozen=True)
class TopicSpec:
    """One declared topic."""

    role: TopicRole
    name: str
    partitions: int
    payload: str
    config: dict[str, str]


@cache
def declared_topics() -> dict[TopicRole, TopicSpec]:
    """Every topic in ``infra/topics.toml``, by role."""
    path = infra_path("topics.toml")
    with open(path, "rb") as file:
        table = tomllib.load(file)["topics"]
    specs: dict[TopicRole, TopicSpec] = {}
    for role, entry in table.items():
        specs[role] = TopicSpec(
            role=role,
            name=entry["name"],
            partitions=int(entry["partitions"]),
            payload=entry["payload"],
            config={key: str(value) for key, value in entry.get("config", {}).items()},
        )
    return specs


@dataclass(frozen=True)
class Topics:
    """Resolves a role to its topic name on the broker, with the configured prefix."""

    prefix: str = ""

    def __call__(self, role: TopicRole) -> str:
        """The broker topic name of ``role``."""
        try:
            return self.prefix + declared_topics()[role].name
        except KeyError:
            raise ConfigurationError(
                f"topic role {role!r} is not declared in infra/topics.toml"
            ) from None

    def group(self, service: str) -> str:
        """The consumer group of a service."""
        return f"{self.prefix}eddy-{service}"

    def all(self) -> list[tuple[str, TopicSpec]]:
        """Every declared topic as (broker name, spec)."""
        return [(self.prefix + spec.name, spec) for spec in declared_topics().values()]
