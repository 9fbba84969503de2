"""A user's own ONNX graph, made by skl2onnx from a scikit-learn model, imported and served."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from eddy.cli import main
from schemas import Prediction
from services.core import registry
from services.core.datasets import stream
from services.core.settings import Settings
from services.core.supervisor import service_env
from tests.integration.support import OpenReader, StartService, feature_events, produce_features

ROWS = list(itertools.islice(stream("phishing"), 600))
NAMES = list(ROWS[0][0])


def sklearn_graph(path: Path, columns: list[str]) -> tuple[Path, object]:
    """A scikit-learn logistic regression on ``columns`` of Phishing, converted by skl2onnx."""
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    x = np.array([[row[n] for n in columns] for row, _ in ROWS], np.float32)
    y = np.array([label for _, label in ROWS])
    model = LogisticRegression(max_iter=500).fit(x, y)
    graph = to_onnx(model, x[:1], options={"zipmap": False})
    path.write_bytes(graph.SerializeToString())
    return path, model


def eddy(settings: Settings, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), env=service_env(settings))
    return result.exit_code, result.output


def test_an_imported_sklearn_graph_is_served_with_sklearns_answers(
    settings: Settings, start_service: StartService, reader: OpenReader, tmp_path: Path
) -> None:
    path, model = sklearn_graph(tmp_path / "model.onnx", NAMES)

    code, output = eddy(settings, "models", "import", str(path), "--features", ",".join(NAMES))
    assert code == 0, output
    start_service("serving")
    events = feature_events(40, start=600)
    produce_features(settings, events)

    out = reader("predictions", Prediction).read_until(lambda items: len(items) >= 40)
    by_id = {p.event_id: p for p in out}  # type: ignore[attr-defined]
    x = np.array([[e.features[n] for n in NAMES] for e in events], np.float32)
    expected = model.predict_proba(x)  # type: ignore[attr-defined]
    for event, proba in zip(events, expected, strict=True):
        served = by_id[event.event_id]
        assert served.probabilities is not None
        assert served.probabilities["True"] == pytest.approx(proba[1], abs=1e-5)
        assert served.prediction == bool(proba[1] > proba[0])


def test_a_graph_on_other_features_is_refused_by_import_and_by_serving(
    settings: Settings, start_service: StartService, tmp_path: Path
) -> None:
    path, _ = sklearn_graph(tmp_path / "narrow.onnx", NAMES[:3])

    code, output = eddy(settings, "models", "import", str(path), "--features", ",".join(NAMES[:3]))
    assert code != 0 and "missing" in output and NAMES[4] in output
    code, output = eddy(settings, "models", "import", str(path), "--features", ",".join(NAMES))
    assert code != 0 and f"the graph takes 3 features; the version names {len(NAMES)}" in output
    code, output = eddy(
        settings, "models", "import", str(path), "--features", ",".join(NAMES), "--classes", "UP"
    )
    assert code != 0 and "--classes" in output


def test_serving_refuses_a_published_graph_whose_width_does_not_match(
    settings: Settings, start_service: StartService, tmp_path: Path
) -> None:
    path, _ = sklearn_graph(tmp_path / "narrow.onnx", NAMES[:3])
    registry.publish(  # bypassing the import checks, as a writer to the registry could
        settings,
        settings.model_name,
        path.read_bytes(),
        flavour="onnx",
        feature_names=NAMES,
        classes=[False, True],
    )

    serving = start_service("serving")

    log = ""
    for _ in range(100):
        log = serving.log_path.read_text(errors="replace")
        if "model version refused" in log:
            break
        time.sleep(0.2)
    assert "the graph takes 3 features" in log
    assert serving.running
