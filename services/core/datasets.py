"""Real datasets that ship with River, as streams of (features, label), and Eddy's default model."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from schemas.base import Features, Target

#: Bundled datasets (no download): name → (River class, feature schema name).
BUNDLED = {"phishing": ("Phishing", "phishing")}


def stream(name: str) -> Iterator[tuple[Features, Target]]:
    """The rows of a bundled River dataset, in order."""
    from river import datasets

    if name not in BUNDLED:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(BUNDLED)}")
    dataset = getattr(datasets, BUNDLED[name][0])()
    for features, label in dataset:
        yield dict(features), label


def default_classifier() -> Any:
    """Eddy's default model: scaled logistic regression, a sound online baseline."""
    from river import linear_model, preprocessing

    return preprocessing.StandardScaler() | linear_model.LogisticRegression()
