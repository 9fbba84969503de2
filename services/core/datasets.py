"""Streams of (features, label): River's bundled real datasets and drifting synthetic ones.

Every stream the loop can play (``eddy demo``, the benchmarks) has a name in ``LOOP_STREAMS``
and a feature schema of the same name in ``infra/features/``. The synthetic ones switch from
one concept to another at a known event, abruptly or gradually; the bundled ones have no
known drift.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any

from schemas.base import Features, Target

Row = tuple[Features, Target]

#: Bundled datasets (no download): name → (River class, feature schema name).
BUNDLED = {
    "phishing": ("Phishing", "phishing"),
    "bananas": ("Bananas", "bananas"),
    "segments": ("ImageSegments", "segments"),
    "trump": ("TrumpApproval", "trump"),
}

#: Agrawal's concepts before and after the drift (River numbers them 0-9). Function 4 puts an
#: applicant in group A by age-dependent bands of salary and loan (most are in group B);
#: function 6 when disposable income (two thirds of salary plus commission, less a fifth of
#: the loan) is small. The default linear model learns them to about 81% and 92% prequential
#: accuracy, and the first one's model gets about 47% on the second, so the drift raises the
#: error rate sharply (as concept drift detectors watch for) and the new concept is learnable.
AGRAWAL_BEFORE, AGRAWAL_AFTER = 4, 6

#: Streams the loop can play, each with a feature schema of the same name in infra/features/:
#: binary (SEA, Agrawal, Phishing, Bananas), multi-class (LED, ImageSegments) and regression
#: (Friedman, TrumpApproval); the synthetic ones drift where asked.
LOOP_STREAMS = ("sea", "agrawal", "led", "friedman", *BUNDLED)
#: Those with classes, which ``eddy demo`` plays (its summary is in accuracy).
CLASSIFICATION_STREAMS = ("sea", "agrawal", "led", "phishing", "bananas", "segments")
#: The bundled binary datasets, which ``eddy models publish`` warms its logistic model on.
BINARY_DATASETS = ("bananas", "phishing")


def rows_available(name: str) -> int | None:
    """How many rows a stream in ``LOOP_STREAMS`` has (None: a generator without end)."""
    if name not in BUNDLED:
        return None
    from river import datasets

    return int(getattr(datasets, BUNDLED[name][0])().n_samples)


def stream(name: str) -> Iterator[Row]:
    """The rows of a bundled River dataset, in order."""
    from river import datasets

    if name not in BUNDLED:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(BUNDLED)}")
    dataset = getattr(datasets, BUNDLED[name][0])()
    for features, label in dataset:
        yield dict(features), label


def new_concept_share(i: int, drift_at: int | None, drift_width: int) -> float:
    """The probability that event ``i`` follows the new concept.

    0 before ``drift_at``; then 1 at once (``drift_width`` 0: abrupt), or rising linearly to 1
    over ``drift_width`` events (gradual).

    >>> [new_concept_share(i, 10, 4) for i in (9, 10, 12, 14)]
    [0.0, 0.25, 0.75, 1.0]
    >>> new_concept_share(10, 10, 0), new_concept_share(10, None, 0)
    (1.0, 0.0)
    """
    if drift_at is None or i < drift_at:
        return 0.0
    if drift_width <= 0:
        return 1.0
    return min(1.0, (i - drift_at + 1) / drift_width)


def drifting(
    before: Iterable[Row],
    after: Iterable[Row],
    count: int,
    drift_at: int | None,
    drift_width: int = 0,
    seed: int = 42,
) -> Iterator[Row]:
    """``count`` rows, each from ``after`` with ``new_concept_share`` of its index, else ``before``.

    Each source is read in order, so an abrupt drift is the first ``drift_at`` rows of
    ``before`` followed by the first rows of ``after``.
    """
    old, new = iter(before), iter(after)
    coin = random.Random(seed)
    for i in range(count):
        share = new_concept_share(i, drift_at, drift_width)
        yield next(new) if share >= 1.0 or (share > 0.0 and coin.random() < share) else next(old)


def sea_with_drift(
    count: int, drift_at: int | None, seed: int = 42, drift_width: int = 0
) -> Iterator[Row]:
    """River's SEA stream, with a concept drift at ``drift_at`` (None: stationary).

    Before the drift the label is ``x0 + x1 <= 7`` (variant 2), after it ``<= 9.5`` (variant
    3): about a fifth of the input space changes class. ``drift_width`` > 0 makes it gradual.
    """
    from river.datasets import synth

    before = synth.SEA(variant=2, seed=seed)
    after = synth.SEA(variant=3, seed=seed + 1)
    for x, y in drifting(before, after, count, drift_at, drift_width, seed):
        yield {f"x{k}": float(v) for k, v in x.items()}, bool(y)


def agrawal_with_drift(
    count: int, drift_at: int | None, seed: int = 42, drift_width: int = 0
) -> Iterator[Row]:
    """River's Agrawal loan stream, from ``AGRAWAL_BEFORE`` to ``AGRAWAL_AFTER`` at ``drift_at``.

    Nine applicant features (salary, commission, age, education level, car make, zip code,
    house value, years owned, loan); the label is whether the applicant is in group A. The
    features keep their distribution; only the concept changes.
    """
    from river.datasets import synth

    before = synth.Agrawal(classification_function=AGRAWAL_BEFORE, seed=seed)
    after = synth.Agrawal(classification_function=AGRAWAL_AFTER, seed=seed + 1)
    for x, y in drifting(before, after, count, drift_at, drift_width, seed):
        yield dict(x), bool(y)


def led_with_drift(
    count: int, drift_at: int | None, seed: int = 42, drift_width: int = 0
) -> Iterator[Row]:
    """River's LED digits (10% noise, 17 irrelevant attributes), drifting at ``drift_at``.

    After the drift, seven attributes swap roles (River's ``n_drift_features``): the segments
    a model learned to read are no longer where it reads them.
    """
    from river.datasets import synth

    before = synth.LEDDrift(seed=seed, noise_percentage=0.1, irrelevant_features=True)
    after = synth.LEDDrift(
        seed=seed + 1, noise_percentage=0.1, irrelevant_features=True, n_drift_features=7
    )
    for x, y in drifting(before, after, count, drift_at, drift_width, seed):
        yield {f"x{k}": int(v) for k, v in x.items()}, int(y)


def friedman_with_drift(
    count: int, drift_at: int | None, seed: int = 42, drift_width: int = 0
) -> Iterator[Row]:
    """River's Friedman #1 regression, whose function changes at ``drift_at`` (None: never).

    The drift is River's global recurring abrupt one (``gra``), placed at ``drift_at`` and not
    recurring within the stream; ``drift_width`` > 0 mixes the two concepts over that many
    events as the other streams do.
    """
    from river.datasets import synth

    far = 10**9
    before = synth.FriedmanDrift(drift_type="gra", position=(far, far + 1), seed=seed)
    after = synth.FriedmanDrift(drift_type="gra", position=(0, far), seed=seed)
    for x, y in drifting(before, after, count, drift_at, drift_width, seed):
        yield {f"x{k}": float(v) for k, v in x.items()}, float(y)


def loop_stream(
    name: str, count: int, drift_at: int | None = None, drift_width: int = 0, seed: int = 42
) -> list[Row]:
    """The first ``count`` rows of a stream in ``LOOP_STREAMS``, drifting as asked if synthetic."""
    if name == "sea":
        return list(sea_with_drift(count, drift_at, seed, drift_width))
    if name == "agrawal":
        return list(agrawal_with_drift(count, drift_at, seed, drift_width))
    if name == "led":
        return list(led_with_drift(count, drift_at, seed, drift_width))
    if name == "friedman":
        return list(friedman_with_drift(count, drift_at, seed, drift_width))
    if name not in BUNDLED:
        raise ValueError(f"unknown stream {name!r}; choose one of {', '.join(LOOP_STREAMS)}")
    if drift_at is not None:
        raise ValueError(f"{name} is a real dataset without a known drift: set no drift for it")
    rows = list(islice(stream(name), count))
    if len(rows) < count:
        raise ValueError(f"{name} has {len(rows)} rows, fewer than the {count} asked for")
    return rows


def default_classifier() -> Any:
    """Eddy's default model: scaled logistic regression, a sound online baseline."""
    from river import linear_model, preprocessing

    return preprocessing.StandardScaler() | linear_model.LogisticRegression()
