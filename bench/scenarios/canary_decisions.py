"""Canary decisions: events until a canary decides, and how often it promotes no better.

Simulated in process through monitoring's own judge (``services.monitoring.canary``) with the
default settings: entities fall on the canary by serving's hash at the ramp's shares (10%, then
25% and 50%), every event is labelled, and the judge sees the labelled examples in batches of
20, as monitoring does. The champion is right 80% of the time; the challenger 85% (5 points
better), 75% (worse) or 80% (identical: an A/A canary). The baseline for the false-promotion
rate is what a fixed-horizon two-sample z-test at 5% gives when it is checked at every batch of
the same canaries, as a naive canary would do.
"""

from __future__ import annotations

import math
import random
import statistics
from datetime import UTC, datetime

from pydantic import SecretStr

from bench.harness import Context, Figure, median_figure
from schemas import Deployment, TrainingExample
from services.core import deployments
from services.core.settings import Settings
from services.core.signing import Keyring
from services.core.topics import Topics
from services.monitoring.canary import CanaryJudge

SCENARIO = "canary decisions"
CHAMPION_ACCURACY = 0.80
BATCH = 20
NOW = datetime.now(UTC)


def canary(challenger_accuracy: float, seed: int, settings: Settings) -> tuple[str, int, bool]:
    """(decision, events until it, whether a naive z-test said "better" on the way)."""
    keys = Keyring.of(settings)
    start = deployments.change(
        None,
        keys,
        model_name=settings.model_name,
        action="canary",
        mode="canary",
        champion_version=1,
        challenger_version=2,
        share=0.10,
        steps=[0.25, 0.50],
        decided_by="person",
    )
    judge = CanaryJudge(settings, Topics(""), "binary", start)
    rng = random.Random(seed)
    naive_promoted = False
    wrong = {1: 0, 2: 0}
    seen = {1: 0, 2: 0}
    events = 0
    while True:
        d: Deployment | None = judge.deployment
        assert d is not None
        if d.mode == "none":
            decision = "end" if d.action == "end" else d.action
            return decision, events, naive_promoted
        batch = []
        for _ in range(BATCH):
            events += 1
            entity = f"entity-{rng.randrange(100_000)}"
            version = 2 if deployments.bucket(entity) < d.share else 1
            accuracy = challenger_accuracy if version == 2 else CHAMPION_ACCURACY
            right = rng.random() < accuracy
            batch.append(
                TrainingExample.model_construct(
                    event_id=f"e{events}",
                    entity_id=entity,
                    ts=NOW,
                    features={},
                    label=True,
                    prediction=right,
                    model_version=version,
                )
            )
            seen[version] += 1
            wrong[version] += not right
        judge.on_examples(batch)
        naive_promoted = naive_promoted or _z_test_better(seen, wrong)


def _z_test_better(seen: dict[int, int], wrong: dict[int, int]) -> bool:
    """A fixed-horizon two-sample z-test at 5% (two-sided) finding the challenger better."""
    if min(seen.values()) < 30:
        return False
    p1, p2 = wrong[1] / seen[1], wrong[2] / seen[2]
    pooled = (wrong[1] + wrong[2]) / (seen[1] + seen[2])
    se = math.sqrt(pooled * (1 - pooled) * (1 / seen[1] + 1 / seen[2]))
    return se > 0 and (p1 - p2) / se > 1.96


def run(ctx: Context) -> list[Figure]:
    """Events to a decision for a better and a worse challenger; the A/A false-promotion rate."""
    settings = Settings(signing_key=SecretStr("bench-canary-key"))
    runs = 20 if ctx.quick else 100
    aa_runs = 50 if ctx.quick else 400
    figures: list[Figure] = []
    for label, accuracy, expected in (("5 points better", 0.85, "promote"),
                                      ("5 points worse", 0.75, "rollback")):  # fmt: skip
        outcomes = [canary(accuracy, seed, settings) for seed in range(runs)]
        right = [n for decision, n, _ in outcomes if decision == expected]
        ctx.progress(
            f"   {label}: {len(right)}/{runs} ended in {expected}, median "
            f"{statistics.median(right):,.0f} "
            f"events; others: {sorted({d for d, _, _ in outcomes} - {expected})}"
        )
        figures.append(
            median_figure(
                SCENARIO,
                f"events from canary start to {expected}, challenger {label} (80% champion)",
                "events",
                [float(n) for n in right],
                note=f"{len(right)} of {runs} canaries ended in {expected}",
            )
        )
    aa = [canary(CHAMPION_ACCURACY, 10_000 + seed, settings) for seed in range(aa_runs)]
    promoted = sum(decision == "promote" for decision, _, _ in aa) / aa_runs
    naive = sum(flag for _, _, flag in aa) / aa_runs
    ctx.progress(
        f"   A/A: {promoted:.1%} promoted (a z-test checked at every batch: {naive:.1%}); "
        f"outcomes {sorted({d for d, _, _ in aa})}"
    )
    figures.append(
        Figure(
            SCENARIO,
            f"false-promotion rate over {aa_runs} A/A canaries (identical challenger)",
            promoted,
            "share",
            baseline=naive,
            target="<= 0.05",
            met=promoted <= 0.05,
            runs=[promoted],
            note="baseline: a fixed-horizon z-test at 5% checked at every batch of the same "
            "canaries",
        )
    )
    return figures
