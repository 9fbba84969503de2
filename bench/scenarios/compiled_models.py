"""Compiled models: serving's prediction step, compiled and batched, against River's own.

Each model learns the first 1,000 rows of Phishing (the forest and the tree with River's
defaults, the forest with 10 trees), then predicts rows 750-1,250 again and again, in this
process: River's ``predict_proba_one`` one row at a time, and the ONNX graph it compiles to
through serving's ``OnnxPredictor.predict_many`` on batches of 500 (building the matrix from
the rows and the answers' dictionaries included). The answers are checked equal (within
``TOLERANCE``) before anything is timed.
"""

from __future__ import annotations

import itertools
import math
import statistics
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from bench.harness import Context, Figure, median_figure
from services.core.datasets import default_classifier, stream
from services.core.onnx_compile import TOLERANCE, compile_model
from services.serving.model import OnnxPredictor, RiverPredictor

SCENARIO = "compiled models"
BATCH = 500


def _models() -> list[tuple[str, Callable[[], Any], str]]:
    from river import forest, tree

    return [
        ("adaptive random forest, 10 trees", lambda: forest.ARFClassifier(n_models=10, seed=1),
         ">= 5x"),
        ("Hoeffding tree", tree.HoeffdingTreeClassifier, ""),
        ("scaled logistic regression", default_classifier, ""),
    ]  # fmt: skip


def _each(river: RiverPredictor, rows: list[dict[str, Any]]) -> object:
    return [river.predict(row) for row in rows]


def _rate(run: Callable[[], object], rows: int, repeats: int = 9) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return rows / statistics.median(times)


def run(ctx: Context) -> list[Figure]:
    """Rows/s of each compiled model on batches against River row by row."""
    data = list(itertools.islice(stream("phishing"), 1250))
    names = sorted(data[0][0])
    rows = [features for features, _ in data[750:1250]][:BATCH]
    figures = []
    for label, make, target in _models():
        model = make()
        for features, y in data[:1000]:
            model.learn_one(features, y)
        graph, classes = compile_model(model, names)
        onnx = OnnxPredictor(graph, names, classes, missing=math.nan)
        river = RiverPredictor(model)
        for row, (_, proba) in zip(rows, onnx.predict_many(rows), strict=True):
            expected = river.predict(row)[1] or {}
            assert proba is not None and max(abs(proba[k] - expected[k]) for k in proba) <= (
                TOLERANCE
            ), f"{label}: the compiled graph does not answer as River"
        compiled_runs, river_runs = [], []
        for _ in range(ctx.repeats):
            river_runs.append(_rate(partial(_each, river, rows), len(rows)))
            compiled_runs.append(_rate(partial(onnx.predict_many, rows), len(rows)))
        ctx.progress(
            f"   {label}: River {statistics.median(river_runs):,.0f} rows/s, compiled "
            f"{statistics.median(compiled_runs):,.0f} rows/s"
        )
        figures.append(
            median_figure(
                SCENARIO,
                f"{label}: compiled, batches of {BATCH}, vs River predict_proba_one",
                "rows/s",
                compiled_runs,
                river_runs,
                target=target,
                met=(lambda v, b: b is not None and v >= 5 * b) if target else None,
            )
        )
    return figures
