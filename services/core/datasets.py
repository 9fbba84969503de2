"""Streams of (features, label): River's bundled real datasets and drifting synthetic ones."""

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


def sea_with_drift(
    count: int, drift_at: int | None, seed: int = 42
) -> Iterator[tuple[Features, Target]]:
    """River's SEA stream, with an abrupt concept drift at ``drift_at`` (None: stationary).

    Before the drift the label is ``x0 + x1 <= 7`` (variant 2), after it ``<= 9.5`` (variant
    3): about a fifth of the input space changes class.
    """
    from itertools import islice

    from river.datasets import synth

    before = synth.SEA(variant=2, seed=seed)
    after = synth.SEA(variant=3, seed=seed + 1)
    pivot = count if drift_at is None else drift_at
    rows = [*islice(before, pivot), *islice(after, count - pivot)]
    for x, y in rows:
        yield {f"x{k}": float(v) for k, v in x.items()}, bool(y)


def default_classifier() -> Any:
    """Eddy's default model: scaled logistic regression, a sound online baseline."""
    from river import linear_model, preprocessing

    return preprocessing.StandardScaler() | linear_model.LogisticRegression()
